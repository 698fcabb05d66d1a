//! Applying one `Update` from the control plane, in the order that keeps a crash harmless:
//! verify every upserted license, persist the new state, bring the license file in line, and
//! only then answer `Ack` (all applied) or `Nack` (the licenses that failed verification, each
//! with its reason; the good ones are kept). When the agent itself fails (state not saved,
//! license file not written), the answer is a `Nack` naming no license, which asks the control
//! plane to send the update again after a backoff; the stream stays up.
//!
//! [`apply_update`] is the pure part (what the new state is and what was rejected);
//! [`Applier`] adds persistence, the license file and the published views.

use std::sync::Arc;

use licsync_common::license::{License, TrustedKeys};
use licsync_common::proto::{
    Ack, DataPlaneMessage, Nack, RejectedLicense, Update, data_plane_message,
};
use tokio::sync::watch;

use super::status::{MAX_REJECTED_SHOWN, Rejection, SyncStatus};
use crate::output::{LicenseFile, OutputError};
use crate::state::{ActiveRule, DpState, HeldLicense, StateError, StateStore};

/// The result of applying an update to a state, before anything is persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub state: DpState,
    pub rejected: Vec<RejectedLicense>,
    /// Upserted licenses that were already held at the same revision with the same document:
    /// sent for nothing. A control plane resends nothing a data plane holds, so this is 0.
    pub resent: usize,
}

/// Verifies `update`'s licenses against `keys` and returns the state it leads to.
///
/// A rejected license leaves any earlier version of it in place (it was verified when it came),
/// so the control plane, seeing the old revision in the next `Hello`, sends the new one again.
pub fn apply_update(current: &DpState, update: &Update, keys: &TrustedKeys, now: i64) -> Applied {
    let mut state = current.clone();
    let mut rejected = Vec::new();
    let mut resent = 0;
    for license in &update.upserted {
        if current.get(&license.id).is_some_and(|held| {
            held.revision == license.revision && held.document == license.document
        }) {
            resent += 1;
        }
        tracing::info!(
            event = "license.received",
            license.id = %license.id,
            license.revision = license.revision,
            "License received."
        );
        let verdict = if license.id.trim().is_empty() {
            Err("the license has no id".to_owned())
        } else {
            License::parse_verified(&license.document, keys).map_err(|e| e.to_string())
        };
        match verdict {
            Ok(_) => state.upsert(HeldLicense {
                id: license.id.clone(),
                document: license.document.clone(),
                created_at: license.created_at,
                updated_at: license.updated_at,
                revision: license.revision,
            }),
            Err(reason) => {
                tracing::warn!(
                    event = "license.rejected",
                    license.id = %license.id,
                    license.revision = license.revision,
                    reason = %reason,
                    "License rejected; the previous version, if any, stays in use."
                );
                rejected.push(RejectedLicense {
                    id: license.id.clone(),
                    revision: license.revision,
                    reason,
                });
            }
        }
    }
    for id in &update.removed {
        if state.remove(id).is_some() {
            tracing::info!(
                event = "license.withdrawn",
                license.id = %id,
                "License withdrawn by the control plane."
            );
        }
    }
    state.revision = update.revision;
    state.synced_at = Some(now);
    Applied {
        state,
        rejected,
        resent,
    }
}

/// The answer to an update whose licenses were all applied (`Ack`) or not (`Nack`).
pub fn reply(nonce: &str, rejected: Vec<RejectedLicense>, total: usize) -> DataPlaneMessage {
    let message = if rejected.is_empty() {
        data_plane_message::Message::Ack(Ack {
            nonce: nonce.to_owned(),
        })
    } else {
        let mut reason = format!("{} of {} licenses rejected", rejected.len(), total);
        for r in &rejected {
            reason.push_str(&format!("; {}: {}", r.id, r.reason));
        }
        data_plane_message::Message::Nack(Nack {
            nonce: nonce.to_owned(),
            reason,
            rejected,
        })
    };
    DataPlaneMessage {
        message: Some(message),
    }
}

