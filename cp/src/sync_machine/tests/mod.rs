//! The stream rule with explicit instants: every timeout is reached by passing a later `now`,
//! never by waiting, so these tests cannot be slowed or flaked by a busy machine.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use licsync_common::pki::sha256_hex;
use tokio::time::Instant;
use uuid::Uuid;

use super::*;
use crate::model::StoredLicense;

mod answers;

const ACK: Duration = Duration::from_secs(60);
const SECOND: Duration = Duration::from_secs(1);

fn license(n: u128, revision: Revision) -> Arc<StoredLicense> {
    Arc::new(StoredLicense {
        id: Uuid::from_u128(n),
        document: format!("license {n} at {revision}"),
        signature: format!("{n:x}{revision:x}"),
        created_at: 1_000,
        updated_at: 1_000 + i64::try_from(revision).unwrap_or(0),
        revision,
    })
}

fn set(revision: Revision, licenses: &[Arc<StoredLicense>]) -> Arc<LicenseSet> {
    Arc::new(LicenseSet {
        revision,
        licenses: licenses
            .iter()
            .map(|l| (l.id, l.clone()))
            .collect::<BTreeMap<_, _>>(),
        committed_at: None,
    })
}

/// A machine whose data plane said it holds `held`, opened on `first`; returns what it sent.
fn opened(
    t0: Instant,
    held: HashMap<Uuid, Held>,
    first: Arc<LicenseSet>,
) -> (SyncMachine, Vec<Action>) {
    let mut machine = SyncMachine::new(t0, ACK);
    assert_eq!(machine.on_hello(t0, held), []);
    let sent = machine.open(t0, true, first);
    (machine, sent)
}

fn update(actions: &[Action]) -> &Update {
    match actions {
        [Action::Send(update)] | [_, Action::Send(update)] => update,
        other => panic!("expected one update, got {other:?}"),
    }
}

fn ids(update: &Update) -> Vec<(Uuid, Revision)> {
    update.upserted.iter().map(|l| (l.id, l.revision)).collect()
}

#[test]
fn a_stream_without_hello_ends_at_hello_timeout_and_takes_nothing_after() {
    let t0 = Instant::now();
    let mut machine = SyncMachine::new(t0, ACK);
    assert_eq!(machine.deadline(), Some(t0 + HELLO_TIMEOUT));
    assert_eq!(machine.on_tick(t0 + HELLO_TIMEOUT - SECOND), []);
    assert_eq!(
        machine.on_tick(t0 + HELLO_TIMEOUT),
        [Action::End(End::HelloTimeout)]
    );
    assert_eq!(machine.deadline(), None);
    assert_eq!(machine.on_hello(t0 + HELLO_TIMEOUT, HashMap::new()), []);
    assert_eq!(machine.open(t0 + HELLO_TIMEOUT, true, set(1, &[])), []);
}

#[test]
fn a_hello_arriving_after_hello_timeout_is_too_late() {
    let t0 = Instant::now();
    let mut machine = SyncMachine::new(t0, ACK);
    let late = machine.on_hello(t0 + HELLO_TIMEOUT, HashMap::new());
    assert_eq!(late, [Action::End(End::HelloTimeout)]);
    assert_eq!(machine.open(t0 + HELLO_TIMEOUT, true, set(1, &[])), []);
}

#[test]
fn the_hello_is_answered_with_only_what_the_data_plane_lacks() {
    let (a, b, c) = (license(1, 3), license(2, 4), license(3, 5));
    let held = HashMap::from([
        // Same revision and document: kept.
        (
            a.id,
            Held {
                revision: 3,
                digest: Some(sha256_hex(a.document.as_bytes())),
            },
        ),
        // Same revision, another document (a restored control plane): sent again.
        (
            b.id,
            Held {
                revision: 4,
                digest: Some("00".repeat(32)),
            },
        ),
        // Gone from the set: removed.
        (
            Uuid::from_u128(9),
            Held {
                revision: 1,
                digest: None,
            },
        ),
    ]);
    let (machine, sent) = opened(Instant::now(), held, set(5, &[a, b.clone(), c.clone()]));
    let sent = update(&sent);
    assert_eq!(sent.nonce, "5-1");
    assert_eq!(ids(sent), [(b.id, 4), (c.id, 5)]);
    assert_eq!(sent.removed, [Uuid::from_u128(9)]);
    assert_eq!(machine.held(), 3);
}

