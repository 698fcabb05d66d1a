//! The usage counters on disk: `<data_dir>/usage.json`, mode 0600, replaced atomically and
//! durably (temporary file, fsync, rename, directory fsync), so a crash leaves the previous
//! counts or the new ones, never a torn file.
//!
//! The file carries the **epoch**: a UUID drawn when the file is first created. Counts are
//! cumulative within an epoch, and the control plane keeps the maximum it has seen per
//! (data plane, epoch, bucket). A data dir that is wiped (or a file moved aside) starts a new
//! epoch from zero, which the control plane adds to what the old epoch reported, instead of
//! a count that restarted below what the control plane already holds and went unnoticed.
//!
//! A month outside the usage range (an older agent counted under whatever its clock said, 1970
//! included) is not refused on load, which would stop counting: it is kept apart in
//! [`UsageFile::out_of_range`] for the counter to move into [`UsageFile::held`] (see
//! [`super::counter`]).
//!
//! Its own file, not a field of `dp-state.json`: the counters are rewritten every flush
//! interval while the license state changes rarely, and a damaged counter file must never
//! stop the license from being served (nor the other way round).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use licsync_common::state_file::{self, StateFileError};
use serde::{Deserialize, Serialize};

use licsync_common::usage_month::{UsageMonth, UsageMonthError};

/// Version of the on-disk layout, written in every usage file.
pub const USAGE_FORMAT: u32 = 1;

/// What one bucket holds on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketTotals {
    /// Requests counted in this month since the epoch began, durable.
    pub request_count: u64,
    /// What the control plane last confirmed holding for this bucket (its receipt), if it
    /// ever did. Informational, and what allows an old bucket to be pruned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported: Option<u64>,
}

impl BucketTotals {
    /// The control plane has confirmed at least everything counted here.
    pub fn confirmed(&self) -> bool {
        self.reported.is_some_and(|r| r >= self.request_count)
    }
}

/// The whole `usage.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawFile", into = "RawFile")]
pub struct UsageFile {
    pub format: u32,
    /// UUID, drawn when this file was first created.
    pub epoch: String,
    /// Unix seconds when the epoch began.
    pub created_at: i64,
    /// Per UTC month, oldest first.
    pub buckets: BTreeMap<UsageMonth, BucketTotals>,
    /// Requests counted while the clock read a time outside the usage months: they belong to
    /// no month yet and are counted in the current month once the clock is right. Not
    /// reported until then.
    pub held: u64,
    /// Rows for months outside the usage range (`YYYY-MM`), written by an older agent. Kept
    /// (and written back) as found until the counter moves them into `held`.
    pub out_of_range: BTreeMap<String, BucketTotals>,
}

impl UsageFile {
    /// A new epoch with nothing counted yet.
    pub fn new_epoch(created_at: i64) -> Self {
        Self {
            format: USAGE_FORMAT,
            epoch: uuid::Uuid::new_v4().to_string(),
            created_at,
            buckets: BTreeMap::new(),
            held: 0,
            out_of_range: BTreeMap::new(),
        }
    }
}

/// `usage.json` as written: `buckets` a list of `{"bucket","request_count","reported"}` objects,
/// oldest first (what an operator reading the file expects, and the shape of the control
/// plane's report), in-range and out-of-range months together as an older agent wrote them.
#[derive(Serialize, Deserialize)]
struct RawFile {
    format: u32,
    epoch: String,
    created_at: i64,
    buckets: Vec<Row>,
    #[serde(default, skip_serializing_if = "is_zero")]
    held: u64,
}

