//! `licsync-dp registration renew`: a fresh key and certificate for an existing data plane,
//! authorised by a user (`--username/--password`) or a connected app
//! (`--client-id/--client-secret`) instead of a registration token.
//!
//! It works when the old certificate has expired: `Registration.Renew` needs no client
//! certificate, so none is presented, and the control plane is trusted through the CA in the
//! registration file. The new file goes to `--output-directory`, never over the file in use:
//! the operator (or the running agent's hot reload) then puts it into place. What it keeps
//! and what it takes from the control plane's answer:
//!
//! | field | new file |
//! |---|---|
//! | `dataplane_id`, `dataplane_name`, `registered_at` | kept |
//! | `certificate`, `private_key` | new (the key is made here and never leaves this machine) |
//! | `ca_certificate` | the answer's (the control plane may have a new CA); kept if it sent none |
//! | `cluster_url` | kept; the answer's with `--update-urls=true` |
//! | `trusted_license_keys` | the answer's: the keys the control plane trusts now, vouched for by the same admin credential and CA-verified connection a registration is; kept if it sent none, so a control plane without keys cannot leave the agent rejecting every license |
//! | `renewed_at` | now |

use std::path::{Path, PathBuf};
use std::time::Duration;

use licsync_common::fsutil;
use licsync_common::license::TrustedKeys;
use licsync_common::pki;
use licsync_common::proto::registration_client::RegistrationClient;
use licsync_common::proto::{RegisterResponse, RenewRequest, renew_request};
use tonic::Code;

use super::create::check_issued;
use super::{Call, FILE_NAME, RegistrationError, RegistrationFile, call_failed, now_rfc3339};
use crate::cluster::{self, ClusterUrl, ConnectOptions};

/// Read when `--password` is not given but `--username` is, so the password need not appear
/// in the process list.
pub const PASSWORD_ENV: &str = "LICSYNC_PASSWORD";
/// Read when `--client-secret` is not given but `--client-id` is.
pub const CLIENT_SECRET_ENV: &str = "LICSYNC_CLIENT_SECRET";

/// Who authorises the renewal: an admin user, or a connected app with `manage:servers` (the
/// shared type; its `Debug` hides the secret).
pub use licsync_common::credential::Credential;

/// The credential from the four flags: exactly one complete pair. `env` looks up
/// [`PASSWORD_ENV`] and [`CLIENT_SECRET_ENV`], used only when the pair's first flag is
/// given. On error, the usage mistake in words that name the missing or extra flag.
pub fn credential_from_flags(
    username: Option<String>,
    password: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Credential, String> {
    let user_given = username.is_some() || password.is_some();
    let app_given = client_id.is_some() || client_secret.is_some();
    if user_given && app_given {
        let user_flag = if username.is_some() {
            "--username"
        } else {
            "--password"
        };
        let app_flag = if client_id.is_some() {
            "--client-id"
        } else {
            "--client-secret"
        };
        return Err(format!(
            "{user_flag} cannot be used with {app_flag}: pass either --username and --password, or --client-id and --client-secret"
        ));
    }
    let env = |name: &str| env(name).filter(|value| !value.is_empty());
    match (username, password, client_id, client_secret) {
        (Some(username), password, None, None) => {
            let password = password.or_else(|| env(PASSWORD_ENV)).ok_or_else(|| {
                format!("--username needs --password (or the {PASSWORD_ENV} environment variable)")
            })?;
            Ok(Credential::User { username, password })
        }
        (None, Some(_), None, None) => {
            Err("--password needs --username: the user whose password it is".into())
        }
        (None, None, Some(client_id), client_secret) => {
            let client_secret = client_secret
                .or_else(|| env(CLIENT_SECRET_ENV))
                .ok_or_else(|| {
                    format!(
                        "--client-id needs --client-secret (or the {CLIENT_SECRET_ENV} environment variable)"
                    )
                })?;
            Ok(Credential::App {
                client_id,
                client_secret,
            })
        }
        (None, None, None, Some(_)) => {
            Err("--client-secret needs --client-id: the connected app whose secret it is".into())
        }
        _ => Err(
            "say who authorises the renewal: --username and --password (an admin user), or --client-id and --client-secret (a connected app with the manage:servers scope)"
                .into(),
        ),
    }
}

/// What to check when the control plane did not accept `credential`.
fn check_hint(credential: &Credential) -> &'static str {
    match credential {
        Credential::User { .. } => "; check --username and --password",
        Credential::App { .. } => "; check --client-id and --client-secret",
    }
}

