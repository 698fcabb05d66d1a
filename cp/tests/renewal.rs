//! `Registration.Renew` over real gRPC and TLS (SPEC §4, §6): a registered data plane gets a
//! fresh certificate for the same id when an admin user or a connected app with
//! `manage:servers` asks; everyone else is refused in words an operator can act on, repeated
//! failures are throttled, and no secret reaches the log. Against the whole control plane
//! (the test kit's); what the control plane records is read back through the Admin API and
//! through which certificates it still accepts.

use std::ops::Deref;

use licsync_common::pki::{CertInfo, new_key_and_csr};
use licsync_common::proto::registration_client::RegistrationClient;
use licsync_common::proto::{
    AppCredential, RegisterRequest, RegisterResponse, RenewRequest, UserCredential, renew_request,
};
use licsync_testkit::dataplane::DataPlane;
use licsync_testkit::{ControlPlane, Events, send};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;

const PASSWORD: &str = "correct horse battery staple";

async fn create_user(api: &ControlPlane, username: &str, role: &str) {
    let (status, body) = send(api.request(Method::POST, "/users").json(&json!({
        "username": username, "password": PASSWORD, "role": role
    })))
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// A connected app's client id and secret.
async fn create_app(api: &ControlPlane, scopes: &[&str]) -> (String, String) {
    let (status, body) = send(
        api.request(Method::POST, "/connected-apps")
            .json(&json!({"name": "ci", "scopes": scopes})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (
        body["client_id"].as_str().unwrap().to_owned(),
        body["client_secret"].as_str().unwrap().to_owned(),
    )
}

/// A certificate issued by `Register` or `Renew`, with the key its CSR was made from.
#[derive(Debug)]
struct Issued {
    key_pem: String,
    answer: RegisterResponse,
}

impl Deref for Issued {
    type Target = RegisterResponse;

    fn deref(&self) -> &RegisterResponse {
        &self.answer
    }
}

impl Issued {
    /// The data plane as it would be after saving this answer.
    fn dataplane(&self) -> DataPlane {
        DataPlane {
            id: self.dataplane_id.clone(),
            key_pem: self.key_pem.clone(),
            cert_pem: self.certificate_pem.clone(),
        }
    }
}

/// A Registration client over TLS that trusts the cluster CA, as a data plane given
/// `--ca-cert` would.
async fn registration_client(api: &ControlPlane) -> RegistrationClient<Channel> {
    RegistrationClient::new(api.connect(None).await)
}

/// Whether the control plane accepts `issued`'s certificate for a Sync stream.
async fn syncs(api: &ControlPlane, issued: &Issued) -> bool {
    api.sync(&issued.dataplane(), licsync_common::VERSION)
        .await
        .is_ok()
}

/// Registers a data plane with a fresh registration token, as `registration create` does.
async fn register(api: &ControlPlane, client: &mut RegistrationClient<Channel>) -> Issued {
    let (status, body) = send(
        api.request(Method::POST, "/registration-tokens")
            .json(&json!({"name": "edge"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (key_pem, csr_der) = new_key_and_csr("edge-1").unwrap();
    let answer = client
        .register(RegisterRequest {
            token: body["token"].as_str().unwrap().to_owned(),
            csr_der,
            name: "edge-1".into(),
            hostname: "edge-1.example".into(),
            version: licsync_common::VERSION.into(),
        })
        .await
        .unwrap()
        .into_inner();
    Issued { key_pem, answer }
}

fn as_user(username: &str, password: &str) -> renew_request::Credential {
    renew_request::Credential::User(UserCredential {
        username: username.into(),
        password: password.into(),
    })
}

fn as_app(client_id: &str, client_secret: &str) -> renew_request::Credential {
    renew_request::Credential::App(AppCredential {
        client_id: client_id.into(),
        client_secret: client_secret.into(),
    })
}

async fn renew(
    client: &mut RegistrationClient<Channel>,
    credential: Option<renew_request::Credential>,
    dataplane_id: &str,
) -> Result<Issued, tonic::Status> {
    let (key_pem, csr_der) = new_key_and_csr("edge-1").unwrap();
    let answer = client
        .renew(RenewRequest {
            credential,
            dataplane_id: dataplane_id.into(),
            csr_der,
        })
        .await?
        .into_inner();
    Ok(Issued { key_pem, answer })
}

/// The renewed answer is for the same data plane, with a new certificate whose serial the
/// control plane now records (the old one kept as the previous serial): both are accepted.
async fn assert_renewed(api: &ControlPlane, registered: &Issued, renewed: &Issued) {
    assert_eq!(renewed.dataplane_id, registered.dataplane_id);
    assert_eq!(renewed.dataplane_name, "edge-1");
    assert_eq!(renewed.cluster_url, api.config().cluster.cluster_url());
    assert_eq!(renewed.ca_certificate_pem, registered.ca_certificate_pem);
    assert_eq!(
        renewed.trusted_license_keys,
        vec![api.issuer.public.clone()]
    );
    let old = CertInfo::from_pem(&registered.certificate_pem).unwrap();
    let new = CertInfo::from_pem(&renewed.certificate_pem).unwrap();
    assert_eq!(
        new.dataplane_id.as_deref(),
        Some(registered.dataplane_id.as_str())
    );
    assert_ne!(new.serial, old.serial);
    // The old one first: a stream on the newest retires the previous for good.
    assert!(
        syncs(api, registered).await,
        "the old one is kept as the previous"
    );
    assert!(syncs(api, renewed).await, "the new certificate is recorded");
    let record = api.dataplane(&registered.dataplane_id).await;
    assert_eq!(record["cert_expires_at"], new.not_after.unix_timestamp());
}

#[tokio::test]
async fn an_admin_user_renews_a_dataplane_certificate() {
    let (logs, _guard) = Events::capture();
    let api = ControlPlane::start().await;
    create_user(&api, "alice", "admin").await;
    let mut client = registration_client(&api).await;
    let registered = register(&api, &mut client).await;

    let renewed = renew(
        &mut client,
        Some(as_user("alice", PASSWORD)),
        &registered.dataplane_id,
    )
    .await
    .unwrap();
    assert_renewed(&api, &registered, &renewed).await;

    // A second renewal keeps going from the newest certificate.
    let again = renew(
        &mut client,
        Some(as_user("alice", PASSWORD)),
        &registered.dataplane_id,
    )
    .await
    .unwrap();
    assert_renewed(&api, &renewed, &again).await;
    assert!(
        !syncs(&api, &registered).await,
        "the first certificate is neither the newest nor the previous any more"
    );

    let lines = logs.named("registration.renewed");
    assert_eq!(lines.len(), 2, "{}", logs.text());
    let line = lines[0].to_string();
    assert!(line.contains(&registered.dataplane_id), "{line}");
    assert!(
        line.contains("user 'alice'") && line.contains("127.0.0.1"),
        "{line}"
    );
    assert!(lines[0].field("cert_expires_at").is_some(), "{line}");
    assert!(
        !logs.text().contains(PASSWORD),
        "the password reached the log"
    );
    api.shutdown().await;
}

#[tokio::test]
async fn a_connected_app_with_manage_servers_renews_a_dataplane_certificate() {
    let (logs, _guard) = Events::capture();
    let api = ControlPlane::start().await;
    let (client_id, secret) = create_app(&api, &["manage:servers"]).await;
    let mut client = registration_client(&api).await;
    let registered = register(&api, &mut client).await;

    let renewed = renew(
        &mut client,
        Some(as_app(&client_id, &secret)),
        &registered.dataplane_id,
    )
    .await
    .unwrap();
    assert_renewed(&api, &registered, &renewed).await;
    let lines = logs.named("registration.renewed");
    assert_eq!(lines.len(), 1, "{}", logs.text());
    assert!(lines[0].to_string().contains(&client_id), "{}", lines[0]);
    assert!(
        !logs.text().contains(&secret),
        "the client secret reached the log"
    );
    api.shutdown().await;
}

#[tokio::test]
async fn renewals_are_refused_in_words_an_operator_can_act_on() {
    let (logs, _guard) = Events::capture();
    let api = ControlPlane::start().await;
    create_user(&api, "alice", "admin").await;
    create_user(&api, "victor", "viewer").await;
    let (reader_id, reader_secret) = create_app(&api, &["read:servers", "view:organization"]).await;
    let mut client = registration_client(&api).await;
    let registered = register(&api, &mut client).await;
    let before = api.dataplane(&registered.dataplane_id).await;

    let cases = [
        (
            Some(as_user("alice", "wrong password!")),
            registered.dataplane_id.clone(),
            Code::Unauthenticated,
            "wrong password for user 'alice', or no such user",
        ),
        (
            Some(as_user("mallory", PASSWORD)),
            registered.dataplane_id.clone(),
            Code::Unauthenticated,
            "wrong password for user 'mallory', or no such user",
        ),
        (
            Some(as_app(&reader_id, "lsc_not-the-secret")),
            registered.dataplane_id.clone(),
            Code::Unauthenticated,
            "wrong client secret for connected app",
        ),
        (
            Some(as_user("victor", PASSWORD)),
            registered.dataplane_id.clone(),
            Code::PermissionDenied,
            "user 'victor' may not renew data planes: its role is viewer; renewing needs a user with role admin or a connected app with scope manage:servers",
        ),
        (
            Some(as_app(&reader_id, &reader_secret)),
            registered.dataplane_id.clone(),
            Code::PermissionDenied,
            "it lacks scope manage:servers",
        ),
        (
            Some(as_user("alice", PASSWORD)),
            Uuid::new_v4().to_string(),
            Code::NotFound,
            "is not registered on this control plane",
        ),
        (
            Some(as_user("alice", PASSWORD)),
            "edge-1".to_owned(),
            Code::InvalidArgument,
            "dataplane_id 'edge-1' is not a UUID",
        ),
        (
            None,
            registered.dataplane_id.clone(),
            Code::Unauthenticated,
            "no credential: renewing needs a user (username and password) or a connected app",
        ),
        (
            Some(as_user("alice", "")),
            registered.dataplane_id.clone(),
            Code::InvalidArgument,
            "needs both a username and a password",
        ),
        (
            Some(as_user("alice", &"p".repeat(2000))),
            registered.dataplane_id.clone(),
            Code::InvalidArgument,
            "password is 2000 bytes; the limit is 1024",
        ),
    ];
    for (credential, dataplane_id, code, says) in cases {
        let status = renew(&mut client, credential, &dataplane_id)
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{says}: {}", status.message());
        assert!(
            status.message().contains(says),
            "{says}: {}",
            status.message()
        );
    }

    // A CSR that is not one is refused before anyone is authenticated.
    let status = client
        .renew(RenewRequest {
            credential: Some(as_user("alice", PASSWORD)),
            dataplane_id: registered.dataplane_id.clone(),
            csr_der: b"not a csr".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());

    assert_eq!(
        api.dataplane(&registered.dataplane_id).await,
        before,
        "a refused renewal changes nothing"
    );
    assert!(
        syncs(&api, &registered).await,
        "the registered certificate is still the one recorded"
    );
    let failed = logs.named("auth.failed");
    assert_eq!(failed.len(), 3, "{}", logs.text());
    assert!(
        failed
            .iter()
            .all(|l| l.level == tracing::Level::WARN && l.to_string().contains("127.0.0.1"))
    );
    let (first, second) = (failed[0].to_string(), failed[1].to_string());
    assert!(first.contains("user 'alice'") && first.contains("wrong_password"));
    assert!(second.contains("user 'mallory'") && second.contains("unknown_user"));
    assert!(
        !logs.text().contains("wrong password!"),
        "a password reached the log"
    );
    assert!(
        !logs.text().contains("lsc_not-the-secret"),
        "a secret reached the log"
    );
    assert!(!logs.named("registration.renew_refused").is_empty());
    api.shutdown().await;
}

#[tokio::test]
async fn a_revoked_dataplane_cannot_be_renewed() {
    let api = ControlPlane::start().await;
    create_user(&api, "alice", "admin").await;
    let mut client = registration_client(&api).await;
    let registered = register(&api, &mut client).await;
    let id: Uuid = registered.dataplane_id.parse().unwrap();
    let (status, body) =
        send(api.request(Method::DELETE, &format!("/clustering/data-planes/{id}"))).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let after_revocation = api.find_dataplane(&registered.dataplane_id).await;

    let status = renew(
        &mut client,
        Some(as_user("alice", PASSWORD)),
        &registered.dataplane_id,
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        status.message(),
        format!("data plane {id} was revoked; register it again with a new registration token")
    );
    // Nothing changed: still revoked, no certificate of it accepted.
    assert_eq!(
        api.find_dataplane(&registered.dataplane_id).await,
        after_revocation
    );
    assert!(!syncs(&api, &registered).await);
    api.shutdown().await;
}

#[tokio::test]
async fn repeated_failures_lock_a_user_out_even_with_the_right_password() {
    let (logs, _guard) = Events::capture();
    let api = ControlPlane::start().await;
    create_user(&api, "alice", "admin").await;
    create_user(&api, "bob", "admin").await;
    let mut client = registration_client(&api).await;
    let registered = register(&api, &mut client).await;

    for attempt in 0..5 {
        let status = renew(
            &mut client,
            Some(as_user("alice", &format!("guess number {attempt}"))),
            &registered.dataplane_id,
        )
        .await
        .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{}", status.message());
        assert!(
            status.message().starts_with("wrong password"),
            "{}",
            status.message()
        );
    }
    let status = renew(
        &mut client,
        Some(as_user("alice", PASSWORD)),
        &registered.dataplane_id,
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let message = status.message();
    assert!(
        message.starts_with("too many failed logins for user 'alice'; try again in "),
        "{message}"
    );
    assert!(message.ends_with(" s"), "{message}");

    // Another user from the same address is not locked out by alice's failures.
    renew(
        &mut client,
        Some(as_user("bob", PASSWORD)),
        &registered.dataplane_id,
    )
    .await
    .unwrap();

    assert_eq!(logs.named("auth.failed").len(), 5, "{}", logs.text());
    let locked = logs.named("auth.locked_out");
    assert_eq!(locked.len(), 1, "{}", logs.text());
    assert!(locked[0].to_string().contains("user 'alice'") && locked[0]["lockout_s"] == 60);
    assert_eq!(logs.named("auth.throttled").len(), 1, "{}", logs.text());
    assert!(
        !logs.text().contains("guess number"),
        "a password reached the log"
    );
    api.shutdown().await;
}