/// A `Nack` that is not about particular licenses (the agent itself failed): an empty
/// `rejected` list, which asks the control plane to send the update again later.
pub fn failure_nack(nonce: &str, reason: String) -> DataPlaneMessage {
    DataPlaneMessage {
        message: Some(data_plane_message::Message::Nack(Nack {
            nonce: nonce.to_owned(),
            reason,
            rejected: Vec::new(),
        })),
    }
}

/// The agent could not apply an update. Nothing about the licenses is wrong: the control
/// plane is told (a retry `Nack`) and sends the update again later.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("the data plane could not save its state: {0}")]
    State(#[from] StateError),
    #[error("the data plane could not write its license file: {0}")]
    Output(#[from] OutputError),
}

/// Keeps `GET /status`'s list of refused licenses in step with what the control plane offers:
/// a license accepted or removed since is forgotten, a refused one remembered with its reason.
fn note_rejections(
    shown: &mut std::collections::BTreeMap<String, Rejection>,
    update: &Update,
    rejected: &[RejectedLicense],
) {
    for id in &update.removed {
        shown.remove(id);
    }
    for license in &update.upserted {
        shown.remove(&license.id);
    }
    for r in rejected {
        if shown.len() < MAX_REJECTED_SHOWN {
            shown.insert(
                r.id.clone(),
                Rejection {
                    revision: r.revision,
                    reason: r.reason.clone(),
                },
            );
        }
    }
}

/// Applies updates durably and publishes the result.
#[derive(Clone)]
pub struct Applier {
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) output: Option<LicenseFile>,
    /// The configured (or registration-time) keys.
    pub(crate) keys: TrustedKeys,
    /// Whether the keys sent with each update are accepted too.
    pub(crate) follow_control_plane_keys: bool,
    /// Which held license is written for the gateway.
    pub(crate) rule: ActiveRule,
    pub(crate) state: watch::Sender<Arc<DpState>>,
    pub(crate) status: watch::Sender<SyncStatus>,
}

impl Applier {
    /// Verifies, persists and writes the license file; returns the `Ack` or `Nack` to send.
    ///
    /// When the agent itself fails (its state cannot be saved, its license file cannot be
    /// written), the answer is a `Nack` with no rejected license: the stream stays up, the
    /// control plane shows `apply_failed` with the reason and sends the update again after a
    /// backoff, and meanwhile the license file is retried here ([`super::output_retry`]).
    pub async fn handle(&self, update: &Update) -> DataPlaneMessage {
        match self.apply(update).await {
            Ok(reply) => {
                self.status
                    .send_if_modified(|status| status.apply_error.take().is_some());
                reply
            }
            Err(error) => {
                let reason = error.to_string();
                tracing::warn!(
                    event = "sync.apply_failed",
                    revision = update.revision,
                    reason = %reason,
                    "Cannot apply an update; the control plane is told and sends it again later."
                );
                self.status
                    .send_modify(|status| status.apply_error = Some(reason.clone()));
                failure_nack(&update.nonce, reason)
            }
        }
    }

    async fn apply(&self, update: &Update) -> Result<DataPlaneMessage, ApplyError> {
        let current = self.state.borrow().clone();
        let keys = self.keys_for(update);
        let Applied {
            state,
            rejected,
            resent,
        } = apply_update(&current, update, &keys, licsync_common::unix_now());
        self.store.save(&state).await?;
        let state = Arc::new(state);
        self.state.send_replace(state.clone());
        self.status.send_modify(|status| {
            status.revision = state.revision;
            status.last_sync = state.synced_at;
            // After a failure the control plane sends the same update again on purpose.
            if status.apply_error.is_none() {
                status.licenses_resent += resent as u64;
            }
            note_rejections(&mut status.rejected_licenses, update, &rejected);
        });
        self.bring_output_in_line(&state).await?;
        tracing::info!(
            event = "sync.applied",
            revision = update.revision,
            upserted = update.upserted.len(),
            removed = update.removed.len(),
            rejected = rejected.len(),
            resent,
            "Update applied."
        );
        Ok(reply(&update.nonce, rejected, update.upserted.len()))
    }

