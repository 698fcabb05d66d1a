//! Simulated data planes: thousands of the agent's real [`SyncClient`]s in this process, each
//! with its own TLS connection, client certificate and in-memory state store, and a probe per
//! client that timestamps what it applies.
//!
//! A scenario announces what it waits for with [`SimulatedFleet::expect`] *before* it makes
//! the change (so no arrival can be missed), then makes the change and waits on the returned
//! [`Progress`]. Each probe watches its client's published state (`licenses()`), which the
//! client updates right after persisting an update and before answering it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use licsync_dp::cluster::ClusterUrl;
use licsync_dp::state::{DpState, MemoryStateStore};
use licsync_dp::sync::{SyncClient, SyncSettings, SyncStatus};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What every data plane is expected to reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Holding license `id` with exactly `document`.
    Document { id: String, document: String },
    /// Having applied one more update than when the expectation was announced.
    NextUpdate,
}

/// How many data planes reached an expectation, and when.
#[derive(Debug)]
pub struct Progress {
    expected: usize,
    arrived: AtomicUsize,
    times: Mutex<Vec<Instant>>,
    all: Notify,
}

impl Progress {
    fn new(expected: usize) -> Arc<Self> {
        Arc::new(Self {
            expected,
            arrived: AtomicUsize::new(0),
            times: Mutex::new(Vec::with_capacity(expected)),
            all: Notify::new(),
        })
    }

    fn arrive(&self) {
        let now = Instant::now();
        self.times
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(now);
        if self.arrived.fetch_add(1, Ordering::SeqCst) + 1 == self.expected {
            self.all.notify_one();
        }
    }

    /// How many data planes take part.
    pub fn expected(&self) -> usize {
        self.expected
    }

    /// Each arrival so far.
    pub fn times(&self) -> Vec<Instant> {
        self.times.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How many data planes have arrived so far.
    pub fn arrived(&self) -> usize {
        self.arrived.load(Ordering::SeqCst)
    }

    /// Waits until every data plane arrived (`true`) or `deadline` passed (`false`).
    pub async fn wait_all(&self, deadline: Instant) -> bool {
        if self.arrived() >= self.expected {
            return true;
        }
        // `notify_one` keeps a permit when nobody waits yet, so no arrival is lost.
        tokio::time::timeout_at(deadline, self.all.notified())
            .await
            .is_ok()
            || self.arrived() >= self.expected
    }

    /// Time from `since` to each arrival.
    pub fn latencies(&self, since: Instant) -> Vec<Duration> {
        self.times
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|t| t.saturating_duration_since(since))
            .collect()
    }

    /// The last arrival, if any.
    pub fn last(&self) -> Option<Instant> {
        self.times
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .max()
            .copied()
    }
}

#[derive(Debug)]
struct Target {
    expect: Expect,
    /// Only the data planes whose first server is this URL take part (`None`: all).
    members: Option<String>,
    progress: Arc<Progress>,
}

/// How the initial connection of a fleet went.
#[derive(Debug, Clone, Copy)]
pub struct Connected {
    /// From the first client started to the last initial update applied.
    pub elapsed: Duration,
    /// Clients that applied their initial update within the deadline.
    pub synced: usize,
}

/// Running simulated data planes.
pub struct SimulatedFleet {
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    status: Vec<watch::Receiver<SyncStatus>>,
    licenses: Vec<watch::Receiver<Arc<DpState>>>,
    /// Each client's first server (its `cluster_url`).
    first_servers: Vec<String>,
    targets: watch::Sender<Option<Arc<Target>>>,
}

