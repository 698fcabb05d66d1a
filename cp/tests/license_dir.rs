//! Declarative licenses (`licenses.watch_dir`) through the whole control plane: a signed
//! document dropped in the directory is stored under its file's id and reaches a data plane's
//! stream; changing the file updates it, removing it deletes it (also while the control plane
//! was stopped); a file that does not validate is refused with a log line and stores nothing;
//! an unchanged file is never rewritten.

use std::time::Duration;

use licsync_common::duration::HumanDuration;
use licsync_cp::license_dir::file_license_id;
use licsync_testkit::{ControlPlane, Events, eventually};
use reqwest::{Method, StatusCode};

/// The stored license `id`, if any.
async fn stored(cp: &ControlPlane, id: &str) -> Option<serde_json::Value> {
    let (status, body) = cp.call(Method::GET, &format!("/licenses/{id}"), None).await;
    (status == StatusCode::OK).then_some(body)
}

// One thread: the log capture sees the events of tasks on it only.
#[tokio::test]
async fn license_files_are_imported_updated_and_removed() {
    let (events, _capture) = Events::capture();
    let dir = tempfile::tempdir().unwrap();
    let watched = dir.path().join("licenses");
    std::fs::create_dir(&watched).unwrap();
    let cp = ControlPlane::builder()
        .config(|c| {
            c.licenses.watch_dir = Some(watched.clone());
            c.licenses.watch_interval = HumanDuration(Duration::from_millis(100));
        })
        .start()
        .await;
    let dp = cp.register_dataplane(licsync_common::VERSION).await;
    let mut stream = cp.sync(&dp, licsync_common::VERSION).await.unwrap();
    let first = stream.update().await;
    stream.ack(&first).await;

    // A file appears: it is stored under its name's id and sent to the data plane.
    let id = file_license_id("acme.json").to_string();
    let document = cp.issuer.license("Acme from a file");
    std::fs::write(watched.join("acme.json"), format!("{document}\n")).unwrap();
    let update = stream.update().await;
    assert_eq!(update.upserted.len(), 1);
    assert_eq!(update.upserted[0].id, id);
    assert_eq!(update.upserted[0].document, document);
    stream.ack(&update).await;
    let revision = update.revision;

    // Unchanged, it is not written again; hidden files and other extensions are ignored; a
    // document that does not validate is refused and stores nothing.
    std::fs::write(watched.join(".hidden.json"), cp.issuer.license("Hidden")).unwrap();
    std::fs::write(watched.join("notes.txt"), "not a license").unwrap();
    std::fs::write(watched.join("forged.json"), r#"{"license": "forged"}"#).unwrap();
    events
        .wait_for_event("license_dir.refused", licsync_testkit::GUARD, |e| {
            e.field("file") == Some("forged.json")
        })
        .await;
    assert!(
        stored(&cp, &file_license_id("forged.json").to_string())
            .await
            .is_none()
    );
    assert!(
        stored(&cp, &file_license_id(".hidden.json").to_string())
            .await
            .is_none()
    );
    assert_eq!(cp.revision().await, revision, "nothing else was written");

    // Changed, it is updated under the same id.
    let renewed = cp.issuer.license("Acme renewed from a file");
    std::fs::write(watched.join("acme.json"), &renewed).unwrap();
    let update = stream.update().await;
    assert_eq!(update.upserted[0].id, id);
    assert_eq!(update.upserted[0].document, renewed);
    stream.ack(&update).await;

    // Gone when the control plane starts again (here: it starts on a directory without it,
    // as a ConfigMap edited while it was down would be): deleted at the start.
    drop(stream);
    let emptied = dir.path().join("emptied");
    std::fs::create_dir(&emptied).unwrap();
    let cp = cp
        .restart_with(|c| c.licenses.watch_dir = Some(emptied.clone()))
        .await;
    eventually("the removed file's license is deleted", || async {
        stored(&cp, &id).await.is_none().then_some(())
    })
    .await;
}
