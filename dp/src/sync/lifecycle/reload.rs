//! Hot reload: noticing that the registration file was replaced on disk, and deciding whether
//! the replacement can be used.
//!
//! The file is compared by content (a SHA-256 of its bytes), not by modification time: a
//! Kubernetes Secret volume swaps a symlink, `cp` keeps nothing, and the agent's own writes
//! (rotation) are recorded as known content so they never count as a replacement. A file that
//! is being copied into place may be read half-written; it is read again a moment later before
//! it is called invalid, and an invalid content is reported once, not at every check.

use std::path::{Path, PathBuf};
use std::time::Duration;

use licsync_common::{fsutil, pki};
use time::OffsetDateTime;

use crate::registration::{RegistrationError, RegistrationFile};

/// How long a changed file that does not parse is given to finish being written.
const SETTLE: Duration = Duration::from_millis(250);

/// What a look at the registration file found.
#[derive(Debug)]
pub enum Check {
    /// The content is the one already in use (or already reported invalid).
    Unchanged,
    /// A new, usable registration.
    Replaced(Box<RegistrationFile>),
    /// A new content that cannot be used; the reason is in operator words.
    Unusable(String),
}

/// The registration file as last seen.
#[derive(Debug)]
pub struct WatchedFile {
    path: PathBuf,
    /// The content in use: read at start, then each reload and each save by the agent.
    known: Option<String>,
    /// The last content reported unusable (or the last read error), so it is reported once.
    reported: Option<String>,
}

impl WatchedFile {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            known: None,
            reported: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records `text` as the content in use (the agent wrote it, or adopted it).
    pub fn remember(&mut self, text: &str) {
        self.known = Some(digest(text.as_bytes()));
        self.reported = None;
    }

    /// Reads the file and says whether it holds a new registration to switch to.
    pub async fn check(&mut self, now: OffsetDateTime) -> Check {
        let mut text = match self.read() {
            Ok(text) => text,
            Err(error) => return self.report(error.to_string()),
        };
        if Some(digest(text.as_bytes())) == self.known {
            self.reported = None;
            return Check::Unchanged;
        }
        let mut parsed = usable(&text, &self.path, now);
        if parsed.is_err() {
            // Perhaps caught half-copied: look again once it had a moment to settle.
            tokio::time::sleep(SETTLE).await;
            match self.read() {
                Ok(again) if again != text => {
                    text = again;
                    if Some(digest(text.as_bytes())) == self.known {
                        return Check::Unchanged;
                    }
                    parsed = usable(&text, &self.path, now);
                }
                Ok(_) => {}
                Err(error) => return self.report(error.to_string()),
            }
        }
        match parsed {
            Ok(file) => {
                self.remember(&text);
                Check::Replaced(Box::new(file))
            }
            Err(reason) => {
                let key = digest(text.as_bytes());
                if self.reported.as_deref() == Some(key.as_str()) {
                    return Check::Unchanged;
                }
                self.reported = Some(key);
                Check::Unusable(reason)
            }
        }
    }

    fn read(&self) -> Result<String, RegistrationError> {
        RegistrationFile::read_text(&self.path)
    }

    /// A read failure, reported once until it changes.
    fn report(&mut self, reason: String) -> Check {
        if self.reported.as_deref() == Some(reason.as_str()) {
            return Check::Unchanged;
        }
        self.reported = Some(reason.clone());
        Check::Unusable(reason)
    }
}

/// Parses `text` and checks it can be switched to at `now`: a valid registration whose
/// certificate has not expired.
pub fn usable(text: &str, path: &Path, now: OffsetDateTime) -> Result<RegistrationFile, String> {
    let file = RegistrationFile::parse(text, path).map_err(|e| e.to_string())?;
    let cert = file
        .certificate_info()
        .map_err(|e| format!("registration file {}: {e}", path.display()))?;
    if cert.not_after <= now {
        return Err(format!(
            "registration file {}: its certificate expired at {}; renew it with `licsync-dp registration renew` and copy the new file into place",
            path.display(),
            licsync_common::time_fmt::go_utc(cert.not_after)
        ));
    }
    if let Err(e) = fsutil::check_private(path) {
        tracing::warn!(event = "registration.insecure_permissions", path = %path.display(), reason = %e, "The registration file holds a private key but others can read it.");
    }
    Ok(file)
}

fn digest(bytes: &[u8]) -> String {
    pki::sha256_hex(bytes)
}

#[cfg(test)]
mod tests {
    use std::time::Duration as StdDuration;

    use super::*;
    use crate::registration::tests::sample;

    #[tokio::test(start_paused = true)]
    async fn only_new_usable_content_is_a_replacement_and_a_bad_one_is_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registration.yaml");
        let first = sample(StdDuration::from_secs(3600));
        let text = first.save(&path).unwrap();
        let mut watched = WatchedFile::new(path.clone());
        watched.remember(&text);
        let now = OffsetDateTime::now_utc();
        assert!(matches!(watched.check(now).await, Check::Unchanged));

        // Garbage: reported once, then quiet until it changes.
        std::fs::write(&path, b"dataplane_id: [").unwrap();
        match watched.check(now).await {
            Check::Unusable(reason) => assert!(reason.contains("is invalid"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(watched.check(now).await, Check::Unchanged));

        // A new valid file is a replacement, once.
        let second = sample(StdDuration::from_secs(3600));
        second.save(&path).unwrap();
        match watched.check(now).await {
            Check::Replaced(file) => assert_eq!(*file, second),
            other => panic!("{other:?}"),
        }
        assert!(matches!(watched.check(now).await, Check::Unchanged));

        // The agent's own write is not a replacement.
        let third = sample(StdDuration::from_secs(3600));
        let text = third.save(&path).unwrap();
        watched.remember(&text);
        assert!(matches!(watched.check(now).await, Check::Unchanged));

        // A vanished file is reported once.
        std::fs::remove_file(&path).unwrap();
        match watched.check(now).await {
            Check::Unusable(reason) => assert!(reason.contains("not found"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(watched.check(now).await, Check::Unchanged));
    }

    #[tokio::test]
    async fn an_expired_certificate_is_not_switched_to() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registration.yaml");
        let mut watched = WatchedFile::new(path.clone());
        sample(StdDuration::from_secs(3600)).save(&path).unwrap();
        let later = OffsetDateTime::now_utc() + time::Duration::hours(2);
        match watched.check(later).await {
            Check::Unusable(reason) => {
                assert!(reason.contains("its certificate expired at"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }
}
