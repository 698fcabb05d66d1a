//! Kong's version compatibility rule for hybrid mode: a data plane may run an older minor
//! release of the same major version as its control plane, never a newer minor or another
//! major. A data plane outside the rule stays connected (its heartbeats keep `last_seen`
//! fresh, so the operator sees it) but is sent no update, because it may not understand what
//! this control plane would send; `sync_status` says `version_incompatible`.

/// Why a data plane's version is outside the rule; the text goes to the log and names the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Incompatible {
    #[error(
        "data plane version '{dataplane}' is not MAJOR.MINOR.PATCH; upgrade the data plane to a licsync {cp_major}.x release"
    )]
    Unparseable { dataplane: String, cp_major: u64 },
    #[error(
        "data plane major version {dataplane} differs from the control plane's {control_plane}; run a licsync {control_plane}.x data plane"
    )]
    Major { dataplane: u64, control_plane: u64 },
    #[error(
        "data plane minor version {dataplane} is newer than the control plane's {control_plane}; upgrade the control plane first"
    )]
    NewerMinor { dataplane: u64, control_plane: u64 },
}

/// `MAJOR.MINOR` of a `MAJOR.MINOR[.PATCH][-pre][+build]` version, a leading `v` allowed.
fn major_minor(version: &str) -> Option<(u64, u64)> {
    let version = version.trim();
    let version = version.strip_prefix('v').unwrap_or(version);
    let core = version.split(['-', '+']).next()?;
    let mut parts = core.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Whether a data plane at `dataplane` may be synced by a control plane at `control_plane`.
pub fn check(dataplane: &str, control_plane: &str) -> Result<(), Incompatible> {
    // This control plane's own version always parses (it is the crate version).
    let (cp_major, cp_minor) = major_minor(control_plane).unwrap_or((0, 0));
    let Some((dp_major, dp_minor)) = major_minor(dataplane) else {
        return Err(Incompatible::Unparseable {
            dataplane: dataplane.chars().take(64).collect(),
            cp_major,
        });
    };
    if dp_major != cp_major {
        return Err(Incompatible::Major {
            dataplane: dp_major,
            control_plane: cp_major,
        });
    }
    if dp_minor > cp_minor {
        return Err(Incompatible::NewerMinor {
            dataplane: dp_minor,
            control_plane: cp_minor,
        });
    }
    Ok(())
}

/// [`check`] against this build of the control plane.
pub fn check_current(dataplane: &str) -> Result<(), Incompatible> {
    check(dataplane, licsync_common::VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_major_and_older_or_equal_minor_is_compatible() {
        for dp in ["3.4.0", "3.4.9", "3.0.0", "v3.2.1", "3.4.1-rc.1", "3.4"] {
            assert_eq!(check(dp, "3.4.2"), Ok(()), "{dp}");
        }
    }

    #[test]
    fn newer_minor_other_major_and_garbage_are_not() {
        assert_eq!(
            check("3.5.0", "3.4.2"),
            Err(Incompatible::NewerMinor {
                dataplane: 5,
                control_plane: 4
            })
        );
        assert_eq!(
            check("99.0.0", "0.1.0"),
            Err(Incompatible::Major {
                dataplane: 99,
                control_plane: 0
            })
        );
        assert!(matches!(
            check("2.9.9", "3.4.2"),
            Err(Incompatible::Major { .. })
        ));
        for garbage in ["", "latest", "3", "a.b.c"] {
            let err = check(garbage, "3.4.2").unwrap_err();
            assert!(matches!(err, Incompatible::Unparseable { .. }), "{garbage}");
            assert!(err.to_string().contains("3.x"), "{err}");
        }
    }

    #[test]
    fn this_build_accepts_itself() {
        assert_eq!(check_current(licsync_common::VERSION), Ok(()));
    }
}