/// The inputs of `registration renew`.
#[derive(Debug, Clone)]
pub struct RenewOptions {
    pub credential: Credential,
    /// The registration file to renew (it may hold an expired certificate).
    pub registration_file: PathBuf,
    /// Where the new `registration.yaml` goes; must not already hold one.
    pub output_directory: PathBuf,
    /// Take the cluster URL the control plane advertises now instead of keeping the file's.
    pub update_urls: bool,
    /// Limit on connecting and on the call, at each server.
    pub timeout: Duration,
    /// The control-plane nodes to ask, in order (the agent's `sync.servers`); empty: the
    /// registration file's URL. A node that cannot be reached, or answers that it cannot serve
    /// now, is passed over for the next, as the agent's sync client does.
    pub servers: Vec<ClusterUrl>,
}

/// Renews the registration in `registration_file` into `output_directory/registration.yaml`;
/// returns the new file's path.
pub async fn renew(options: RenewOptions) -> Result<PathBuf, RegistrationError> {
    let RenewOptions {
        credential,
        registration_file,
        output_directory,
        update_urls,
        timeout,
        servers,
    } = options;
    let path = output_directory.join(FILE_NAME);
    refuse_existing(&path)?;
    let old = RegistrationFile::load(&registration_file)?;
    let urls = crate::sync::servers::urls(&servers, &old.cluster_url()?);
    fsutil::ensure_private_dir(&output_directory).map_err(|source| RegistrationError::Write {
        path: output_directory.clone(),
        source,
    })?;
    let (private_key, csr_der) = pki::new_key_and_csr(&old.dataplane_name)?;

    let mut answered = None;
    for (index, url) in urls.iter().enumerate() {
        match renew_at(url, &old, &credential, &csr_der, timeout).await {
            Ok(answer) => {
                answered = Some((url, answer));
                break;
            }
            Err(Attempt::PassOver(error)) if index + 1 < urls.len() => {
                tracing::warn!(
                    event = "registration.server_skipped",
                    server = %url,
                    %error,
                    "Trying the next control-plane server."
                );
            }
            Err(Attempt::PassOver(error) | Attempt::Final(error)) => return Err(error),
        }
    }
    let Some((url, answer)) = answered else {
        unreachable!("urls always holds at least the registration file's URL");
    };

    let file = renewed_file(&old, answer, private_key, update_urls).map_err(|reason| {
        RegistrationError::BadAnswer {
            url: url.to_string(),
            reason,
        }
    })?;
    refuse_existing(&path)?;
    file.save(&path)?;
    let cert = file.certificate_info()?;
    tracing::info!(
        event = "registration.renewed",
        dataplane.id = %file.dataplane_id,
        path = %path.display(),
        cert_expires_at = %licsync_common::time_fmt::rfc3339(cert.not_after),
        "Registration renewed."
    );
    Ok(path)
}

/// How one server's renewal failed: worth asking the next server, or final (the answer would
/// be the same at every node of one cluster: a wrong credential, an unknown data plane).
enum Attempt {
    PassOver(RegistrationError),
    Final(RegistrationError),
}

/// `Registration.Renew` at `url`. No client certificate: the one in the file may have expired,
/// and the credential is what authorises this call.
async fn renew_at(
    url: &ClusterUrl,
    old: &RegistrationFile,
    credential: &Credential,
    csr_der: &[u8],
    timeout: Duration,
) -> Result<RegisterResponse, Attempt> {
    let connect = ConnectOptions {
        connect_timeout: timeout,
        ..ConnectOptions::default()
    };
    let channel = cluster::endpoint(url, &old.ca_certificate, None, connect)
        .map_err(|e| Attempt::Final(e.into()))?
        .timeout(timeout)
        .connect()
        .await
        .map_err(|e| {
            Attempt::PassOver(RegistrationError::Unreachable {
                what: "renew",
                diagnosis: cluster::diagnose(&e, url),
            })
        })?;
    let answer = RegistrationClient::new(channel)
        .renew(RenewRequest {
            credential: Some(renew_request::Credential::from(credential)),
            dataplane_id: old.dataplane_id.clone(),
            csr_der: csr_der.to_vec(),
        })
        .await
        .map_err(|status| {
            let error = refused(&status, url, credential, &old.dataplane_id);
            // Draining, storage unavailable, or the connection lost mid-call: another node
            // may answer.
            match status.code() {
                Code::Unavailable | Code::DeadlineExceeded | Code::Unknown => {
                    Attempt::PassOver(error)
                }
                _ => Attempt::Final(error),
            }
        })?;
    Ok(answer.into_inner())
}

