//! The PostgreSQL backend: the store several control-plane nodes share.
//!
//! Crates: `tokio-postgres` (the driver most of the async Rust PostgreSQL ecosystem builds on,
//! maintained with `rust-postgres`, pure Rust, no OpenSSL) with `deadpool-postgres` for the
//! connection pool. Queries are plain SQL checked at run time: unlike `sqlx`'s compile-time
//! checked macros, building needs no database and no cached query metadata, and the dependency
//! tree stays small (no second TLS stack, no macros crate). TLS is `tokio-postgres-rustls`
//! over the workspace's rustls with the ring provider (`tls`), so nothing links OpenSSL.
//!
//! Semantics are sled's (see [`super`]): a write returns once its transaction has committed
//! (durable as the server's `synchronous_commit` makes it); the revision changes in the same
//! transaction as the license; a token's use is counted under a row lock, so of two concurrent
//! registrations against a token's last use exactly one wins, on any node; usage counters
//! are raised with `GREATEST` in one statement per batch, so reports merge exactly once
//! whichever node receives them.
//!
//! Layout: this file connects and migrates; [`schema`] holds the versioned migrations, `tls`
//! the TLS connector; `licenses`, `fleet` (registration tokens and data planes), `principals`
//! and `usage` implement the aggregate traits, `secrets` the cluster's sealed secrets; `import`
//! fills an empty database (`storage copy`); `feed` is the change feed several nodes follow
//! (tombstones, `NOTIFY`, `LISTEN`).

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use super::{StorageInfo, StoreError, StoreMeta, StoreResult};
use async_trait::async_trait;
pub use feed::{CHANNEL, Notice, Notifications};

mod audit;
mod feed;
mod fleet;
pub mod import;
mod licenses;
mod nodes;
mod principals;
pub mod schema;
mod secrets;
mod snapshot;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_feed;
mod tls;
mod usage;

/// How long connecting to the server may take (unless the URL sets `connect_timeout`): an
/// unreachable database fails a request instead of hanging it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a request may wait for a free pooled connection before failing.
const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(30);

/// How many connections a node keeps open by default.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// Where and how to connect.
#[derive(Debug, Clone, Copy)]
pub struct ConnectOptions<'a> {
    /// `postgres://USER[:PASSWORD]@HOST:PORT/DB[?sslmode=...]`.
    pub url: &'a str,
    /// Used when the URL has no password.
    pub password: Option<&'a str>,
    /// Connections kept open at most.
    pub pool_size: usize,
    /// PEM certificates of the CA that signed the server's certificate: with it, connections
    /// use TLS (rustls) and verify the server's certificate and name.
    pub ca_pem: Option<&'a str>,
}

/// Storage in a PostgreSQL database, through a connection pool.
pub struct PostgresStore {
    pool: Pool,
    /// How to open a connection outside the pool (the change feed's `LISTEN`).
    config: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    /// The server's version, for `/status`.
    server_version: &'static str,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://USER[:PASSWORD]@HOST:PORT/DB`), with `password` when the
    /// URL has none, over plain TCP, and brings the schema up to date (refusing one newer than
    /// this binary). See [`PostgresStore::open_with`] for TLS.
    pub async fn open(url: &str, password: Option<&str>, pool_size: usize) -> StoreResult<Self> {
        Self::open_with(&ConnectOptions {
            url,
            password,
            pool_size,
            ca_pem: None,
        })
        .await
    }