impl SimulatedFleet {
    /// Starts one sync client per entry of `settings` (with its `sync.servers`, empty for just
    /// the settings' URL), at most `concurrency` of them between start and initial update at a
    /// time (0: no limit), and waits until each has applied the control plane's first update or
    /// `timeout` passed.
    pub async fn connect(
        settings: Vec<(SyncSettings, Vec<ClusterUrl>)>,
        concurrency: usize,
        timeout: Duration,
    ) -> anyhow::Result<(Self, Connected)> {
        let count = settings.len();
        let shutdown = CancellationToken::new();
        let (targets, _) = watch::channel(None);
        let mut fleet = Self {
            shutdown,
            tasks: Vec::with_capacity(count * 2),
            status: Vec::with_capacity(count),
            licenses: Vec::with_capacity(count),
            first_servers: Vec::with_capacity(count),
            targets,
        };
        let initial = Progress::new(count);
        let permits = Arc::new(Semaphore::new(if concurrency == 0 {
            Semaphore::MAX_PERMITS
        } else {
            concurrency
        }));
        let started = Instant::now();
        let deadline = started + timeout;
        for (settings, servers) in settings {
            let permit =
                match tokio::time::timeout_at(deadline, permits.clone().acquire_owned()).await {
                    Ok(Ok(permit)) => Some(permit),
                    // Out of time: start the rest without waiting; they will be counted as late.
                    _ => None,
                };
            fleet
                .start_one(settings, servers, initial.clone(), permit)
                .await?;
        }
        initial.wait_all(deadline).await;
        let elapsed = initial
            .last()
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(started));
        let connected = Connected {
            elapsed,
            synced: initial.arrived(),
        };
        Ok((fleet, connected))
    }

    async fn start_one(
        &mut self,
        settings: SyncSettings,
        servers: Vec<ClusterUrl>,
        initial: Arc<Progress>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> anyhow::Result<()> {
        let id = settings.dataplane_id.clone();
        let first_server = settings.cluster_url.to_string();
        let mut client = SyncClient::new(settings, Arc::new(MemoryStateStore::default()), None)
            .with_context(|| format!("sync client for data plane {id}"))?
            .with_servers(servers);
        client
            .load()
            .await
            .with_context(|| format!("loading the state of data plane {id}"))?;
        let mut licenses = client.licenses();
        // What `load` published is not an update from the control plane.
        licenses.borrow_and_update();
        self.status.push(client.status());
        self.licenses.push(licenses.clone());
        self.first_servers.push(first_server.clone());
        let targets = self.targets.subscribe();
        let shutdown = self.shutdown.clone();
        self.tasks.push(tokio::spawn(probe(
            first_server,
            licenses,
            targets,
            initial,
            permit,
            shutdown.clone(),
        )));
        self.tasks.push(tokio::spawn(async move {
            // Only a state store failure ends `run` early, and memory stores do not fail.
            let _ = client.run(shutdown).await;
        }));
        Ok(())
    }

    /// Announces what every data plane should reach next; returns its progress. Make the
    /// change only after this returns. For [`Expect::NextUpdate`], give the probes a moment to
    /// take note (`settle`) before anything can reach a data plane.
    pub async fn expect(&self, expect: Expect, settle: Duration) -> Arc<Progress> {
        self.expect_some(expect, None, settle).await
    }

    /// [`SimulatedFleet::expect`] for the data planes whose first server is `members` only
    /// (`None`: all).
    pub async fn expect_some(
        &self,
        expect: Expect,
        members: Option<String>,
        settle: Duration,
    ) -> Arc<Progress> {
        let expected = match &members {
            None => self.first_servers.len(),
            Some(url) => self.first_servers.iter().filter(|s| *s == url).count(),
        };
        let progress = Progress::new(expected);
        self.targets.send_replace(Some(Arc::new(Target {
            expect,
            members,
            progress: progress.clone(),
        })));
        tokio::time::sleep(settle).await;
        progress
    }

    pub fn len(&self) -> usize {
        self.licenses.len()
    }

    pub fn is_empty(&self) -> bool {
        self.licenses.is_empty()
    }

    /// Clients with an open stream now.
    pub fn connected(&self) -> usize {
        self.status.iter().filter(|s| s.borrow().connected).count()
    }

    /// Why the clients that are not connected failed last, and how many failed that way.
    pub fn failures(&self) -> BTreeMap<String, usize> {
        let mut failures = BTreeMap::new();
        for status in &self.status {
            let status = status.borrow();
            if let (false, Some(error)) = (status.connected, &status.last_error) {
                *failures.entry(error.clone()).or_default() += 1;
            }
        }
        failures
    }

    /// Licenses received, over every client, that were already held at the same revision with
    /// the same document ([`SyncStatus::licenses_resent`]).
    pub fn licenses_resent(&self) -> u64 {
        self.status.iter().map(|s| s.borrow().licenses_resent).sum()
    }

    /// What each client holds: `(id, revision)` of every license, in client order.
    pub fn held(&self) -> Vec<Vec<(String, u64)>> {
        self.licenses
            .iter()
            .map(|l| {
                l.borrow()
                    .licenses
                    .iter()
                    .map(|h| (h.id.clone(), h.revision))
                    .collect()
            })
            .collect()
    }

    /// Stops every client (closing its connection) and probe.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let deadline = Instant::now() + Duration::from_secs(30);
        for task in std::mem::take(&mut self.tasks) {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for SimulatedFleet {
    /// A fleet dropped on an error path stops too.
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Watches one client: its first applied update (the answer to `Hello`) arrives at `initial`,
/// then each announced expectation when its state reaches it.
async fn probe(
    first_server: String,
    mut licenses: watch::Receiver<Arc<DpState>>,
    mut targets: watch::Receiver<Option<Arc<Target>>>,
    initial: Arc<Progress>,
    permit: Option<OwnedSemaphorePermit>,
    shutdown: CancellationToken,
) {
    tokio::select! {
        () = shutdown.cancelled() => return,
        changed = licenses.changed() => if changed.is_err() { return },
    }
    licenses.borrow_and_update();
    initial.arrive();
    drop(permit);

    let mut current: Option<Arc<Target>> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = targets.changed() => {
                if changed.is_err() {
                    return;
                }
                current = targets
                    .borrow_and_update()
                    .clone()
                    .filter(|t| t.members.as_ref().is_none_or(|m| *m == first_server));
                match current.as_deref() {
                    Some(Target { expect: Expect::NextUpdate, .. }) => {
                        licenses.borrow_and_update();
                    }
                    // Both changes may have been ready at once; look at the state as it is.
                    Some(target) if reached(target, &licenses.borrow()) => {
                        target.progress.arrive();
                        current = None;
                    }
                    _ => {}
                }
            }
            changed = licenses.changed() => {
                if changed.is_err() {
                    return;
                }
                let state = licenses.borrow_and_update().clone();
                if let Some(target) = current.as_deref()
                    && (target.expect == Expect::NextUpdate || reached(target, &state))
                {
                    target.progress.arrive();
                    current = None;
                }
            }
        }
    }
}

fn reached(target: &Target, state: &DpState) -> bool {
    match &target.expect {
        Expect::Document { id, document } => state.get(id).is_some_and(|l| &l.document == document),
        Expect::NextUpdate => false,
    }
}