#[test]
fn an_up_to_date_data_plane_still_gets_an_empty_first_update_but_no_empty_later_ones() {
    let t0 = Instant::now();
    let (mut machine, sent) = opened(t0, HashMap::new(), set(7, &[]));
    let first = update(&sent).clone();
    assert!(first.upserted.is_empty() && first.removed.is_empty());
    assert!(matches!(
        machine.on_ack(t0, &first.nonce)[..],
        [Action::Acked { .. }]
    ));
    // A write that changes nothing this data plane lacks sends nothing.
    assert_eq!(machine.on_set_changed(t0, set(8, &[])), []);
    assert_eq!(machine.deadline(), None);
}

#[test]
fn an_unanswered_update_ends_the_stream_at_the_ack_timeout() {
    let t0 = Instant::now();
    let (mut machine, sent) = opened(t0, HashMap::new(), set(2, &[license(1, 2)]));
    let nonce = update(&sent).nonce.clone();
    assert_eq!(machine.deadline(), Some(t0 + ACK));
    assert_eq!(machine.on_tick(t0 + ACK - SECOND), []);
    assert_eq!(
        machine.on_tick(t0 + ACK),
        [Action::End(End::AckTimeout {
            nonce,
            timeout: ACK
        })]
    );
    assert_eq!(machine.deadline(), None);
    assert_eq!(machine.on_heartbeat(t0 + ACK), []);
}

#[test]
fn an_ack_after_the_timeout_is_ignored() {
    let t0 = Instant::now();
    let (mut machine, sent) = opened(t0, HashMap::new(), set(2, &[license(1, 2)]));
    let nonce = update(&sent).nonce.clone();
    // The answer and the deadline arrive together: the timeout wins, the answer counts for
    // nothing.
    let late = machine.on_ack(t0 + ACK, &nonce);
    assert_eq!(
        late,
        [Action::End(End::AckTimeout {
            nonce: nonce.clone(),
            timeout: ACK
        })]
    );
    assert_eq!(machine.on_ack(t0 + ACK + SECOND, &nonce), []);
    assert_eq!(machine.on_set_changed(t0 + ACK, set(3, &[])), []);
}

#[test]
fn a_burst_of_writes_during_an_update_coalesces_into_one_update_from_the_newest_set() {
    let t0 = Instant::now();
    let a = license(1, 1);
    let (mut machine, sent) = opened(t0, HashMap::new(), set(1, std::slice::from_ref(&a)));
    let first = update(&sent).nonce.clone();
    let mut licenses = vec![a];
    for n in 2..=6u64 {
        licenses.push(license(u128::from(n), n));
        let at = t0 + SECOND * u32::try_from(n).unwrap_or(0);
        assert_eq!(
            machine.on_set_changed(at, set(n, &licenses)),
            [],
            "write {n}"
        );
    }
    // The ack deadline is the first update's, not pushed back by the writes.
    assert_eq!(machine.deadline(), Some(t0 + ACK));
    let answered = machine.on_ack(t0 + 10 * SECOND, &first);
    assert_eq!(answered.len(), 2, "{answered:?}");
    assert!(matches!(&answered[0], Action::Acked { nonce, .. } if *nonce == first));
    let next = update(&answered);
    assert_eq!(next.revision, 6);
    assert_eq!(next.nonce, "6-2");
    let expected: Vec<_> = (2..=6u64).map(|n| (Uuid::from_u128(n.into()), n)).collect();
    assert_eq!(ids(next), expected);
    assert_eq!(machine.deadline(), Some(t0 + 10 * SECOND + ACK));
}
