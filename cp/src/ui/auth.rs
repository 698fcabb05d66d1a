//! Signing in to the status page, signing out, and who is looking.
//!
//! - `POST /ui/login` takes an Admin API token (`token`) or a user's `username` and
//!   `password`, checked by the same calls as the Admin API's bearer and Basic checks
//!   ([`crate::principals::Principals::check_api_token`], `authenticate`, whose failures are
//!   throttled per user and per address). Failed token sign-ins count against the address
//!   in the same throttle ([`crate::principals::Principals::source_failed`]). Success sets the session cookie
//!   ([`super::session`]) and redirects to `/ui`.
//! - `POST /ui/logout` clears the cookie.
//! - Both refuse a request whose `Origin` (or, without one, `Referer`) names another host than
//!   the one asked: with `SameSite=Strict`, no other site can sign someone in or out.
//! - [`viewer`] opens the cookie and looks the principal up again on every request: a revoked
//!   or expired token, a deleted user or a changed password ends the session at once, on every
//!   node.
//!
//! Sign-ins and sign-outs go to the audit trail (`POST /ui/login`, `POST /ui/logout`) and the
//! log (`ui.signed_in`, `auth.failed` with `principal = "ui"`); no secret is ever logged.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{HOST, LOCATION, ORIGIN, REFERER, RETRY_AFTER, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use licsync_common::unix_now;

use super::pages::login;
use super::session::{self, Session, Subject};
use crate::admin::form;
use crate::model::Role;
use crate::principals::{Credential, Principal, Refusal, TokenCheck};
use crate::secrets;
use crate::state::ControlPlane;
use crate::store::StoreResult;

/// Largest sign-in form accepted, in bytes.
pub const MAX_FORM_BYTES: usize = 8 * 1024;

/// Who is signed in, as checked for this request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    /// `token 'ops'` or `user 'alice'`.
    pub name: String,
    pub role: Role,
}

/// Whether the admin listener's answers reach the browser over TLS: its own, or a proxy's
/// that says so (`X-Forwarded-Proto: https`). Decides the cookie's `Secure` attribute.
pub fn secure(cp: &ControlPlane, headers: &HeaderMap) -> bool {
    cp.config().admin.tls_cert_file.is_some()
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// The signed-in viewer `headers` carry a session for, checked against storage as of `now`;
/// `None` without a valid session.
pub async fn viewer(
    cp: &ControlPlane,
    headers: &HeaderMap,
    now: i64,
) -> StoreResult<Option<Viewer>> {
    let Some(key) = cp.session_key() else {
        return Ok(None);
    };
    let cookies = headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let Some(value) = session::cookie_value(cookies) else {
        return Ok(None);
    };
    let Ok(session) = Session::open(value, key, now) else {
        return Ok(None);
    };
    match &session.subject {
        Subject::Token(id) => {
            let tokens = cp.principals().api_tokens().await?;
            Ok(tokens
                .into_iter()
                .find(|t| t.id == *id)
                .filter(|t| !t.is_expired(now))
                .filter(|t| session::binding(&t.token_hash) == session.binding)
                .map(|t| Viewer {
                    name: format!("token '{}'", t.name),
                    role: t.role,
                }))
        }
        Subject::User(username) => {
            let user = cp.principals().user(username).await?;
            Ok(user
                .filter(|u| session::binding(&u.password_hash) == session.binding)
                .map(|u| Viewer {
                    name: format!("user '{}'", u.username),
                    role: u.role,
                }))
        }
    }
}

/// Whether `headers` show the request comes from a page of this same host: its `Origin`, or
/// without one its `Referer`, names the host it was sent to. Only the host and port are
/// compared, so a proxy that terminates TLS in front of a plain listener still passes.
pub fn same_origin(headers: &HeaderMap, authority: Option<&str>) -> Result<(), &'static str> {
    let host = headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .or(authority)
        .ok_or("the request names no host")?;
    let host_of = |url: &str| -> Option<String> {
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))?;
        Some(rest.split('/').next().unwrap_or("").to_ascii_lowercase())
    };
    let sender = if let Some(origin) = headers.get(ORIGIN) {
        origin.to_str().ok().and_then(host_of)
    } else if let Some(referer) = headers.get(REFERER) {
        referer.to_str().ok().and_then(host_of)
    } else {
        return Err("the browser sent neither Origin nor Referer");
    };
    match sender {
        Some(sender) if sender == host.to_ascii_lowercase() => Ok(()),
        _ => Err("the form was sent from another site"),
    }
}

