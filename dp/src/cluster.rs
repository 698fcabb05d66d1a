//! How the agent reaches the control plane's cluster listener: the `https://HOST:PORT` URL, a
//! tonic [`Endpoint`] with TLS (and the client certificate once registered), and connection
//! failures translated into words an operator can act on.
//!
//! TLS failures are the ones that need translating: when the control plane refuses our
//! certificate, rustls only reports an alert such as `CertificateExpired` or `UnknownCA`
//! buried in a chain of transport errors. [`diagnose`] finds it and says what it means.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::time::Duration;

use rustls::{AlertDescription, CertificateError};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Uri};

/// A cluster URL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cluster URL '{url}' {reason}; expected https://HOST:PORT, e.g. https://cp.example.com:8005"
)]
pub struct BadClusterUrl {
    pub url: String,
    pub reason: &'static str,
}

/// The control plane's cluster listener address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterUrl {
    uri: Uri,
    host: String,
    port: u16,
}

impl ClusterUrl {
    pub fn parse(text: &str) -> Result<Self, BadClusterUrl> {
        let bad = |reason| BadClusterUrl {
            url: text.to_owned(),
            reason,
        };
        let uri: Uri = text.trim().parse().map_err(|_| bad("is not a URL"))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad(
                "must start with https:// (the cluster listener always uses TLS)",
            ));
        }
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("has no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad("must not have a path or query"));
        }
        let port = uri.port_u16().unwrap_or(443);
        Ok(Self { uri, host, port })
    }

    /// The host name (or IP address) the server certificate must be valid for.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `HOST:PORT`, suitable for `TcpStream::connect`.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for ClusterUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "https://{}", self.authority())
    }
}

/// Timeouts and keepalive for a connection to the cluster listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnectOptions {
    pub connect_timeout: Duration,
    /// HTTP/2 PING interval; `None` disables keepalive (one-shot calls).
    pub keepalive_interval: Option<Duration>,
    pub keepalive_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            keepalive_interval: None,
            keepalive_timeout: Duration::from_secs(10),
        }
    }
}

/// A client certificate and its private key, PEM.
#[derive(Clone)]
pub struct ClientIdentity {
    pub certificate_pem: String,
    pub private_key_pem: String,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity").finish_non_exhaustive()
    }
}

/// The TLS material cannot be used to build a connection.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up TLS to {url}: {reason}")]
pub struct TlsSetupError {
    pub url: String,
    pub reason: String,
}

/// An endpoint that trusts only `ca_pem` and presents `identity` when given.
pub fn endpoint(
    url: &ClusterUrl,
    ca_pem: &str,
    identity: Option<&ClientIdentity>,
    options: ConnectOptions,
) -> Result<Endpoint, TlsSetupError> {
    endpoint_at(url, None, ca_pem, identity, options)
}

/// [`endpoint`], connecting to `addr` when given (one of the addresses `url`'s name resolves
/// to) rather than resolving the name. The TLS server name and the request authority stay
/// `url`'s, so the server certificate is still checked against the name.
pub fn endpoint_at(
    url: &ClusterUrl,
    addr: Option<SocketAddr>,
    ca_pem: &str,
    identity: Option<&ClientIdentity>,
    options: ConnectOptions,
) -> Result<Endpoint, TlsSetupError> {
    let fail = |reason: String| TlsSetupError {
        url: url.to_string(),
        reason,
    };
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(url.host())
        .timeout(options.connect_timeout);
    if let Some(identity) = identity {
        tls = tls.identity(Identity::from_pem(
            &identity.certificate_pem,
            &identity.private_key_pem,
        ));
    }
    let target = addr.map_or_else(|| url.to_string(), |addr| format!("https://{addr}"));
    let mut endpoint = Endpoint::from_shared(target)
        .map_err(|e| fail(e.to_string()))?
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        .user_agent(format!("licsync-dp/{}", licsync_common::VERSION))
        .map_err(|e| fail(e.to_string()))?
        .tls_config(tls)
        .map_err(|e| fail(chain(&e)))?;
    if addr.is_some() {
        endpoint = endpoint.origin(url.uri.clone());
    }
    if let Some(interval) = options.keepalive_interval {
        endpoint = endpoint
            .http2_keep_alive_interval(interval)
            .keep_alive_timeout(options.keepalive_timeout)
            .keep_alive_while_idle(true);
    }
    Ok(endpoint)
}