    /// [`PostgresStore::open`] with every option.
    pub async fn open_with(options: &ConnectOptions<'_>) -> StoreResult<Self> {
        let store = Self::connect(options).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects without touching the schema (for `storage migrate status`).
    pub async fn connect(options: &ConnectOptions<'_>) -> StoreResult<Self> {
        let mut config: tokio_postgres::Config = options.url.parse().map_err(|e| {
            StoreError::Backend(format!(
                "storage.postgres.url is not a valid PostgreSQL URL: {e} \
                 (expected postgres://USER@HOST:PORT/DB)"
            ))
        })?;
        if let Some(password) = options.password
            && config.get_password().is_none()
        {
            config.password(password);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let tls = tls::connector(&mut config, options.ca_pem)?;
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match tls.clone() {
            Some(tls) => Manager::from_config(config.clone(), tls, manager_config),
            None => Manager::from_config(config.clone(), NoTls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .create_timeout(Some(CONNECT_TIMEOUT))
            .wait_timeout(Some(POOL_WAIT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot build the connection pool: {e}")))?;
        let client = pool.get().await.map_err(pool_error)?;
        let version: String = client
            .query_one("SHOW server_version", &[])
            .await
            .map_err(db)?
            .get(0);
        // Leaked once per store (a node opens one), so `/status` can borrow it forever.
        let server_version = Box::leak(version.into_boxed_str());
        drop(client);
        Ok(Self {
            pool,
            config,
            tls,
            server_version,
        })
    }

    /// Applies the migrations the database lacks, under the migration lock; the versions
    /// applied. Refuses a schema newer than this binary knows.
    pub async fn migrate(&self) -> StoreResult<Vec<i32>> {
        let mut client = self.client().await?;
        schema::up(&mut client)
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))
    }

    /// Migrates only up to schema `version`: the database an older release leaves, for tests
    /// of the upgrade from it. Nodes always [`PostgresStore::migrate`] to the newest.
    pub async fn migrate_to(&self, version: i32) -> StoreResult<Vec<i32>> {
        let mut client = self.client().await?;
        schema::up_to(&mut client, version)
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))
    }

    /// Where the database's schema stands (no migration).
    pub async fn schema_status(&self) -> StoreResult<schema::SchemaStatus> {
        let client = self.client().await?;
        schema::status(&client)
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))
    }

    /// A pooled connection.
    async fn client(&self) -> StoreResult<Object> {
        self.pool.get().await.map_err(pool_error)
    }
}

#[async_trait]
impl StoreMeta for PostgresStore {
    fn info(&self) -> StorageInfo {
        StorageInfo {
            backend: "postgres",
            version: self.server_version,
        }
    }

    /// A pooled connection answers `SELECT 1` within [`CHECK_TIMEOUT`].
    async fn check(&self) -> StoreResult<()> {
        let probe = async {
            let client = self.client().await?;
            client.simple_query("SELECT 1").await.map_err(db)?;
            Ok(())
        };
        match tokio::time::timeout(CHECK_TIMEOUT, probe).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!(
                "PostgreSQL did not answer within {} s",
                CHECK_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Every write has committed before it returned: nothing to flush.
    async fn flush(&self) -> StoreResult<()> {
        Ok(())
    }
}

/// How long the storage check's query may take: a server that accepts connections but does
/// not answer is as unavailable as one that refuses them.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// A driver error as a storage error: [`StoreError::Unavailable`] when the connection, not the
/// statement, failed.
fn db(e: tokio_postgres::Error) -> StoreError {
    let text = format!("postgres: {}", with_causes(&e));
    if connection_lost(&e) {
        StoreError::Unavailable(text)
    } else {
        StoreError::Backend(text)
    }
}

/// Whether `e` says the server is gone rather than that the statement was refused: the
/// connection closed or broke (an I/O error underneath), or the server answered with a
/// connection-exception (class `08`) or operator-intervention shutdown code (`57P01` admin
/// shutdown, `57P02` crash shutdown, `57P03` cannot connect now).
fn connection_lost(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        let code = code.code();
        return code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03");
    }
    let mut cause = std::error::Error::source(e);
    while let Some(inner) = cause {
        if inner.is::<std::io::Error>() {
            return true;
        }
        cause = inner.source();
    }
    false
}

/// No pooled connection could be had: the server is unreachable (connect failed or timed out,
/// or it closed the connection), or every connection stayed busy past the wait timeout. Either
/// way the request did not reach the database, so it is [`StoreError::Unavailable`], except a
/// configuration the pool cannot use, which retrying cannot fix.
fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    use deadpool_postgres::PoolError;
    let text = format!("cannot get a PostgreSQL connection: {}", with_causes(&e));
    match e {
        PoolError::Backend(inner) if !connection_lost(&inner) => StoreError::Backend(text),
        PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_) => StoreError::Backend(text),
        _ => StoreError::Unavailable(text),
    }
}

/// `e` and every error under it ("invalid configuration: password missing"): the pool and the
/// driver put the useful part in the causes.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(inner) = cause {
        let part = inner.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = inner.source();
    }
    text
}

/// A stored integer that must fit the record's unsigned field.
fn unsigned<T: TryFrom<i64>>(value: i64, what: &str) -> StoreResult<T> {
    T::try_from(value).map_err(|_| StoreError::Corrupt {
        key: what.to_owned(),
        reason: format!("{value} is out of range"),
    })
}

/// An unsigned value as a PostgreSQL `bigint`.
fn signed<T: TryInto<i64>>(value: T, what: &str) -> StoreResult<i64> {
    value
        .try_into()
        .map_err(|_| StoreError::Backend(format!("{what} does not fit a PostgreSQL bigint")))
}
