//! Starting and stopping a control plane on already-bound listeners.
//!
//! `main` binds the configured addresses; tests bind `127.0.0.1:0` and call [`run`] directly, so
//! both exercise the same start-up order: open storage, load (or create) the CA and the report
//! key where the store says they live, create the bootstrap admin token, issue this node's
//! server certificate, load licenses, serve (and watch the active license's expiry and
//! entitlement), and on shutdown stop accepting, end every stream, wait for the
//! servers within [`DRAIN_DEADLINE`] and flush storage.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use licsync_common::fsutil;
use licsync_common::license::TrustedKeys;
use licsync_common::pki::CertInfo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::cluster::secrets::{ClusterSecrets, SecretHome};
use crate::cluster::server_cert::{Rotation, ServerIdentity};
use crate::cluster::{self, ca::ClusterPki};
use crate::config::{CpConfig, StorageBackend};
use crate::licenses::Licenses;
use crate::lifecycle::{self, expiry::OwnCertificates};
use crate::state::ControlPlane;
use crate::store::postgres::ConnectOptions;
use crate::store::{MemoryStore, PostgresStore, SledStore, Store};

/// How long the servers get to finish after shutdown is signalled (the deadline both binaries
/// share).
pub use licsync_common::shutdown::DRAIN_DEADLINE;