    /// The keys that verify `update`: the configured (or registration-time) ones, or, when the
    /// operator opted in, those the control plane sent with it.
    fn keys_for(&self, update: &Update) -> TrustedKeys {
        if !self.follow_control_plane_keys || update.trusted_license_keys.is_empty() {
            return self.keys.clone();
        }
        match TrustedKeys::parse(&update.trusted_license_keys) {
            Ok(keys) => keys,
            Err(error) => {
                tracing::warn!(event = "sync.bad_control_plane_key", %error, "The control plane sent an unusable license key; verifying with the registration-time keys.");
                self.keys.clone()
            }
        }
    }

    /// Makes the license file match `state` and records whether it does (`/health/ready`).
    pub async fn bring_output_in_line(&self, state: &DpState) -> Result<(), OutputError> {
        let result = match &self.output {
            Some(file) => file
                .bring_in_line(state.choose(self.rule, today()).active)
                .await
                .map(|_| ()),
            None => Ok(()),
        };
        self.record_output(&result);
        result
    }

    /// Tries the license file again with the newest state (read once no other write is
    /// under way, so an older state can never replace a newer one).
    pub async fn retry_output(&self) -> Result<(), OutputError> {
        let result = match &self.output {
            Some(file) => file
                .bring_in_line_with(|| {
                    let state = self.state.borrow();
                    state.choose(self.rule, today()).active.cloned()
                })
                .await
                .map(|_| ()),
            None => Ok(()),
        };
        self.record_output(&result);
        result
    }

    /// Publishes whether the license file is in line, and logs when that changes (a failure
    /// once per distinct reason, not at every retry).
    fn record_output(&self, result: &Result<(), OutputError>) {
        let error = result.as_ref().err().map(ToString::to_string);
        let path = self.output.as_ref().map(|f| f.path().display().to_string());
        let mut recovered = false;
        let changed = self.status.send_if_modified(|status| {
            let changed = status.license_file_in_line != error.is_none()
                || status.license_file_error != error;
            recovered = status.license_file_error.is_some() && error.is_none();
            status.license_file_in_line = error.is_none();
            status.license_file_error.clone_from(&error);
            changed
        });
        if !changed {
            return;
        }
        if let Some(error) = &error {
            tracing::error!(
                event = "license.write_failed",
                path = path.as_deref().unwrap_or_default(),
                %error,
                "The license file cannot be brought in line; retrying with backoff."
            );
        } else if recovered {
            tracing::info!(
                event = "license.write_recovered",
                path = path.as_deref().unwrap_or_default(),
                "The license file is in line again."
            );
        }
    }
}

