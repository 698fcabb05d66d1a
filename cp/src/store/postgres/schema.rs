//! Versioned schema migrations for the PostgreSQL backend.
//!
//! Each migration runs once, in order, and is recorded in `schema_migrations`. The whole
//! migration runs in one transaction that first takes a transaction-scoped advisory lock, so two
//! nodes starting together against a new database do not both migrate: the second waits, then
//! finds the schema current. A database whose schema is newer than this binary knows is
//! refused: running it could misread rows a newer version writes.

use tokio_postgres::Client;

/// The advisory lock key every licsync node takes while migrating ("licsync" in ASCII).
const MIGRATION_LOCK: i64 = 0x006c_6963_7379_6e63;

/// One schema change: its version (1, 2, ... in order), what it does, and its SQL.
struct Migration {
    version: i32,
    description: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "licenses, registration tokens, data planes, principals and usage counters",
        // Text keys use the "C" collation so ordering and equality are by bytes, as in sled.
        sql: r#"
        CREATE TABLE cp_meta (
            key text COLLATE "C" PRIMARY KEY,
            value bigint NOT NULL
        );
        CREATE TABLE licenses (
            id uuid PRIMARY KEY,
            document text NOT NULL,
            signature text NOT NULL,
            created_at bigint NOT NULL,
            updated_at bigint NOT NULL,
            revision bigint NOT NULL
        );
        CREATE TABLE registration_tokens (
            id uuid PRIMARY KEY,
            name text NOT NULL,
            token_hash text COLLATE "C" NOT NULL UNIQUE,
            created_at bigint NOT NULL,
            expires_at bigint NOT NULL,
            max_uses bigint NOT NULL,
            uses bigint NOT NULL
        );
        CREATE TABLE dataplanes (id uuid PRIMARY KEY, record jsonb NOT NULL);
        CREATE TABLE api_tokens (id uuid PRIMARY KEY, record jsonb NOT NULL);
        CREATE TABLE users (username text COLLATE "C" PRIMARY KEY, record jsonb NOT NULL);
        CREATE TABLE connected_apps (
            client_id text COLLATE "C" PRIMARY KEY,
            record jsonb NOT NULL
        );
        CREATE TABLE usage_counters (
            dataplane uuid NOT NULL,
            epoch uuid NOT NULL,
            month text COLLATE "C" NOT NULL,
            count bigint NOT NULL CHECK (count >= 0),
            PRIMARY KEY (dataplane, epoch, month)
        );
    "#,
    },
    Migration {
        version: 2,
        description: "cluster secrets (CA, report key), sealed under the storage key",
        sql: r#"
        CREATE TABLE cluster_secrets (
            name text COLLATE "C" PRIMARY KEY,
            sealed bytea NOT NULL,
            created_at bigint
        );
    "#,
    },
    Migration {
        version: 3,
        description: "change feed (license tombstones, revision row) and the control-plane nodes registry",
        // The revision row exists from the start, so the first writes of two nodes lock it
        // (`FOR UPDATE` locks nothing when there is no row). Tombstones keep one row per
        // deleted id (its last deletion), enough for a node to learn of it by revision.
        sql: r#"
            INSERT INTO cp_meta (key, value) VALUES ('revision', 0) ON CONFLICT (key) DO NOTHING;
            CREATE INDEX licenses_by_revision ON licenses (revision);
            CREATE TABLE license_tombstones (
                id uuid PRIMARY KEY,
                revision bigint NOT NULL
            );
            CREATE INDEX license_tombstones_by_revision ON license_tombstones (revision);
            -- Every node checks its streams against revocations each poll: a partial index
            -- keeps that read to the revoked few.
            CREATE INDEX dataplanes_revoked ON dataplanes (id)
                WHERE (record->>'revoked')::boolean;
            CREATE TABLE control_planes (
                id uuid PRIMARY KEY,
                advertised_url text NOT NULL,
                version text NOT NULL,
                started_at bigint NOT NULL,
                last_seen bigint NOT NULL,
                dataplanes_connected bigint NOT NULL,
                dataplanes uuid[] NOT NULL
            );
        "#,
    },
    Migration {
        version: 4,
        description: "the audit trail",
        sql: r#"
        CREATE TABLE audit_records (
            at_ms bigint NOT NULL,
            id uuid NOT NULL,
            record jsonb NOT NULL,
            PRIMARY KEY (at_ms, id)
        );
    "#,
    },
    Migration {
        version: 5,
        description: "license tombstones are pruned after a day (a node further behind reads the whole set)",
        // Rows already there count as deleted now: they are kept one more day. The horizon
        // row says up to which revision tombstones may be gone.
        sql: r#"
            ALTER TABLE license_tombstones
                ADD COLUMN deleted_at bigint NOT NULL
                DEFAULT (extract(epoch FROM now()))::bigint;
            INSERT INTO cp_meta (key, value) VALUES ('tombstones_pruned_through', 0)
                ON CONFLICT (key) DO NOTHING;
        "#,
    },
];

/// The newest schema version this binary knows.
pub const LATEST: i32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// Why the schema could not be read or brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "the PostgreSQL schema is at version {found}, newer than this licsync-cp knows \
         (version {known}): run the newer licsync-cp that upgraded it, or restore the database \
         backup taken before that upgrade"
    )]
    TooNew { found: i32, known: i32 },
    #[error("cannot migrate the PostgreSQL schema: {0}")]
    Database(#[from] tokio_postgres::Error),
}

/// Where the database's schema stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaStatus {
    /// The version applied (0: empty database).
    pub current: i32,
    /// The newest version this binary knows.
    pub known: i32,
}

impl SchemaStatus {
    /// How many migrations `up` would apply (0 when current or newer).
    pub fn pending(&self) -> usize {
        MIGRATIONS
            .iter()
            .filter(|m| m.version > self.current)
            .count()
    }
}

/// The schema version of the database, without changing anything.
pub async fn status(client: &Client) -> Result<SchemaStatus, SchemaError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await?
        .get(0);
    let current = if exists {
        client
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                &[],
            )
            .await?
            .get(0)
    } else {
        0
    };
    Ok(SchemaStatus {
        current,
        known: LATEST,
    })
}

/// Applies every migration the database lacks, under the migration lock; returns the versions
/// applied (empty when the schema was current). Refuses a schema newer than [`LATEST`].
pub async fn up(client: &mut Client) -> Result<Vec<i32>, SchemaError> {
    up_to(client, LATEST).await
}

/// [`up`], stopping at version `target`: a database as an older release left it, for tests of
/// the upgrade from one (nodes always migrate to [`LATEST`]).
pub async fn up_to(client: &mut Client, target: i32) -> Result<Vec<i32>, SchemaError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version integer PRIMARY KEY,
             description text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let current: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .get(0);
    if current > LATEST {
        return Err(SchemaError::TooNew {
            found: current,
            known: LATEST,
        });
    }
    let mut applied = Vec::new();
    for migration in MIGRATIONS
        .iter()
        .filter(|m| m.version > current && m.version <= target)
    {
        tx.batch_execute(migration.sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, description) VALUES ($1, $2)",
            &[&migration.version, &migration.description],
        )
        .await?;
        applied.push(migration.version);
    }
    tx.commit().await?;
    Ok(applied)
}