fn client_ip(request: &Request) -> IpAddr {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip())
}

/// The sign-in page again, with `status` and why.
fn refused(status: StatusCode, message: &str) -> Response {
    (status, Html(login::login(Some(message)).into_string())).into_response()
}

/// A redirect (303: the browser follows with a GET).
pub fn see_other(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, to)]).into_response()
}

/// `GET /ui/login`: the form, or `/ui` for someone already signed in.
pub async fn login_page(State(cp): State<Arc<ControlPlane>>, headers: HeaderMap) -> Response {
    match viewer(&cp, &headers, unix_now()).await {
        Ok(Some(_)) => see_other("/ui"),
        _ => Html(login::login(None).into_string()).into_response(),
    }
}

/// `POST /ui/login`.
pub async fn sign_in(State(cp): State<Arc<ControlPlane>>, request: Request) -> Response {
    let now = unix_now();
    let ip = client_ip(&request);
    let source = ip.to_string();
    let headers = request.headers().clone();
    if let Err(why) = same_origin(&headers, request.uri().authority().map(|a| a.as_str())) {
        tracing::warn!(event = "ui.csrf_refused", source = %source, reason = why, "Status page sign-in refused: not sent from the status page.");
        return refused(
            StatusCode::FORBIDDEN,
            &format!(
                "Sign-in refused: {why}. Open the sign-in page of this control plane and sign in there."
            ),
        );
    }
    let Some(key) = cp.session_key() else {
        return refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "This control plane has no session key loaded, so nobody can sign in to the status page.",
        );
    };
    let body = match axum::body::to_bytes(request.into_body(), MAX_FORM_BYTES).await {
        Ok(body) => body,
        Err(_) => {
            return refused(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("The sign-in form is larger than {MAX_FORM_BYTES} bytes."),
            );
        }
    };
    let fields = form::decode(&String::from_utf8_lossy(&body));
    let field = |name| form::value(&fields, name).unwrap_or("").to_owned();
    let (token, username, password) = (field("token"), field("username"), field("password"));
    let token = token.trim();

    let signed_in = if !token.is_empty() {
        if let Err(locked) = cp.principals().check_source(ip, now) {
            return throttled(locked.retry_after);
        }
        match cp.principals().check_api_token(token, now).await {
            Ok(TokenCheck::Valid(caller)) => (
                Subject::Token(caller.id),
                session::binding(&secrets::hash(token)),
                Viewer {
                    name: format!("token '{}'", caller.name),
                    role: caller.role,
                },
            ),
            Ok(refusal) => {
                let locked = cp.principals().source_failed(ip, now);
                let why = match refusal {
                    TokenCheck::Expired { name, .. } => {
                        format!("The token '{name}' has expired; ask an admin for a new one.")
                    }
                    _ => "Unknown or revoked Admin API token.".to_owned(),
                };
                tracing::warn!(event = "auth.failed", principal = "ui", source = %source, reason = "unknown, revoked or expired API token", "Status page sign-in refused.");
                if let Some(seconds) = locked {
                    tracing::warn!(event = "auth.locked_out", source = %source, lockout_s = seconds, "Too many failed status page sign-ins from one address: locked out.");
                }
                audit(&cp, "-", &source, "POST /ui/login", "denied (401)");
                return refused(StatusCode::UNAUTHORIZED, &why);
            }
            Err(error) => return unavailable(&error.to_string()),
        }
    } else if !username.is_empty() {
        let credential = Credential::User {
            username: username.clone(),
            password,
        };
        match cp.principals().authenticate(&credential, ip, now).await {
            Ok(Principal::User { username, role }) => {
                let user = match cp.principals().user(&username).await {
                    Ok(Some(user)) => user,
                    Ok(None) => {
                        return refused(StatusCode::UNAUTHORIZED, "Wrong username or password.");
                    }
                    Err(error) => return unavailable(&error.to_string()),
                };
                (
                    Subject::User(username.clone()),
                    session::binding(&user.password_hash),
                    Viewer {
                        name: format!("user '{username}'"),
                        role,
                    },
                )
            }
            Ok(Principal::App { .. }) => {
                return refused(StatusCode::UNAUTHORIZED, "Wrong username or password.");
            }
            Err(Refusal::Throttled(throttled_for)) => return throttled(throttled_for.retry_after),
            Err(Refusal::Unavailable(reason)) => return unavailable(&reason),
            Err(_) => {
                audit(&cp, "-", &source, "POST /ui/login", "denied (401)");
                return refused(StatusCode::UNAUTHORIZED, "Wrong username or password.");
            }
        }
    } else {
        return refused(
            StatusCode::BAD_REQUEST,
            "Enter an Admin API token, or a username and password.",
        );
    };
    let (subject, binding, who) = signed_in;
    let cookie = Session::new(subject, binding, now).seal(key);
    tracing::info!(event = "ui.signed_in", actor = %who.name, role = %who.role, source = %source, "Signed in to the status page.");
    audit(&cp, &who.name, &source, "POST /ui/login", "ok");
    let mut response = see_other("/ui");
    if let Ok(value) = HeaderValue::from_str(&session::set_cookie(&cookie, secure(&cp, &headers))) {
        response.headers_mut().insert(SET_COOKIE, value);
    }
    response
}