/// Why the control plane could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::Invalid),
    #[error("cannot create data_dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Storage(#[from] crate::store::StoreError),
    #[error(transparent)]
    Bootstrap(#[from] crate::principals::bootstrap::BootstrapError),
    #[error(transparent)]
    Pki(#[from] cluster::ca::CaError),
    #[error(transparent)]
    Secrets(#[from] cluster::secrets::SecretsError),
    #[error(transparent)]
    ReportKey(#[from] crate::usage::report_key::ReportKeyError),
    #[error(transparent)]
    NodeId(#[from] crate::ha::nodes::NodeIdError),
    #[error("cannot configure TLS for the cluster listener: {0}")]
    Tls(String),
    #[error(transparent)]
    AdminTls(#[from] crate::admin::tls::AdminTlsError),
    #[error("cluster listener failed: {0}")]
    Cluster(#[from] cluster::ServeError),
    #[error("admin listener failed: {0}")]
    Admin(std::io::Error),
    #[error("status listener failed: {0}")]
    Status(std::io::Error),
}

/// The listeners a control plane serves.
pub struct Listeners {
    pub admin: TcpListener,
    pub cluster: TcpListener,
    /// `GET /metrics` and the health probes, without a token ([`crate::status`]).
    pub status: TcpListener,
}

impl Listeners {
    /// Binds every address, naming the config key to change when one is taken.
    pub async fn bind(config: &CpConfig) -> Result<Self, std::io::Error> {
        Ok(Self {
            admin: bind(config.admin.listen, "admin.listen").await?,
            cluster: bind(config.cluster.listen, "cluster.listen").await?,
            status: bind(config.status.listen, "status.listen").await?,
        })
    }
}

/// Pending connections the kernel queues per listener before it drops SYNs (capped by
/// `net.core.somaxconn`). tokio's default is 1,024; when thousands of data planes reconnect at
/// once after a control-plane restart, a full queue makes them wait out a TCP retransmission
/// (1 s, 3 s, 7 s...) or their connect timeout instead of being served in turn.
pub const LISTEN_BACKLOG: u32 = 8192;

async fn bind(addr: SocketAddr, key: &str) -> Result<TcpListener, std::io::Error> {
    listen(addr).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {addr} ({e}); stop what uses it or set {key}"),
        )
    })
}

fn listen(addr: SocketAddr) -> Result<TcpListener, std::io::Error> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As std and tokio do for a listener: a restarted control plane can bind again at once
    // while connections of the previous process linger in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Runs a control plane until `shutdown` is cancelled.
pub async fn run(
    config: CpConfig,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let (_no_reloads, reloads) = tokio::sync::mpsc::channel(1);
    run_reloadable(config, listeners, shutdown, reloads).await
}

/// [`run`], applying each configuration received on `reloads` ([`crate::reload`]: trusted
/// keys and log level; `licsync-cp serve` sends one per SIGHUP).
pub async fn run_reloadable(
    mut config: CpConfig,
    listeners: Listeners,
    shutdown: CancellationToken,
    reloads: tokio::sync::mpsc::Receiver<CpConfig>,
) -> Result<(), ServeError> {
    config.validate()?;
    // With `listen = "...:0"` (tests) the advertised URL must carry the port actually bound.
    if config.cluster.listen.port() == 0
        && let Ok(bound) = listeners.cluster.local_addr()
    {
        config.cluster.listen.set_port(bound.port());
    }
    // Before storage is touched: a bad certificate pair stops the start at once.
    let admin_tls = crate::admin::tls::load(&config.admin)?;
    let admin_scheme = if admin_tls.is_some() { "https" } else { "http" };
    fsutil::ensure_private_dir(&config.data_dir).map_err(|source| ServeError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    // Where the CA and report key live follows from the store: a shared database holds them
    // (sealed) for every node, an embedded store leaves them in this node's files.
    // Kept as itself too: the change feed follower needs its own `LISTEN` connection.
    let mut postgres = None;
    let (store, home): (Arc<dyn Store>, SecretHome) = match config.storage.backend {
        StorageBackend::Sled => (
            Arc::new(SledStore::open_with_cache(
                &config.data_dir.join("cp.sled"),
                config.storage.sled.cache_capacity,
            )?),
            SecretHome::Files,
        ),
        StorageBackend::Memory => (Arc::new(MemoryStore::new()), SecretHome::Files),
        StorageBackend::Postgres => {
            // Read first: a missing or exposed key file fails before the database is touched.
            let key = config.storage.storage_key()?;
            let pg = Arc::new(open_postgres(&config).await?);
            postgres = Some(pg.clone());
            (
                pg.clone(),
                SecretHome::Database {
                    store: pg,
                    key: Box::new(key),
                },
            )
        }
    };
    let node_id = crate::ha::nodes::load_or_create_node_id(&config.data_dir)?;
    let pki_dir = config.data_dir.join("pki");
    // Before the admin token: a node holding the wrong storage key stops here, having written
    // nothing to the shared database.
    let secrets = ClusterSecrets::load_or_create(&home, &pki_dir, &config.pki).await?;
    crate::principals::bootstrap::bootstrap_admin_token(store.as_ref(), &config.data_dir).await?;
    let pki = ClusterPki::with_ca(
        secrets.ca,
        &pki_dir,
        &config.cluster.server_names,
        &config.pki,
    )?;
    let provider = cluster::tls::provider();
    let identity = Arc::new(
        ServerIdentity::new(provider.clone(), &pki.server, config.pki.server_cert_ttl.0)
            .map_err(|e| ServeError::Tls(e.to_string()))?,
    );
    let tls = cluster::tls::server_config(provider, pki.ca.cert_der(), identity.clone())
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    let ca_not_after = CertInfo::from_der(pki.ca.cert_der())
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .not_after
        .unix_timestamp();
    // validate() already parsed these keys.
    let trusted = TrustedKeys::parse(&config.licenses.trusted_keys).unwrap_or_default();
    if trusted.is_empty() {
        tracing::warn!(
            event = "licenses.no_trusted_keys",
            "licenses.trusted_keys is empty: every license will be refused until a signing key is trusted."
        );
    }
    let licenses = Arc::new(Licenses::load(store.clone(), trusted).await?);
    let revision = licenses.current().revision;
    let report_key = secrets.report_key;
    let ca_pem = pki.ca.cert_pem().to_owned();
    let fingerprint = pki.ca.fingerprint();
    let cp = Arc::new(
        ControlPlane::new(config, store.clone(), licenses, ca_pem, fingerprint)
            .with_report_key(Arc::new(report_key))
            .with_session_key(secrets.session_key)
            .with_node_id(node_id),
    );

    let admin_addr = addr_text(&listeners.admin);
    let cluster_addr = addr_text(&listeners.cluster);
    let status_addr = addr_text(&listeners.status);
    let certificates = crate::metrics::Certificates {
        server: identity.clone(),
        ca_not_after,
    };
    let ca = Arc::new(pki.ca);
    let rotation = Rotation {
        identity: identity.clone(),
        ca: ca.clone(),
        dir: pki_dir,
        names: cp.config().cluster.server_names.clone(),
    };
    let upkeep = [
        tokio::spawn(
            crate::reload::run(cp.clone(), reloads, shutdown.clone())
                .instrument(tracing::info_span!("config_reload")),
        ),
        tokio::spawn(
            rotation
                .run(shutdown.clone())
                .instrument(tracing::info_span!("server_cert_rotation")),
        ),
        tokio::spawn(
            lifecycle::storage_watch::run(cp.clone(), store.clone(), shutdown.clone())
                .instrument(tracing::info_span!("storage_watch")),
        ),
        tokio::spawn({
            let (cp, shutdown) = (cp.clone(), shutdown.clone());
            async move {
                let retention = cp.config().audit.retention.0;
                cp.audit().run_retention(retention, shutdown).await;
            }
            .instrument(tracing::info_span!("audit_retention"))
        }),
        tokio::spawn(
            lifecycle::purge::run(cp.clone(), shutdown.clone())
                .instrument(tracing::info_span!("dataplane_purge")),
        ),
        tokio::spawn(
            lifecycle::expiry::run(
                cp.clone(),
                OwnCertificates {
                    server: identity,
                    ca_not_after,
                },
                shutdown.clone(),
            )
            .instrument(tracing::info_span!("cert_expiry")),
        ),
    ];
    let mut cluster_task = tokio::spawn(
        cluster::serve(listeners.cluster, cp.clone(), ca, tls, shutdown.clone())
            .instrument(tracing::info_span!("cluster_server")),
    );
    let admin_shutdown = shutdown.clone();
    let mut admin_task = tokio::spawn(
        crate::admin::serve(
            listeners.admin,
            cp.clone(),
            admin_tls,
            admin_shutdown.cancelled_owned(),
        )
        .instrument(tracing::info_span!("admin_server")),
    );
    let follower = postgres.map(|store| {
        let poll = cp.config().storage.postgres.poll_interval.0;
        tokio::spawn(
            crate::ha::follower::run(cp.clone(), store, poll, shutdown.clone())
                .instrument(tracing::info_span!("cluster_feed", node.id = %node_id)),
        )
    });
    let license_dir_task = cp.config().licenses.watch_dir.clone().map(|dir| {
        tokio::spawn(
            crate::license_dir::run(cp.clone(), dir, shutdown.clone())
                .instrument(tracing::info_span!("license_dir")),
        )
    });
    let mut status_task = tokio::spawn(
        crate::status::serve(
            listeners.status,
            cp.clone(),
            certificates,
            shutdown.clone().cancelled_owned(),
        )
        .instrument(tracing::info_span!("status_server")),
    );
    let watch_task = tokio::spawn(
        crate::license_watch::watch(cp.clone(), shutdown.clone())
            .instrument(tracing::info_span!("license_watch")),
    );
    cp.set_ready(true);
    tracing::info!(
        event = "cp.started",
        admin.addr = %admin_addr,
        admin.scheme = admin_scheme,
        cluster.addr = %cluster_addr,
        status.addr = %status_addr,
        cluster_url = %cp.cluster_url(),
        ca_cert_sha256 = %cp.ca_fingerprint(),
        storage = cp.storage_info().backend,
        revision,
        version = licsync_common::VERSION,
        "Control plane started."
    );
    licsync_common::sd_notify::ready(&format!(
        "serving: admin {admin_addr}, cluster {cluster_addr}, status {status_addr}"
    ));

    // A listener that dies on its own takes the whole process down rather than leaving half a
    // control plane running.
    let failure = tokio::select! {
        _ = shutdown.cancelled() => None,
        result = &mut cluster_task => Some(match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(ServeError::Cluster(e)),
            Err(join) => Some(ServeError::Tls(format!("cluster server task failed: {join}"))),
        }),
        result = &mut admin_task => Some(match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(ServeError::Admin(e)),
            Err(join) => Some(ServeError::Admin(std::io::Error::other(join.to_string()))),
        }),
        result = &mut status_task => Some(match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(ServeError::Status(e)),
            Err(join) => Some(ServeError::Status(std::io::Error::other(join.to_string()))),
        }),
    };
    cp.set_ready(false);
    shutdown.cancel();
    tracing::info!(event = "cp.stopping", "Control plane stopping.");
    // A task the select above already completed must not be polled again.
    let drain = async {
        if !cluster_task.is_finished() {
            let _ = (&mut cluster_task).await;
        }
        if !admin_task.is_finished() {
            let _ = (&mut admin_task).await;
        }
        if !status_task.is_finished() {
            let _ = (&mut status_task).await;
        }
        for task in upkeep.into_iter().chain(follower) {
            let _ = task.await;
        }
    };
    if tokio::time::timeout(DRAIN_DEADLINE, drain).await.is_err() {
        tracing::warn!(
            event = "cp.drain_timeout",
            deadline_s = DRAIN_DEADLINE.as_secs(),
            "Servers did not drain in time; stopping anyway."
        );
        cluster_task.abort();
        admin_task.abort();
        status_task.abort();
    }
    watch_task.abort();
    if let Some(task) = license_dir_task {
        task.abort();
    }
    cp.audit().flush().await;
    store.flush().await?;
    tracing::info!(event = "cp.stopped", "Control plane stopped.");
    match failure.flatten() {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

fn addr_text(listener: &TcpListener) -> String {
    listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default()
}

/// Connects to `storage.postgres` and brings its schema up to date.
pub async fn open_postgres(config: &CpConfig) -> Result<PostgresStore, ServeError> {
    let store = connect_postgres(config).await?;
    store.migrate().await?;
    Ok(store)
}

/// Connects to `storage.postgres` (password and CA as configured) without migrating.
pub async fn connect_postgres(config: &CpConfig) -> Result<PostgresStore, ServeError> {
    let pg = &config.storage.postgres;
    let url = pg.url.as_deref().ok_or_else(|| crate::config::Invalid {
        key: "storage.postgres.url",
        reason: "required with storage.backend = \"postgres\"".into(),
    })?;
    let password = pg.password()?;
    let ca_pem = pg.ca_pem()?;
    Ok(PostgresStore::connect(&ConnectOptions {
        url,
        password: password.as_deref(),
        pool_size: pg.pool_size,
        ca_pem: ca_pem.as_deref(),
    })
    .await?)
}