/// What kind of failure a connection attempt met, which decides how loudly it is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The control plane refused our client certificate: retrying will not help.
    CertificateRefused,
    /// The control plane's certificate is not trusted: retrying will not help.
    ServerUntrusted,
    /// The control plane is down or unreachable: retrying will.
    Unreachable,
    Other,
}

/// A connection failure in operator words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    pub kind: FailureKind,
    pub message: String,
}

impl std::fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Explains why talking to `url` failed, looking through the whole error chain for the TLS or
/// socket error underneath.
pub fn diagnose(error: &(dyn StdError + 'static), url: &ClusterUrl) -> Diagnosis {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(err) = current {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return diagnose_tls(tls, url);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            // `io::Error::source` skips the wrapped error, so look inside explicitly.
            if let Some(tls) = io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
                return diagnose_tls(tls, url);
            }
            if let Some(diagnosis) = diagnose_io(io, url) {
                return diagnosis;
            }
        }
        current = err.source();
    }
    let text = chain(error);
    // The same, for a TLS error that reached us only as text.
    if text.contains("received corrupt message") {
        return not_tls(url);
    }
    // HTTP/2 re-creates a connection's I/O error from its text for each stream, so a refusal
    // that arrives after the handshake (TLS 1.3 client certificates) survives only as text.
    if let Some(alert) = REPORTED_ALERTS
        .iter()
        .find(|alert| text.contains(&format!("received fatal alert: {alert:?}")))
    {
        return diagnose_tls(&rustls::Error::AlertReceived(*alert), url);
    }
    let kind = if text.contains("dns error") || text.contains("lookup address") {
        FailureKind::Unreachable
    } else {
        FailureKind::Other
    };
    Diagnosis {
        kind,
        message: format!("cannot talk to the control plane at {url}: {text}"),
    }
}

/// Alerts a server sends about a client certificate, looked for by name in error texts.
const REPORTED_ALERTS: [AlertDescription; 9] = [
    AlertDescription::CertificateExpired,
    AlertDescription::CertificateRevoked,
    AlertDescription::UnknownCA,
    AlertDescription::CertificateRequired,
    AlertDescription::BadCertificate,
    AlertDescription::UnsupportedCertificate,
    AlertDescription::CertificateUnknown,
    AlertDescription::AccessDenied,
    AlertDescription::DecryptError,
];

fn diagnose_io(io: &std::io::Error, url: &ClusterUrl) -> Option<Diagnosis> {
    use std::io::ErrorKind;
    let what = match io.kind() {
        ErrorKind::ConnectionRefused => {
            "connection refused; is the control plane's cluster listener running there?"
        }
        ErrorKind::TimedOut => {
            "connection timed out; check the address and any firewall in between"
        }
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::UnexpectedEof => {
            "the connection was closed by the other side"
        }
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => "host or network unreachable",
        _ => return None,
    };
    Some(Diagnosis {
        kind: FailureKind::Unreachable,
        message: format!("cannot reach the control plane at {url}: {what}"),
    })
}

fn diagnose_tls(error: &rustls::Error, url: &ClusterUrl) -> Diagnosis {
    const RENEW: &str = "renew it with `licsync-dp registration renew`";
    const REGISTER: &str = "register this data plane again with `licsync-dp registration create`";
    let refused = |why: String| Diagnosis {
        kind: FailureKind::CertificateRefused,
        message: format!("the control plane at {url} refused this data plane's certificate: {why}"),
    };
    let untrusted = |why: String| Diagnosis {
        kind: FailureKind::ServerUntrusted,
        message: format!("the control plane at {url} is not trusted: {why}"),
    };
    match error {
        rustls::Error::AlertReceived(alert) => match alert {
            AlertDescription::CertificateExpired => refused(format!(
                "it has expired or is not valid yet; {RENEW} (and check this machine's clock)"
            )),
            AlertDescription::CertificateRevoked => refused(format!("it has been revoked; {REGISTER}")),
            AlertDescription::UnknownCA => refused(format!(
                "it was not issued by the cluster CA (was the control plane's CA replaced?); {REGISTER}"
            )),
            AlertDescription::CertificateRequired => refused(
                "none was presented; check the certificate and private_key in the registration file".into(),
            ),
            AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::AccessDenied
            | AlertDescription::DecryptError => refused(format!(
                "TLS alert {alert:?}; check it with `licsync-dp registration inspect`, then {RENEW} or {REGISTER}"
            )),
            other => Diagnosis {
                kind: FailureKind::Other,
                message: format!(
                    "the control plane at {url} ended the TLS handshake with alert {other:?}"
                ),
            },
        },
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => untrusted(
                "its server certificate has expired; renew the cluster certificate on the control plane".into(),
            ),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => untrusted(
                "its server certificate is not valid yet; check the clocks of both machines".into(),
            ),
            // A bad signature here means a CA with the same name but another key.
            CertificateError::UnknownIssuer | CertificateError::BadSignature => untrusted(
                "its server certificate was not issued by the CA this data plane trusts (from the registration file, or --ca-cert): the control plane's CA changed, or the URL points at another server".into(),
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                untrusted(format!(
                    "its server certificate is not valid for '{host}'; add '{host}' to the control plane's cluster.server_names (and restart it), or use a cluster URL whose host is listed there",
                    host = url.host()
                ))
            }
            CertificateError::Revoked => untrusted("its server certificate has been revoked".into()),
            other => untrusted(format!("its server certificate cannot be verified ({other:?})")),
        },
        // What a plain-HTTP answer (the Admin API, any web server) looks like to TLS.
        rustls::Error::InvalidMessage(_) => not_tls(url),
        rustls::Error::NoApplicationProtocol => Diagnosis {
            kind: FailureKind::Other,
            message: format!(
                "the server at {url} does not speak HTTP/2 over TLS; is this the cluster listener and not the Admin API?"
            ),
        },
        other => Diagnosis {
            kind: FailureKind::Other,
            message: format!("the TLS handshake with the control plane at {url} failed: {other}"),
        },
    }
}