/// `POST /ui/logout`: clears the cookie (whether or not it was valid) and shows the sign-in
/// page.
pub async fn sign_out(State(cp): State<Arc<ControlPlane>>, request: Request) -> Response {
    let headers = request.headers();
    let source = client_ip(&request).to_string();
    if let Err(why) = same_origin(headers, request.uri().authority().map(|a| a.as_str())) {
        tracing::warn!(event = "ui.csrf_refused", source = %source, reason = why, "Status page sign-out refused: not sent from the status page.");
        return refused(StatusCode::FORBIDDEN, &format!("Sign-out refused: {why}."));
    }
    if let Ok(Some(who)) = viewer(&cp, headers, unix_now()).await {
        tracing::info!(event = "ui.signed_out", actor = %who.name, source = %source, "Signed out of the status page.");
        audit(&cp, &who.name, &source, "POST /ui/logout", "ok");
    }
    let mut response = see_other("/ui/login");
    if let Ok(value) = HeaderValue::from_str(&session::clear_cookie(secure(&cp, headers))) {
        response.headers_mut().insert(SET_COOKIE, value);
    }
    response
}

fn throttled(seconds: u64) -> Response {
    let mut response = refused(
        StatusCode::TOO_MANY_REQUESTS,
        &format!("Too many failed sign-ins; try again in {seconds} s."),
    );
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(RETRY_AFTER, value);
    }
    response
}

fn unavailable(reason: &str) -> Response {
    tracing::error!(event = "ui.request_failed", error = %reason, "Status page sign-in could not be checked.");
    refused(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("Cannot check credentials now ({reason}); try again."),
    )
}

fn audit(cp: &ControlPlane, actor: &str, source: &str, action: &str, result: &str) {
    cp.audit().record(crate::audit::Entry {
        actor: actor.to_owned(),
        source: source.to_owned(),
        action: action.to_owned(),
        resource: action.split(' ').nth(1).unwrap_or("").to_owned(),
        result: result.to_owned(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_static(value));
        }
        h
    }

    #[test]
    fn only_forms_from_this_host_pass() {
        let ok = [
            headers(&[("host", "cp:8001"), ("origin", "http://cp:8001")]),
            headers(&[("host", "cp:8001"), ("origin", "https://CP:8001")]),
            headers(&[("host", "cp:8001"), ("referer", "http://cp:8001/ui/login")]),
        ];
        for h in &ok {
            assert_eq!(same_origin(h, None), Ok(()), "{h:?}");
        }
        for h in [
            headers(&[("host", "cp:8001"), ("origin", "http://evil:8001")]),
            headers(&[("host", "cp:8001"), ("origin", "null")]),
            headers(&[("host", "cp:8001"), ("origin", "http://cp:8001.evil")]),
            headers(&[("host", "cp:8001"), ("referer", "http://evil/ui")]),
            headers(&[("host", "cp:8001")]),
            headers(&[("origin", "http://cp:8001")]),
        ] {
            assert!(same_origin(&h, None).is_err(), "{h:?}");
        }
        let h2 = headers(&[("origin", "https://cp:8001")]);
        assert_eq!(same_origin(&h2, Some("cp:8001")), Ok(()));
    }
}