/// The new registration from the old one and the control plane's answer (see the module
/// table), once the answer is checked: its certificate is for this data plane and this key.
fn renewed_file(
    old: &RegistrationFile,
    answer: RegisterResponse,
    private_key: String,
    update_urls: bool,
) -> Result<RegistrationFile, String> {
    const NOTHING_WRITTEN: &str = "nothing was written and the registration file in use is unchanged; report this to the control plane's operator";
    check_issued(&answer, &private_key, NOTHING_WRITTEN)?;
    if answer.dataplane_id != old.dataplane_id {
        return Err(format!(
            "it renewed data plane {}, not {}; {NOTHING_WRITTEN}",
            answer.dataplane_id, old.dataplane_id
        ));
    }
    let ca_certificate = if answer.ca_certificate_pem.trim().is_empty() {
        old.ca_certificate.clone()
    } else if pki::certificates_from_pem(&answer.ca_certificate_pem).is_empty() {
        return Err(format!(
            "ca_certificate_pem holds no PEM certificate; {NOTHING_WRITTEN}"
        ));
    } else {
        answer.ca_certificate_pem
    };
    let cluster_url = if update_urls && !answer.cluster_url.trim().is_empty() {
        ClusterUrl::parse(&answer.cluster_url)
            .map_err(|e| format!("the advertised {e}; {NOTHING_WRITTEN}"))?
            .to_string()
    } else {
        if update_urls {
            tracing::warn!(
                event = "registration.no_advertised_url",
                "--update-urls=true, but the control plane advertises no cluster URL; keeping the one in the registration file."
            );
        }
        old.cluster_url.clone()
    };
    let trusted_license_keys = if answer.trusted_license_keys.is_empty() {
        old.trusted_license_keys.clone()
    } else {
        TrustedKeys::parse(&answer.trusted_license_keys)
            .map_err(|e| format!("trusted_license_keys: {e}; {NOTHING_WRITTEN}"))?;
        answer.trusted_license_keys
    };
    Ok(RegistrationFile {
        dataplane_id: old.dataplane_id.clone(),
        dataplane_name: old.dataplane_name.clone(),
        cluster_url,
        ca_certificate,
        certificate: answer.certificate_pem,
        private_key,
        trusted_license_keys,
        registered_at: old.registered_at.clone(),
        renewed_at: Some(now_rfc3339()),
    })
}