#[derive(Serialize, Deserialize)]
struct Row {
    bucket: String,
    #[serde(flatten)]
    totals: BucketTotals,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl TryFrom<RawFile> for UsageFile {
    type Error = String;

    fn try_from(raw: RawFile) -> Result<Self, String> {
        let mut buckets = BTreeMap::new();
        let mut out_of_range = BTreeMap::new();
        for Row { bucket, totals } in raw.buckets {
            let twice = |bucket: &str| format!("bucket {bucket} appears twice");
            match bucket.parse::<UsageMonth>() {
                Ok(month) => {
                    if buckets.insert(month, totals).is_some() {
                        return Err(twice(&bucket));
                    }
                }
                Err(UsageMonthError::OutOfRange(_)) => {
                    if out_of_range.insert(bucket.clone(), totals).is_some() {
                        return Err(twice(&bucket));
                    }
                }
                Err(malformed) => return Err(malformed.to_string()),
            }
        }
        Ok(Self {
            format: raw.format,
            epoch: raw.epoch,
            created_at: raw.created_at,
            buckets,
            held: raw.held,
            out_of_range,
        })
    }
}

impl From<UsageFile> for RawFile {
    fn from(file: UsageFile) -> Self {
        // `YYYY-MM` with four-digit years sorts chronologically as text.
        let mut buckets: Vec<Row> = file
            .buckets
            .into_iter()
            .map(|(month, totals)| Row {
                bucket: month.to_string(),
                totals,
            })
            .chain(
                file.out_of_range
                    .into_iter()
                    .map(|(bucket, totals)| Row { bucket, totals }),
            )
            .collect();
        buckets.sort_by(|a, b| a.bucket.cmp(&b.bucket));
        Self {
            format: file.format,
            epoch: file.epoch,
            created_at: file.created_at,
            buckets,
            held: file.held,
        }
    }
}

/// Why the usage file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum UsageStoreError {
    #[error("cannot read usage file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "usage file {path} is damaged ({reason}); move it aside and restart: the agent then counts under a new usage epoch, and the control plane keeps what the old one reported"
    )]
    Damaged { path: PathBuf, reason: String },
    #[error(
        "usage file {path} was written by a newer licsync-dp (format {found}, this one reads {USAGE_FORMAT}); upgrade licsync-dp"
    )]
    TooNew { path: PathBuf, found: u32 },
    #[error("cannot save usage file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("the usage store is unavailable: {0}")]
    Unavailable(String),
}

/// Where the counters live between runs.
#[derive(Debug, Clone)]
pub struct UsageStore {
    path: PathBuf,
}

impl UsageStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved counters, or a new epoch (saved before it is returned, so the epoch is
    /// durable before anything is counted under it). `true` when the epoch is new.
    pub async fn load_or_create(&self, now: i64) -> Result<(UsageFile, bool), UsageStoreError> {
        let path = self.path.clone();
        let loaded = tokio::task::spawn_blocking(move || load_blocking(&path))
            .await
            .map_err(|e| UsageStoreError::Unavailable(e.to_string()))??;
        match loaded {
            Some(file) => Ok((file, false)),
            None => {
                let file = UsageFile::new_epoch(now);
                self.save(&file).await?;
                Ok((file, true))
            }
        }
    }

    /// Replaces the saved counters; durable when it returns `Ok`.
    pub async fn save(&self, file: &UsageFile) -> Result<(), UsageStoreError> {
        let path = self.path.clone();
        let written = match state_file::encode(file) {
            Ok(encoded) => tokio::task::spawn_blocking(move || state_file::write(&path, &encoded))
                .await
                .map_err(|e| UsageStoreError::Unavailable(e.to_string()))?,
            Err(e) => Err(e),
        };
        written.map_err(|e| UsageStoreError::Write {
            path: self.path.clone(),
            source: e.into_io(),
        })
    }
}

