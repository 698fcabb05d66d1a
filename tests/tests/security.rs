//! The cluster listener refuses what it must, and both sides say why in words an operator can
//! act on: certificates from another CA, expired certificates, and used or expired tokens.

use std::time::Duration;

use licsync_testkit::Issuer;
use licsync_tests::cp::Cp;
use licsync_tests::dp::Dp;

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn used_and_expired_registration_tokens_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let cp = Cp::start(&tmp.path().join("cp"), &[&issuer.public], "").await;

    let token = cp.registration_token(1, "1h").await;
    let (code, _, _) = Dp::register(&cp, &tmp.path().join("a"), &token, "a");
    assert_eq!(code, 0);
    let (code, stdout, stderr) = Dp::register(&cp, &tmp.path().join("b"), &token, "b");
    assert_ne!(code, 0);
    let text = format!("{stdout}{stderr}");
    assert!(text.contains("already used"), "{text}");
    assert!(!tmp.path().join("b/registration.yaml").exists());

    let short = cp.registration_token(5, "1s").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (code, stdout, stderr) = Dp::register(&cp, &tmp.path().join("c"), &short, "c");
    assert_ne!(code, 0);
    let text = format!("{stdout}{stderr}");
    assert!(text.contains("expired"), "{text}");

    let (code, stdout, stderr) =
        Dp::register(&cp, &tmp.path().join("d"), "lsr_not-a-real-token", "d");
    assert_ne!(code, 0);
    assert!(
        format!("{stdout}{stderr}").contains("unknown"),
        "{stdout}{stderr}"
    );

    // The control plane logged every refusal with its reason.
    let refusals = cp.process.logs.named("registration.refused");
    assert_eq!(refusals.len(), 3, "{}", cp.process.logs.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_client_certificate_is_refused_and_both_sides_say_so() {
    let tmp = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let cp = Cp::start(
        &tmp.path().join("cp"),
        &[&issuer.public],
        "[pki]\ndataplane_cert_ttl = \"2s\"\n",
    )
    .await;
    let dp_dir = tmp.path().join("dp");
    Dp::register_ok(&cp, &dp_dir, "short-lived").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let dp = Dp::start(&dp_dir, "").await;

    let refused = cp
        .process
        .logs
        .wait_for_event("tls.handshake_failed", T, |_| true)
        .await;
    assert!(
        refused["reason"].as_str().unwrap().contains("expired"),
        "{refused}"
    );
    // The agent's own check warns before it connects that the certificate has expired; what
    // must also show is the control plane's refusal, as the agent understood it from the TLS
    // alert, with what to do about it.
    let refusal = dp
        .process
        .logs
        .wait_for_event("sync.refused", T, |l| {
            l["reason"]
                .as_str()
                .is_some_and(|r| r.contains("refused this data plane's certificate"))
        })
        .await;
    assert_eq!(refusal["level"], "ERROR", "{refusal}");
    let reason = refusal["reason"].as_str().unwrap();
    assert!(
        reason.contains("it has expired") && reason.contains("`licsync-dp registration renew`"),
        "{refusal}"
    );
    assert!(cp.process.logs.named("dataplane.connected").is_empty());
    assert!(dp.process.logs.named("dataplane.connected").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_from_another_ca_is_refused_and_both_sides_say_so() {
    let tmp = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let home = Cp::start(&tmp.path().join("home"), &[&issuer.public], "").await;
    let other = Cp::start(&tmp.path().join("other"), &[&issuer.public], "").await;
    let dp_dir = tmp.path().join("dp");
    Dp::register_ok(&home, &dp_dir, "wanderer").await;

    // Point the agent at the other control plane, trusting that one's CA, but keep the client
    // certificate issued by the home CA.
    let path = dp_dir.join("registration.yaml");
    let mut registration: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let other_ca = std::fs::read_to_string(tmp.path().join("other/data/pki/ca.crt")).unwrap();
    registration["cluster_url"] = other.cluster_url.clone().into();
    registration["ca_certificate"] = other_ca.into();
    std::fs::write(&path, serde_yaml_ng::to_string(&registration).unwrap()).unwrap();

    let dp = Dp::start(&dp_dir, "").await;
    let refused = other
        .process
        .logs
        .wait_for_event("tls.handshake_failed", T, |_| true)
        .await;
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("not issued by this cluster's CA"),
        "{refused}"
    );
    // Each cluster's CA has its own name, so the control plane answers with the UnknownCA
    // alert and the agent can tell the operator exactly what happened.
    let refusal = dp
        .process
        .logs
        .wait_for_event("sync.refused", T, |l| {
            l["reason"]
                .as_str()
                .is_some_and(|r| r.contains("refused this data plane's certificate"))
        })
        .await;
    assert_eq!(refusal["level"], "ERROR", "{refusal}");
    let reason = refusal["reason"].as_str().unwrap();
    assert!(
        reason.contains(&other.cluster_url)
            && reason.contains("it was not issued by the cluster CA")
            && reason.contains("`licsync-dp registration create`"),
        "{refusal}"
    );
    assert!(other.process.logs.named("dataplane.connected").is_empty());
}

/// A registration file copied to a second host: the control plane serves one stream per data
/// plane and says so, instead of silently interleaving two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_file_used_on_two_hosts_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let issuer = Issuer::new();
    let cp = Cp::start(&tmp.path().join("cp"), &[&issuer.public], "").await;
    let first = tmp.path().join("first");
    Dp::register_ok(&cp, &first, "original").await;
    let copy = tmp.path().join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::copy(
        first.join("registration.yaml"),
        copy.join("registration.yaml"),
    )
    .unwrap();

    let _a = Dp::start(&first, "").await;
    cp.process
        .logs
        .wait_for_event("dataplane.connected", T, |_| true)
        .await;
    let _b = Dp::start(&copy, "").await;
    let replaced = cp
        .process
        .logs
        .wait_for_event("dataplane.stream_replaced", T, |_| true)
        .await;
    assert!(
        replaced["message"].as_str().unwrap().contains("two hosts"),
        "{replaced}"
    );
}