/// The output directory already holds a registration file: renewing never overwrites one,
/// least of all the file the agent is using.
fn refuse_existing(path: &Path) -> Result<(), RegistrationError> {
    if path.exists() {
        return Err(RegistrationError::RenewTargetExists {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// A gRPC failure of `Renew` in operator words, the control plane's reason first.
fn refused(
    status: &tonic::Status,
    url: &ClusterUrl,
    credential: &Credential,
    dataplane_id: &str,
) -> RegistrationError {
    call_failed(status, url, Call::Renew, |code| {
        match code {
        Code::Unauthenticated => check_hint(credential).into(),
        Code::PermissionDenied => "; renewing needs an admin user or a connected app with the manage:servers scope, for a data plane that was not revoked".into(),
        Code::NotFound => format!(
            "; the control plane does not know data plane {dataplane_id} (revoked or purged?): register it again with `licsync-dp registration create`"
        ),
        Code::ResourceExhausted => "; too many failed attempts: wait a minute, then try again with the right credential".into(),
        Code::Unimplemented => "; this control plane cannot renew certificates: upgrade it, or register again with `licsync-dp registration create`".into(),
        _ => String::new(),
    }
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use licsync_common::pki::CertificateAuthority;

    use super::*;
    use crate::registration::tests::sample;

    fn flags(
        u: Option<&str>,
        p: Option<&str>,
        i: Option<&str>,
        s: Option<&str>,
    ) -> Result<Credential, String> {
        let own = |v: Option<&str>| v.map(str::to_owned);
        credential_from_flags(own(u), own(p), own(i), own(s), |_| None)
    }

    #[test]
    fn exactly_one_complete_pair_is_a_credential() {
        assert_eq!(
            flags(Some("ops"), Some("pw"), None, None).unwrap(),
            Credential::User {
                username: "ops".into(),
                password: "pw".into()
            }
        );
        assert_eq!(
            flags(None, None, Some("app"), Some("s3cret")).unwrap(),
            Credential::App {
                client_id: "app".into(),
                client_secret: "s3cret".into()
            }
        );
        let cases = [
            (
                (Some("ops"), None, None, None),
                "--username needs --password",
            ),
            (
                (None, Some("pw"), None, None),
                "--password needs --username",
            ),
            (
                (None, None, Some("app"), None),
                "--client-id needs --client-secret",
            ),
            (
                (None, None, None, Some("s")),
                "--client-secret needs --client-id",
            ),
            (
                (Some("ops"), Some("pw"), Some("app"), Some("s")),
                "--username cannot be used with --client-id",
            ),
            (
                (None, Some("pw"), None, Some("s")),
                "--password cannot be used with --client-secret",
            ),
            (
                (Some("ops"), None, None, Some("s")),
                "--username cannot be used with --client-secret",
            ),
            (
                (None, None, None, None),
                "say who authorises the renewal: --username and --password",
            ),
        ];
        for ((u, p, i, s), expected) in cases {
            let err = flags(u, p, i, s).unwrap_err();
            assert!(err.starts_with(expected), "{u:?} {p:?} {i:?} {s:?}: {err}");
        }
    }

    #[test]
    fn secrets_may_come_from_the_environment_for_the_pair_given() {
        let env = |name: &str| match name {
            PASSWORD_ENV => Some("from-env".to_owned()),
            CLIENT_SECRET_ENV => Some("app-env".to_owned()),
            _ => None,
        };
        let user = credential_from_flags(Some("ops".into()), None, None, None, env).unwrap();
        assert_eq!(
            user,
            Credential::User {
                username: "ops".into(),
                password: "from-env".into()
            }
        );
        let app = credential_from_flags(None, None, Some("app".into()), None, env).unwrap();
        assert_eq!(
            app,
            Credential::App {
                client_id: "app".into(),
                client_secret: "app-env".into()
            }
        );
        // An environment variable never completes the other pair or makes a mix.
        let err = credential_from_flags(None, None, None, None, env).unwrap_err();
        assert!(err.starts_with("say who authorises"), "{err}");
        let shown = format!("{user:?} {app:?}");
        assert!(
            !shown.contains("from-env") && !shown.contains("app-env"),
            "{shown}"
        );
    }

    fn options(registration_file: PathBuf, output_directory: PathBuf) -> RenewOptions {
        RenewOptions {
            credential: Credential::User {
                username: "ops".into(),
                password: "pw".into(),
            },
            registration_file,
            output_directory,
            update_urls: false,
            timeout: Duration::from_secs(2),
            servers: Vec::new(),
        }
    }

    #[tokio::test]
    async fn refuses_an_output_directory_that_holds_a_registration_file() {
        let dir = tempfile::tempdir().unwrap();
        let current = dir.path().join(FILE_NAME);
        let file = sample(Duration::from_secs(3600));
        file.save(&current).unwrap();
        let before = std::fs::read(&current).unwrap();
        // Renewing in place: the directory of the file in use.
        let err = renew(options(current.clone(), dir.path().to_owned()))
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "{} already exists, and renewing never overwrites a registration file; choose another --output-directory (for example a new empty one), or move that file away first",
                current.display()
            )
        );
        assert_eq!(std::fs::read(&current).unwrap(), before);
    }

    #[tokio::test]
    async fn a_missing_registration_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nowhere.yaml");
        let err = renew(options(missing.clone(), dir.path().join("out")))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "registration file {} not found",
                missing.display()
            )),
            "{err}"
        );
        assert!(!dir.path().join("out").exists(), "nothing is created");
    }

    #[tokio::test]
    async fn an_unreachable_control_plane_is_named_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let current = dir.path().join(FILE_NAME);
        let mut file = sample(Duration::from_secs(3600));
        file.cluster_url = "https://127.0.0.1:1".into();
        file.save(&current).unwrap();
        let out = dir.path().join("out");
        let err = renew(options(current, out.clone()))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "cannot connect to renew: cannot reach the control plane at https://127.0.0.1:1"
            ),
            "{err}"
        );
        assert!(!out.join(FILE_NAME).exists());
    }

    /// An answer to a renewal of `old` for `csr`, signed by `ca`.
    fn answer(ca: &CertificateAuthority, old: &RegistrationFile, csr: &[u8]) -> RegisterResponse {
        let issued = ca
            .sign_dataplane(csr, &old.dataplane_id, Duration::from_secs(7200))
            .unwrap();
        RegisterResponse {
            dataplane_id: old.dataplane_id.clone(),
            dataplane_name: "renamed-at-the-cp".into(),
            certificate_pem: issued.cert_pem,
            ca_certificate_pem: ca.cert_pem().to_owned(),
            cluster_url: "https://cp-new.example.com:9005".into(),
            trusted_license_keys: vec!["Ylk3vmgXGsf3i5GWvwwCfcwHJJZ1rPS4Iu9OOKHSzc8=".into()],
        }
    }

    #[test]
    fn the_new_file_keeps_identity_and_urls_and_takes_the_new_certificate_ca_and_keys() {
        let old = sample(Duration::from_secs(3600));
        let (new_ca, _) =
            CertificateAuthority::generate("new CA", Duration::from_secs(3600)).unwrap();
        let (key, csr) = pki::new_key_and_csr("edge-1").unwrap();
        let answer = answer(&new_ca, &old, &csr);

        let file = renewed_file(&old, answer.clone(), key.clone(), false).unwrap();
        assert_eq!(file.dataplane_id, old.dataplane_id);
        assert_eq!(file.dataplane_name, old.dataplane_name);
        assert_eq!(
            file.cluster_url, old.cluster_url,
            "kept without --update-urls"
        );
        assert_eq!(file.ca_certificate, new_ca.cert_pem());
        assert_eq!(file.certificate, answer.certificate_pem);
        assert_eq!(file.private_key, key);
        assert_eq!(file.trusted_license_keys, answer.trusted_license_keys);
        assert_eq!(file.registered_at, old.registered_at);
        assert!(file.renewed_at.is_some());
        assert!(file.check().is_ok());

        let file = renewed_file(&old, answer.clone(), key.clone(), true).unwrap();
        assert_eq!(file.cluster_url, "https://cp-new.example.com:9005");

        // Nothing advertised: everything kept.
        let bare = RegisterResponse {
            ca_certificate_pem: String::new(),
            cluster_url: String::new(),
            trusted_license_keys: vec![],
            ..answer
        };
        let file = renewed_file(&old, bare, key, true).unwrap();
        assert_eq!(file.cluster_url, old.cluster_url);
        assert_eq!(file.ca_certificate, old.ca_certificate);
        assert_eq!(file.trusted_license_keys, old.trusted_license_keys);
    }

    #[test]
    fn an_answer_for_another_data_plane_or_key_or_with_a_bad_url_is_refused() {
        let old = sample(Duration::from_secs(3600));
        let (ca, _) = CertificateAuthority::generate("CA", Duration::from_secs(3600)).unwrap();
        let (key, csr) = pki::new_key_and_csr("edge-1").unwrap();

        let mut other = old.clone();
        other.dataplane_id = "aaaaaaaa-0000-4000-8000-000000000000".into();
        let err = renewed_file(&old, answer(&ca, &other, &csr), key.clone(), false).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "it renewed data plane aaaaaaaa-0000-4000-8000-000000000000, not {}",
                old.dataplane_id
            )),
            "{err}"
        );

        let (_, someone_elses_csr) = pki::new_key_and_csr("edge-1").unwrap();
        let err = renewed_file(
            &old,
            answer(&ca, &old, &someone_elses_csr),
            key.clone(),
            false,
        )
        .unwrap_err();
        assert!(err.contains("not for the private key"), "{err}");

        let mut bad_url = answer(&ca, &old, &csr);
        bad_url.cluster_url = "http://cp:8005".into();
        assert!(renewed_file(&old, bad_url.clone(), key.clone(), false).is_ok());
        let err = renewed_file(&old, bad_url, key, true).unwrap_err();
        assert!(err.contains("must start with https://"), "{err}");
        assert!(
            err.contains("registration file in use is unchanged"),
            "{err}"
        );
    }
}