/// The server answered, but not with TLS: most likely the Admin API's port was given.
fn not_tls(url: &ClusterUrl) -> Diagnosis {
    Diagnosis {
        kind: FailureKind::ServerUntrusted,
        message: format!(
            "{url} does not speak TLS: is it the cluster port (default 8005)? The Admin API's port (default 8001) cannot be used here"
        ),
    }
}

/// An error and all its sources, `: `-separated.
pub fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut current = error.source();
    while let Some(err) = current {
        let next = err.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        current = err.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_https_with_a_host() {
        let url = ClusterUrl::parse("https://cp.example.com:8005").unwrap();
        assert_eq!((url.host(), url.port()), ("cp.example.com", 8005));
        assert_eq!(url.to_string(), "https://cp.example.com:8005");
        let v6 = ClusterUrl::parse("https://[::1]:8005/").unwrap();
        assert_eq!((v6.host(), v6.authority().as_str()), ("::1", "[::1]:8005"));
        assert_eq!(ClusterUrl::parse("https://cp").unwrap().port(), 443);
        for bad in ["http://cp:8005", "cp:8005", "https://cp:8005/x", ""] {
            let err = ClusterUrl::parse(bad).unwrap_err().to_string();
            assert!(err.contains("expected https://HOST:PORT"), "{bad}: {err}");
        }
    }

    #[test]
    fn refusals_are_explained_through_io_wrapping() {
        let url = ClusterUrl::parse("https://cp:8005").unwrap();
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::CertificateExpired),
        );
        let d = diagnose(&io, &url);
        assert_eq!(d.kind, FailureKind::CertificateRefused);
        assert!(
            d.message.contains("expired") && d.message.contains("registration renew"),
            "{d}"
        );

        let d = diagnose(
            &rustls::Error::AlertReceived(AlertDescription::UnknownCA),
            &url,
        );
        assert!(d.message.contains("not issued by the cluster CA"), "{d}");

        let d = diagnose(
            &rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
            &url,
        );
        assert_eq!(d.kind, FailureKind::ServerUntrusted);
        assert!(
            d.message
                .contains("add 'cp' to the control plane's cluster.server_names"),
            "{d}"
        );

        // What reaches a stream after HTTP/2 copied the connection's error by its text.
        let copied = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "received fatal alert: CertificateRevoked",
        );
        let d = diagnose(&copied, &url);
        assert_eq!(d.kind, FailureKind::CertificateRefused);
        assert!(d.message.contains("revoked"), "{d}");

        // A plain-HTTP server (the Admin API) answering the TLS handshake.
        let plain = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
        );
        let expected = "https://cp:8005 does not speak TLS: is it the cluster port (default 8005)? \
                        The Admin API's port (default 8001) cannot be used here";
        assert_eq!(diagnose(&plain, &url).message, expected);
        let copied = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "received corrupt message of type InvalidContentType",
        );
        assert_eq!(diagnose(&copied, &url).message, expected);

        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(diagnose(&refused, &url).kind, FailureKind::Unreachable);
    }
}