fn load_blocking(path: &Path) -> Result<Option<UsageFile>, UsageStoreError> {
    let damaged = |reason: String| UsageStoreError::Damaged {
        path: path.to_owned(),
        reason,
    };
    let file: Option<UsageFile> = state_file::load(path, USAGE_FORMAT).map_err(|e| match e {
        StateFileError::Read(source) | StateFileError::Write(source) => UsageStoreError::Read {
            path: path.to_owned(),
            source,
        },
        StateFileError::Damaged(reason) => damaged(reason),
        StateFileError::TooNew(found) => UsageStoreError::TooNew {
            path: path.to_owned(),
            found,
        },
    })?;
    if let Some(file) = &file
        && uuid::Uuid::parse_str(&file.epoch).is_err()
    {
        return Err(damaged(format!("epoch '{}' is not a UUID", file.epoch)));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[tokio::test]
    async fn a_new_file_is_a_durable_new_epoch_and_reloads_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let store = UsageStore::new(dir.path().join("data/usage.json"));
        let (mut file, created) = store.load_or_create(1_700_000_000).await.unwrap();
        assert!(created);
        assert!(uuid::Uuid::parse_str(&file.epoch).is_ok());
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);

        file.held = 4;
        file.buckets.insert(
            "2026-10".parse().unwrap(),
            BucketTotals {
                request_count: 7,
                reported: Some(5),
            },
        );
        file.buckets.insert(
            "2026-11".parse().unwrap(),
            BucketTotals {
                request_count: 3,
                reported: None,
            },
        );
        store.save(&file).await.unwrap();
        let (again, created) = UsageStore::new(store.path())
            .load_or_create(1_800_000_000)
            .await
            .unwrap();
        assert!(!created, "an existing file keeps its epoch");
        assert_eq!(again, file);
        let text = std::fs::read_to_string(store.path()).unwrap();
        assert!(
            text.find("2026-10").unwrap() < text.find("2026-11").unwrap(),
            "oldest first: {text}"
        );
    }

    /// An older agent counted under any year its clock showed: such a file still loads, the
    /// out-of-range months apart, and is written back as it was until the counter settles them.
    #[tokio::test]
    async fn months_outside_the_range_from_an_older_agent_load_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.json");
        let epoch = uuid::Uuid::new_v4();
        std::fs::write(
            &path,
            format!(
                r#"{{"format":1,"epoch":"{epoch}","created_at":1,"buckets":[
                    {{"bucket":"1970-01","request_count":2}},
                    {{"bucket":"1999-12","request_count":5}},
                    {{"bucket":"2026-11","request_count":7,"reported":7}}]}}"#
            ),
        )
        .unwrap();
        let store = UsageStore::new(&path);
        let (file, created) = store.load_or_create(1).await.unwrap();
        assert!(!created);
        assert_eq!(file.held, 0);
        assert_eq!(
            file.buckets
                .keys()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["2026-11"]
        );
        assert_eq!(
            file.out_of_range.keys().cloned().collect::<Vec<_>>(),
            ["1970-01", "1999-12"]
        );
        store.save(&file).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.find("1970-01").unwrap() < text.find("1999-12").unwrap()
                && text.find("1999-12").unwrap() < text.find("2026-11").unwrap(),
            "oldest first, nothing dropped: {text}"
        );
        assert!(!text.contains("held"), "written only when not zero: {text}");
        let (again, _) = store.load_or_create(1).await.unwrap();
        assert_eq!(again, file);
    }

    #[tokio::test]
    async fn damaged_or_newer_files_are_reported_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.json");
        let store = UsageStore::new(&path);
        let epoch = uuid::Uuid::new_v4();
        for (text, expected) in [
            ("{\"format\":1,\"epo", "move it aside"),
            (
                "{\"format\":1,\"epoch\":\"x\",\"created_at\":1,\"buckets\":[]}",
                "not a UUID",
            ),
            (
                &format!(
                    "{{\"format\":1,\"epoch\":\"{epoch}\",\"created_at\":1,\"buckets\":[{{\"bucket\":\"2026-1\",\"request_count\":1}}]}}"
                ),
                "expected YYYY-MM",
            ),
            (
                &format!(
                    "{{\"format\":1,\"epoch\":\"{epoch}\",\"created_at\":1,\"buckets\":[{{\"bucket\":\"2026-01\",\"request_count\":1}},{{\"bucket\":\"2026-01\",\"request_count\":2}}]}}"
                ),
                "appears twice",
            ),
            ("{\"format\":2}", "upgrade licsync-dp"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = store.load_or_create(1).await.unwrap_err().to_string();
            assert!(
                err.contains(expected) && err.contains("usage.json"),
                "{text}: {err}"
            );
            assert_eq!(
                std::fs::read_to_string(&path).unwrap(),
                text,
                "a damaged file is left for the operator"
            );
        }
    }
}