/// Today, UTC: whether a license is in force is decided by the date of its expiry, UTC.
fn today() -> time::Date {
    time::OffsetDateTime::now_utc().date()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use licsync_common::license::{SigningKey, sign_document};
    use licsync_common::proto::License as WireLicense;

    use super::*;
    use crate::state::MemoryStateStore;

    pub(crate) fn signed(key: &SigningKey, customer: &str) -> String {
        let payload: BTreeMap<String, String> = [
            ("customer", customer),
            ("license_key", "KEY-1"),
            ("license_creation_date", "2024-01-01"),
            ("license_expiration_date", "2099-12-31"),
            ("dataplanes", "10"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        sign_document(&payload, key)
    }

    fn wire(id: &str, document: String, updated_at: i64, revision: u64) -> WireLicense {
        WireLicense {
            id: id.into(),
            document,
            created_at: 100,
            updated_at,
            revision,
        }
    }

    struct Fixture {
        applier: Applier,
        store: Arc<MemoryStateStore>,
        trusted: SigningKey,
        stranger: SigningKey,
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
    }

    fn fixture() -> Fixture {
        let (trusted, _) = SigningKey::generate().unwrap();
        let (stranger, _) = SigningKey::generate().unwrap();
        let keys = TrustedKeys::parse(&[trusted.public_key_base64()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("license.json");
        let store = Arc::new(MemoryStateStore::default());
        let applier = Applier {
            follow_control_plane_keys: false,
            rule: ActiveRule::default(),
            store: store.clone(),
            output: Some(LicenseFile::new(&path, &[], Duration::from_secs(1))),
            keys,
            state: watch::channel(Arc::new(DpState::default())).0,
            status: watch::channel(SyncStatus::default()).0,
        };
        Fixture {
            applier,
            store,
            trusted,
            stranger,
            _dir: dir,
            path,
        }
    }

    #[tokio::test]
    async fn good_licenses_are_kept_and_bad_ones_nacked_with_reasons() {
        let f = fixture();
        let good = signed(&f.trusted, "Good Corp");
        let mut tampered = signed(&f.trusted, "Tampered Corp");
        tampered = tampered.replace("Tampered Corp", "Tampered Corq");
        let update = Update {
            nonce: "n-1".into(),
            revision: 7,
            upserted: vec![
                wire("good", good.clone(), 500, 5),
                wire("foreign", signed(&f.stranger, "Foreign Corp"), 900, 6),
                wire("tampered", tampered, 900, 7),
                wire("garbage", "{not json".into(), 900, 7),
            ],
            removed: vec![],
            ..Default::default()
        };
        let reply = f.applier.handle(&update).await;
        let Some(data_plane_message::Message::Nack(nack)) = reply.message else {
            panic!("expected a Nack, got {reply:?}");
        };
        assert_eq!(nack.nonce, "n-1");
        let rejected: Vec<_> = nack
            .rejected
            .iter()
            .map(|r| (r.id.as_str(), r.revision, r.reason.as_str()))
            .collect();
        assert_eq!(
            rejected,
            [
                (
                    "foreign",
                    6,
                    "validation failed: the signature does not verify with the 1 trusted key"
                ),
                (
                    "tampered",
                    7,
                    "validation failed: the signature does not verify with the 1 trusted key"
                ),
                ("garbage", 7, "could not decode license json"),
            ]
        );
        assert!(
            nack.reason.starts_with("3 of 4 licenses rejected"),
            "{}",
            nack.reason
        );

        let saved = f.store.snapshot();
        assert_eq!(saved.revision, 7);
        assert_eq!(saved.licenses.len(), 1);
        assert_eq!(saved.get("good").unwrap().document, good);
        assert_eq!(
            std::fs::read_to_string(&f.path).unwrap(),
            good,
            "only a verified license is served"
        );
        assert_eq!(f.applier.status.borrow().revision, 7);
    }

    #[tokio::test]
    async fn with_prefer_in_force_the_gateway_keeps_the_license_in_force() {
        let mut f = fixture();
        let expired: BTreeMap<String, String> = [
            ("customer", "Lapsed Corp"),
            ("license_key", "KEY-2"),
            ("license_creation_date", "2020-01-01"),
            ("license_expiration_date", "2020-12-31"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let expired = sign_document(&expired, &f.trusted);
        let in_force = signed(&f.trusted, "Current Corp");
        let update = Update {
            nonce: "n-1".into(),
            revision: 2,
            upserted: vec![
                wire("current", in_force.clone(), 100, 1),
                wire("lapsed", expired.clone(), 200, 2),
            ],
            ..Default::default()
        };
        f.applier.handle(&update).await;
        assert_eq!(
            std::fs::read_to_string(&f.path).unwrap(),
            expired,
            "Kong's rule: the newest updated_at, expired or not"
        );

        f.applier.rule = ActiveRule {
            prefer_in_force: true,
        };
        f.applier.retry_output().await.unwrap();
        assert_eq!(std::fs::read_to_string(&f.path).unwrap(), in_force);
    }

    #[tokio::test]
    async fn a_document_that_repeats_a_key_is_nacked_and_never_written() {
        let f = fixture();
        let genuine = signed(&f.trusted, "Small Co");
        let forged = genuine.replacen(
            "\"payload\":{",
            "\"payload\":{\"customer\":\"Mega Corp\",\"dataplanes\":\"100000\",",
            1,
        );
        let update = Update {
            nonce: "n-1".into(),
            revision: 1,
            upserted: vec![wire("forged", forged, 900, 1)],
            removed: vec![],
            ..Default::default()
        };
        let reply = f.applier.handle(&update).await;
        let Some(data_plane_message::Message::Nack(nack)) = reply.message else {
            panic!("expected a Nack, got {reply:?}");
        };
        assert_eq!(nack.rejected.len(), 1);
        assert_eq!(nack.rejected[0].reason, "duplicate key 'customer'");
        assert!(
            !f.path.exists(),
            "a forged document never reaches the gateway"
        );
        assert!(f.store.snapshot().licenses.is_empty());
    }

    #[tokio::test]
    async fn refused_licenses_are_shown_until_replaced_or_removed() {
        let f = fixture();
        let update = Update {
            nonce: "n-1".into(),
            revision: 2,
            upserted: vec![
                wire("a", signed(&f.stranger, "A"), 100, 1),
                wire("b", signed(&f.stranger, "B"), 100, 2),
            ],
            ..Default::default()
        };
        f.applier.handle(&update).await;
        let status = f.applier.status.borrow().clone();
        assert_eq!(
            status.rejected_licenses.keys().collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(
            status.rejection_summary().unwrap(),
            "2 licenses received from the control plane rejected: a (revision 1): validation failed: \
             the signature does not verify with the 1 trusted key; and 1 more (see rejected_licenses)"
        );

        let update = Update {
            nonce: "n-2".into(),
            revision: 4,
            upserted: vec![wire("a", signed(&f.trusted, "A"), 200, 3)],
            removed: vec!["b".into()],
            ..Default::default()
        };
        f.applier.handle(&update).await;
        let status = f.applier.status.borrow().clone();
        assert!(status.rejected_licenses.is_empty(), "{status:?}");
        assert_eq!(status.rejection_summary(), None);
    }

    #[tokio::test]
    async fn all_good_is_acked_and_removal_of_the_last_license_removes_the_file() {
        let f = fixture();
        let older = signed(&f.trusted, "Older");
        let newer = signed(&f.trusted, "Newer");
        let update = Update {
            nonce: "n-1".into(),
            revision: 2,
            upserted: vec![
                wire("a", older.clone(), 100, 1),
                wire("b", newer.clone(), 200, 2),
            ],
            removed: vec![],
            ..Default::default()
        };
        let reply = f.applier.handle(&update).await;
        assert!(
            matches!(reply.message, Some(data_plane_message::Message::Ack(Ack { ref nonce })) if nonce == "n-1")
        );
        assert_eq!(std::fs::read_to_string(&f.path).unwrap(), newer);

        let update = Update {
            nonce: "n-2".into(),
            revision: 3,
            upserted: vec![],
            removed: vec!["b".into(), "never-held".into()],
            ..Default::default()
        };
        f.applier.handle(&update).await;
        assert_eq!(std::fs::read_to_string(&f.path).unwrap(), older);

        let update = Update {
            nonce: "n-3".into(),
            revision: 4,
            upserted: vec![],
            removed: vec!["a".into()],
            ..Default::default()
        };
        f.applier.handle(&update).await;
        assert!(!f.path.exists());
        assert!(f.store.snapshot().licenses.is_empty());
    }

    #[tokio::test]
    async fn a_rejected_new_version_keeps_the_old_one() {
        let f = fixture();
        let v1 = signed(&f.trusted, "V1");
        let update = Update {
            nonce: "1".into(),
            revision: 1,
            upserted: vec![wire("a", v1.clone(), 100, 1)],
            removed: vec![],
            ..Default::default()
        };
        f.applier.handle(&update).await;
        let update = Update {
            nonce: "2".into(),
            revision: 2,
            upserted: vec![wire("a", signed(&f.stranger, "V2"), 200, 2)],
            removed: vec![],
            ..Default::default()
        };
        f.applier.handle(&update).await;
        let held = f.store.snapshot();
        assert_eq!(held.get("a").unwrap().revision, 1);
        assert_eq!(std::fs::read_to_string(&f.path).unwrap(), v1);
    }

    #[tokio::test]
    async fn a_license_sent_again_unchanged_is_counted_as_resent() {
        let f = fixture();
        let doc = signed(&f.trusted, "Held");
        let update = |nonce: &str, upserted| Update {
            nonce: nonce.into(),
            revision: 2,
            upserted,
            removed: vec![],
            ..Default::default()
        };
        f.applier
            .handle(&update("1", vec![wire("a", doc.clone(), 100, 2)]))
            .await;
        assert_eq!(f.applier.status.borrow().licenses_resent, 0);
        // A new revision of the same document is news; the same revision again is not.
        let again = vec![
            wire("a", doc.clone(), 100, 2),
            wire("b", signed(&f.trusted, "New"), 100, 2),
        ];
        f.applier.handle(&update("2", again)).await;
        f.applier
            .handle(&update("3", vec![wire("a", doc, 100, 3)]))
            .await;
        assert_eq!(f.applier.status.borrow().licenses_resent, 1);
    }

    #[tokio::test]
    async fn a_state_that_cannot_be_saved_is_nacked_for_a_retry_and_nothing_changes() {
        let f = fixture();
        f.store.set_failing(true);
        let update = Update {
            nonce: "n".into(),
            revision: 1,
            upserted: vec![wire("a", signed(&f.trusted, "A"), 1, 1)],
            removed: vec![],
            ..Default::default()
        };
        let reply = f.applier.handle(&update).await;
        let Some(data_plane_message::Message::Nack(nack)) = &reply.message else {
            panic!("expected a Nack, got {reply:?}");
        };
        assert!(nack.rejected.is_empty(), "a retry Nack names no license");
        assert!(
            nack.reason.contains("could not save its state"),
            "{}",
            nack.reason
        );
        assert!(!f.path.exists(), "nothing is served that was not persisted");
        assert_eq!(f.applier.state.borrow().revision, 0);
        assert_eq!(
            f.applier.status.borrow().apply_error.as_deref(),
            Some(nack.reason.as_str())
        );

        // The control plane sends it again once the disk is back: applied, error cleared.
        f.store.set_failing(false);
        let reply = f.applier.handle(&update).await;
        assert!(
            matches!(reply.message, Some(data_plane_message::Message::Ack(_))),
            "{reply:?}"
        );
        assert_eq!(f.applier.status.borrow().apply_error, None);
        assert_eq!(f.applier.status.borrow().licenses_resent, 0);
    }

    #[tokio::test]
    async fn a_license_file_that_cannot_be_written_is_nacked_for_a_retry_and_retried() {
        let mut f = fixture();
        // A path under a regular file: unwritable for root too.
        let blocker = f._dir.path().join("blocker");
        std::fs::write(&blocker, b"").unwrap();
        let path = blocker.join("license.json");
        f.applier.output = Some(LicenseFile::new(&path, &[], Duration::from_secs(1)));
        let doc = signed(&f.trusted, "A");
        let update = Update {
            nonce: "n".into(),
            revision: 1,
            upserted: vec![wire("a", doc.clone(), 1, 1)],
            removed: vec![],
            ..Default::default()
        };
        let reply = f.applier.handle(&update).await;
        let Some(data_plane_message::Message::Nack(nack)) = &reply.message else {
            panic!("expected a Nack, got {reply:?}");
        };
        assert!(nack.rejected.is_empty(), "a retry Nack names no license");
        assert!(
            nack.reason.contains("could not write its license file")
                && nack.reason.contains("blocker/license.json"),
            "{}",
            nack.reason
        );
        let status = f.applier.status.borrow().clone();
        assert!(!status.license_file_in_line && !status.ready());
        assert!(status.license_file_error.is_some(), "{status:?}");
        // The license itself is good and kept.
        assert_eq!(f.store.snapshot().licenses.len(), 1);

        assert!(f.applier.retry_output().await.is_err(), "still blocked");
        std::fs::remove_file(&blocker).unwrap();
        f.applier.retry_output().await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), doc);
        let status = f.applier.status.borrow().clone();
        assert!(status.license_file_in_line, "{status:?}");
        assert_eq!(status.license_file_error, None);

        // The control plane's retry of the same update is answered and not counted as waste.
        let reply = f.applier.handle(&update).await;
        assert!(
            matches!(reply.message, Some(data_plane_message::Message::Ack(_))),
            "{reply:?}"
        );
        let status = f.applier.status.borrow().clone();
        assert_eq!((status.apply_error, status.licenses_resent), (None, 0));
    }
}

#[cfg(test)]
mod key_policy_tests {
    use std::sync::Arc;

    use licsync_common::license::{SigningKey, TrustedKeys};
    use licsync_common::proto::{License as WireLicense, Update, data_plane_message};
    use tokio::sync::watch;

    use super::Applier;
    use crate::state::{DpState, MemoryStateStore};
    use crate::sync::status::SyncStatus;

    fn applier(keys: &SigningKey, follow_control_plane_keys: bool) -> Applier {
        Applier {
            store: Arc::new(MemoryStateStore::default()),
            output: None,
            keys: TrustedKeys::parse(&[keys.public_key_base64()]).unwrap(),
            follow_control_plane_keys,
            rule: crate::state::ActiveRule::default(),
            state: watch::channel(Arc::new(DpState::default())).0,
            status: watch::channel(SyncStatus::default()).0,
        }
    }

    fn rotated_update(new_key: &SigningKey) -> Update {
        Update {
            nonce: "n".into(),
            revision: 1,
            upserted: vec![WireLicense {
                id: "rotated".into(),
                document: super::tests::signed(new_key, "Rotated Corp"),
                created_at: 1,
                updated_at: 1,
                revision: 1,
            }],
            removed: vec![],
            trusted_license_keys: vec![new_key.public_key_base64()],
        }
    }

    #[tokio::test]
    async fn keys_sent_by_the_control_plane_follow_a_rotation_when_opted_in() {
        let (old, _) = SigningKey::generate().unwrap();
        let (new, _) = SigningKey::generate().unwrap();
        let reply = applier(&old, true).handle(&rotated_update(&new)).await;
        assert!(
            matches!(reply.message, Some(data_plane_message::Message::Ack(_))),
            "{reply:?}"
        );
    }

    #[tokio::test]
    async fn by_default_keys_sent_by_the_control_plane_are_ignored() {
        let (old, _) = SigningKey::generate().unwrap();
        let (new, _) = SigningKey::generate().unwrap();
        let reply = applier(&old, false).handle(&rotated_update(&new)).await;
        let Some(data_plane_message::Message::Nack(nack)) = reply.message else {
            panic!("expected a Nack, got {reply:?}");
        };
        assert_eq!(
            nack.rejected[0].reason,
            "validation failed: the signature does not verify with the 1 trusted key"
        );
    }
}
