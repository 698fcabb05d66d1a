//! Which held license a gateway uses: Kong hybrid mode's rule, once, for both binaries.
//!
//! The agent writes the chosen license to the gateway; the control plane predicts the same
//! choice (for entitlement, and to show which license each data plane serves). Written twice,
//! the two drifted in their tie-breaks; so both call [`choose`] here.
//!
//! The rule: the newest `updated_at` wins; a tie goes to the license written last at the
//! control plane (the higher revision), then to the higher id, so every data plane holding the
//! same set makes the same choice. Kong's ingress controller once switched gateways to an
//! expired license because it had the newer `updated_at`; Kong's rule is kept by default, but
//! the case is reported ([`Choice::expired_over_in_force`]) and, with `prefer_in_force`, the
//! newest license that is still in force is chosen instead.

/// What the rule compares: `updated_at` (Unix seconds), then the control-plane revision, then
/// the id (any `Ord` form of it: a UUID's byte order and its lowercase hyphenated text sort
/// alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rank<I> {
    pub updated_at: i64,
    pub revision: u64,
    pub id: I,
}

/// The outcome of the rule over a set of held licenses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice<T> {
    /// The license to serve; `None` when nothing is held.
    pub active: Option<T>,
    /// The newest license, when it has expired while an older held one is still in force: the
    /// situation that deserves a warning whichever license is served.
    pub expired_over_in_force: Option<T>,
}

/// Applies the rule to `items`. `in_force` says whether a license is in force today;
/// `prefer_in_force` serves the newest license in force rather than a newer expired one.
pub fn choose<T: Copy, I: Ord>(
    items: impl IntoIterator<Item = T>,
    rank: impl Fn(T) -> Rank<I>,
    in_force: impl Fn(T) -> bool,
    prefer_in_force: bool,
) -> Choice<T> {
    let mut newest: Option<T> = None;
    let mut newest_in_force: Option<T> = None;
    for item in items {
        if newest.is_none_or(|best| rank(item) > rank(best)) {
            newest = Some(item);
        }
        if in_force(item) && newest_in_force.is_none_or(|best| rank(item) > rank(best)) {
            newest_in_force = Some(item);
        }
    }
    match (newest, newest_in_force) {
        (Some(newest), Some(in_force_one)) if !in_force(newest) => Choice {
            active: Some(if prefer_in_force {
                in_force_one
            } else {
                newest
            }),
            expired_over_in_force: Some(newest),
        },
        (newest, _) => Choice {
            active: newest,
            expired_over_in_force: None,
        },
    }
}

/// [`choose`] with Kong's rule alone, where expiry does not matter (or is unknown).
pub fn newest<T: Copy, I: Ord>(
    items: impl IntoIterator<Item = T>,
    rank: impl Fn(T) -> Rank<I>,
) -> Option<T> {
    choose(items, rank, |_| true, false).active
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (id, updated_at, revision, in force)
    type L = (&'static str, i64, u64, bool);

    fn rank(l: &L) -> Rank<&'static str> {
        Rank {
            updated_at: l.1,
            revision: l.2,
            id: l.0,
        }
    }

    fn pick(held: &[L], prefer: bool) -> (Option<&'static str>, Option<&'static str>) {
        let choice = choose(held, rank, |l| l.3, prefer);
        (
            choice.active.map(|l| l.0),
            choice.expired_over_in_force.map(|l| l.0),
        )
    }

    #[test]
    fn newest_then_last_written_then_highest_id() {
        assert_eq!(pick(&[], false), (None, None));
        let held = [("b", 100, 5, true), ("a", 200, 3, true)];
        assert_eq!(pick(&held, false).0, Some("a"), "newest updated_at wins");
        let held = [("a", 200, 3, true), ("c", 200, 4, true)];
        assert_eq!(
            pick(&held, false).0,
            Some("c"),
            "a tie goes to the higher revision"
        );
        let held = [("d", 200, 4, true), ("c", 200, 4, true)];
        assert_eq!(pick(&held, false).0, Some("d"), "then to the higher id");
        assert_eq!(newest(&held, rank).map(|l| l.0), Some("d"));
    }

    #[test]
    fn a_newer_expired_license_is_reported_and_kept_unless_in_force_is_preferred() {
        let held = [("old", 100, 1, true), ("new", 200, 2, false)];
        assert_eq!(
            pick(&held, false),
            (Some("new"), Some("new")),
            "Kong's rule"
        );
        assert_eq!(pick(&held, true), (Some("old"), Some("new")));
        // The newest in force is preferred among several in force.
        let held = [
            ("older", 50, 1, true),
            ("old", 100, 2, true),
            ("new", 200, 3, false),
        ];
        assert_eq!(pick(&held, true), (Some("old"), Some("new")));
    }

    #[test]
    fn nothing_to_report_when_the_newest_is_in_force_or_nothing_is() {
        let held = [("old", 100, 1, false), ("new", 200, 2, true)];
        assert_eq!(pick(&held, true), (Some("new"), None));
        let held = [("old", 100, 1, false), ("new", 200, 2, false)];
        assert_eq!(
            pick(&held, true),
            (Some("new"), None),
            "all expired: Kong's rule"
        );
    }
}
