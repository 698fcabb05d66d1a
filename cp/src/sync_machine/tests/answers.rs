//! The data plane's answers: refusals kept and not resent, failures resent with backoff,
//! answers naming nothing in flight ignored, heartbeats answered.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use super::{ACK, SECOND, ids, license, opened, set, update};
use crate::dataplanes::SyncStatus;
use crate::sync_machine::{Action, RETRY_INITIAL, RETRY_MAX, SyncMachine};

#[test]
fn refused_licenses_count_as_rejected_and_are_not_resent_until_they_change() {
    let t0 = Instant::now();
    let (a, b) = (license(1, 1), license(2, 2));
    let (mut machine, sent) = opened(t0, HashMap::new(), set(2, &[a.clone(), b.clone()]));
    let nonce = update(&sent).nonce.clone();
    let refused = machine.on_rejected(t0, &nonce, &[(a.id, 1)]);
    let [
        Action::Rejected {
            nonce: answered,
            synced,
        },
    ] = &refused[..]
    else {
        panic!("{refused:?}");
    };
    assert_eq!(answered, &nonce);
    assert_eq!(synced.status, SyncStatus::LicenseRejected);
    assert_eq!(
        synced.active,
        Some((b.id, b.updated_at)),
        "b counts as held"
    );

    // Another write: only the new license goes, not the refused version again.
    let c = license(3, 3);
    let sent = machine.on_set_changed(t0, set(3, &[a.clone(), b.clone(), c.clone()]));
    assert_eq!(ids(update(&sent)), [(c.id, 3)]);
    let acked = machine.on_ack(t0, &update(&sent).nonce);
    let [Action::Acked { synced, .. }] = &acked[..] else {
        panic!("{acked:?}")
    };
    assert_eq!(
        synced.status,
        SyncStatus::LicenseRejected,
        "the refusal stands"
    );

    // Its new revision is sent; accepting it clears the refusal.
    let a4 = license(1, 4);
    let sent = machine.on_set_changed(t0, set(4, &[a4.clone(), b, c]));
    assert_eq!(ids(update(&sent)), [(a4.id, 4)]);
    let acked = machine.on_ack(t0, &update(&sent).nonce);
    let [Action::Acked { synced, .. }] = &acked[..] else {
        panic!("{acked:?}")
    };
    assert_eq!(synced.status, SyncStatus::Normal);
    assert_eq!(synced.active, Some((a4.id, a4.updated_at)));
}

#[test]
fn an_update_that_could_not_be_applied_is_resent_with_doubling_delays_up_to_the_cap() {
    let t0 = Instant::now();
    let a = license(1, 1);
    let (mut machine, sent) = opened(t0, HashMap::new(), set(1, std::slice::from_ref(&a)));
    let mut nonce = update(&sent).nonce.clone();
    let mut now = t0;
    let mut delays = Vec::new();
    for _ in 0..9 {
        let failed = machine.on_apply_failed(now, &nonce);
        let [
            Action::ApplyFailed {
                retry_in,
                revision: 1,
                ..
            },
        ] = failed[..]
        else {
            panic!("{failed:?}");
        };
        // The nominal delay, shortened by at most a quarter (jitter).
        let nominal = Duration::from_secs([1, 2, 4, 8, 16, 32, 60, 60, 60][delays.len()]);
        assert!(
            retry_in <= nominal && retry_in >= nominal.mul_f64(0.75),
            "{retry_in:?} against {nominal:?}"
        );
        delays.push(retry_in);
        assert_eq!(machine.deadline(), Some(now + retry_in));
        // Nothing goes before the delay, not even a newer write.
        assert_eq!(machine.on_tick(now + retry_in - SECOND / 2), []);
        now += retry_in;
        let resent = machine.on_tick(now);
        // Whole again: nothing of the failed update counts as held.
        assert_eq!(ids(update(&resent)), [(a.id, 1)]);
        nonce = update(&resent).nonce.clone();
    }
    assert_eq!(delays.len(), 9);
    assert_eq!(RETRY_MAX.as_secs(), 60);

    // An answer resets the delay.
    assert!(matches!(
        machine.on_ack(now, &nonce)[..],
        [Action::Acked { .. }]
    ));
    let b = license(2, 2);
    let sent = machine.on_set_changed(now, set(2, &[a, b]));
    let failed = machine.on_apply_failed(now, &update(&sent).nonce);
    assert!(
        matches!(failed[..], [Action::ApplyFailed { retry_in, .. }] if retry_in <= RETRY_INITIAL && retry_in >= RETRY_INITIAL.mul_f64(0.75))
    );
}

#[test]
fn a_write_during_a_retry_wait_goes_out_with_the_retry() {
    let t0 = Instant::now();
    let (a, b) = (license(1, 1), license(2, 2));
    let (mut machine, sent) = opened(t0, HashMap::new(), set(1, std::slice::from_ref(&a)));
    machine.on_apply_failed(t0, &update(&sent).nonce);
    assert_eq!(
        machine.on_set_changed(t0, set(2, &[a.clone(), b.clone()])),
        []
    );
    let resent = machine.on_tick(t0 + RETRY_INITIAL);
    assert_eq!(update(&resent).revision, 2);
    assert_eq!(ids(update(&resent)), [(a.id, 1), (b.id, 2)]);
}

#[test]
fn answers_naming_no_update_in_flight_are_ignored() {
    let t0 = Instant::now();
    let (mut machine, sent) = opened(t0, HashMap::new(), set(1, &[license(1, 1)]));
    let nonce = update(&sent).nonce.clone();
    let ignored = |n: &str| {
        vec![Action::Ignored {
            nonce: n.to_owned(),
        }]
    };
    assert_eq!(machine.on_ack(t0, "1-9"), ignored("1-9"));
    assert_eq!(
        machine.on_rejected(t0, "", &[(Uuid::nil(), 1)]),
        ignored("")
    );
    assert_eq!(machine.on_apply_failed(t0, "x"), ignored("x"));
    // The update is still in flight, with its deadline.
    assert_eq!(machine.deadline(), Some(t0 + ACK));
    assert!(matches!(
        machine.on_ack(t0, &nonce)[..],
        [Action::Acked { .. }]
    ));
    // Answering it twice: the second answer names nothing in flight.
    assert_eq!(machine.on_ack(t0, &nonce), ignored(&nonce));
}

#[test]
fn heartbeats_are_answered_and_an_incompatible_data_plane_is_sent_nothing() {
    let t0 = Instant::now();
    let mut machine = SyncMachine::new(t0, ACK);
    machine.on_hello(t0, HashMap::new());
    assert_eq!(machine.open(t0, false, set(1, &[license(1, 1)])), []);
    assert_eq!(machine.on_set_changed(t0, set(2, &[license(2, 2)])), []);
    assert_eq!(machine.deadline(), None, "no update, so no ack deadline");
    assert_eq!(
        machine.on_heartbeat(t0 + ACK * 10),
        [Action::AnswerHeartbeat]
    );
}
