//! A throwaway PostgreSQL server for tests: `initdb` and `pg_ctl` from `PATH` in a temporary
//! directory, listening on 127.0.0.1 on a free port, one per test binary, with a fresh database
//! per test ([`fresh_database`]).
//!
//! PostgreSQL refuses to run as root, so when the tests run as root the server runs as the
//! `postgres` user (`su postgres -s /bin/sh -c ...`) in a directory it owns. The test harness
//! never runs static destructors, so a watchdog shell (in its own process group, so a Ctrl-C to
//! the tests does not kill it first) waits for the test process to end, then stops the server
//! (`pg_ctl stop -m immediate`) and removes the directory: no postgres is left behind, even
//! after a `SIGKILL`. Missing binaries fail the test with what to install; they never skip it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The superuser `initdb` creates. TCP connections need its password (SCRAM), so tests can
/// tell whether a password reached the server; the Unix socket (never used by tests) trusts.
const SUPERUSER: &str = "licsync";
pub const PASSWORD: &str = "licsync-test-password";

struct Server {
    port: u16,
    /// The server's directory (removed by the watchdog); also holds the storage keys.
    dir: PathBuf,
    /// The CA that signed the server's certificate (for 127.0.0.1 and localhost).
    ca_pem: String,
    /// The shell command lines that start it again (same port) and stop it (fast shutdown:
    /// sessions are ended, as in an outage).
    start: String,
    stop: String,
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
static NEXT_DATABASE: AtomicU32 = AtomicU32::new(0);

/// A new, empty database on the shared test server, as a connection URL with the password.
/// Panics with the reason when the server cannot be started (missing binaries included).
pub async fn fresh_database() -> String {
    let port = match SERVER.get_or_init(start) {
        Ok(server) => server.port,
        Err(reason) => panic!("cannot start the test PostgreSQL server: {reason}"),
    };
    let name = format!(
        "test_{}_{}",
        std::process::id(),
        NEXT_DATABASE.fetch_add(1, Ordering::Relaxed)
    );
    let admin = format!("postgres://{SUPERUSER}:{PASSWORD}@127.0.0.1:{port}/postgres");
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL server");
    let connection = tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create a test database");
    drop(client);
    let _ = connection.await;
    format!("postgres://{SUPERUSER}:{PASSWORD}@127.0.0.1:{port}/{name}")
}

/// The CA certificate (PEM) the test server's TLS certificate chains to. The server accepts
/// TLS and plain connections alike.
pub fn ca_pem() -> String {
    running().ca_pem.clone()
}

/// Stops the test server (fast shutdown: every session is ended), for a test of a database
/// outage. Every test of the binary shares the server: a test that stops it belongs in a test
/// binary of its own. Panics when the server was not started or does not stop.
pub fn stop_server() {
    if let Err(e) = sh(&running().stop) {
        panic!("cannot stop the test PostgreSQL server: {e}");
    }
}

/// Starts the server [`stop_server`] stopped, on the same port with the same databases.
pub fn start_server() {
    if let Err(e) = sh(&running().start) {
        panic!("cannot start the test PostgreSQL server again: {e}");
    }
}

fn running() -> &'static Server {
    match SERVER.get() {
        Some(Ok(server)) => server,
        _ => panic!("call fresh_database first: the test PostgreSQL server is not running"),
    }
}

/// The storage key file (`storage.encryption_key_file`) of the database at `url` (from
/// [`fresh_database`]), created at the first call: every control plane started on one database
/// gets the same key, as the nodes of one cluster must. It lives in the server's directory,
/// removed with the server.
pub fn storage_key_file(url: &str) -> PathBuf {
    static CREATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let dir = match SERVER.get() {
        Some(Ok(server)) => server.dir.join("storage-keys"),
        _ => panic!("call fresh_database first: the test PostgreSQL server is not running"),
    };
    let database = url
        .split('?')
        .next()
        .and_then(|u| u.rsplit('/').next())
        .filter(|name| !name.is_empty() && !name.contains(['.', ':', '@']))
        .unwrap_or_else(|| panic!("{url} names no database"));
    let path = dir.join(format!("{database}.key"));
    let _one_at_a_time = CREATING.lock().unwrap_or_else(|e| e.into_inner());
    if !path.exists() {
        licsync_common::fsutil::ensure_private_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        licsync_cp::store::storage_key::StorageKey::generate_file(&path)
            .unwrap_or_else(|e| panic!("cannot create the storage key: {e}"));
    }
    path
}

/// `url` (from [`fresh_database`]) without its password.
pub fn without_password(url: &str) -> String {
    url.replacen(&format!(":{PASSWORD}@"), "@", 1)
}

/// Finds `program` on `PATH`, or says what to install.
fn binary(program: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            format!(
                "`{program}` is not on PATH: the PostgreSQL tests need the PostgreSQL 15 server \
                 binaries (Debian: `apt-get install postgresql-15` and put \
                 /usr/lib/postgresql/15/bin on PATH); they are never skipped"
            )
        })
}

/// Whether this process runs as root, when PostgreSQL's tools must run as `postgres` (also
/// used by the benchmark's own durable server).
pub fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| out.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}

/// Quotes `word` for `/bin/sh`.
pub fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// A shell command line running `args` as the server's owner: `postgres` when we are root.
pub fn as_owner(root: bool, args: &[&str]) -> String {
    let line = args.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ");
    if root {
        format!("su postgres -s /bin/sh -c {}", quote(&line))
    } else {
        line
    }
}

/// Runs `line` with `/bin/sh`; its output in the error when it fails (also used by the
/// benchmark's own server).
pub fn sh(line: &str) -> Result<(), String> {
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(line)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run /bin/sh: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "`{line}` failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// A TCP port on 127.0.0.1 nobody listens on right now.
pub fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("cannot find a free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

fn start() -> Result<Server, String> {
    let initdb = binary("initdb")?;
    let pg_ctl = binary("pg_ctl")?;
    binary("postgres")?;
    let root = running_as_root();
    let dir = tempfile::Builder::new()
        .prefix("licsync-pg-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?
        .keep();
    let path = |p: &Path| p.to_str().map(str::to_owned).ok_or("non-UTF-8 path");
    let dir_text = path(&dir)?;
    let data = path(&dir.join("data"))?;
    let log = path(&dir.join("server.log"))?;
    let (initdb, pg_ctl) = (path(&initdb)?, path(&pg_ctl)?);
    watchdog(root, &pg_ctl, &data, &dir_text)?;
    let ca_pem = write_certificate(&dir)?;
    let password_file = dir.join("password");
    std::fs::write(&password_file, PASSWORD)
        .map_err(|e| format!("cannot write {}: {e}", password_file.display()))?;
    let password_file = format!("--pwfile={}", path(&password_file)?);
    if root {
        sh(&format!("chown -R postgres: {}", quote(&dir_text)))?;
    }
    sh(&as_owner(
        root,
        &[
            &initdb,
            "-D",
            &data,
            "-U",
            SUPERUSER,
            &password_file,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        ],
    ))
    .map_err(|e| format!("initdb: {e}"))?;
    // A port found free can be taken before the server binds it: try a few.
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_port()?;
        let options = format!(
            "-p {port} -k {dir_text} -c listen_addresses=127.0.0.1 -c fsync=off -c ssl=on \
             -c ssl_cert_file={dir_text}/server.crt -c ssl_key_file={dir_text}/server.key \
             -c full_page_writes=off -c max_connections=200"
        );
        let start = as_owner(
            root,
            &[
                &pg_ctl, "-D", &data, "-l", &log, "-w", "-o", &options, "start",
            ],
        );
        match sh(&start) {
            Ok(()) => {
                let stop = as_owner(root, &[&pg_ctl, "-D", &data, "-w", "stop", "-m", "fast"]);
                return Ok(Server {
                    port,
                    dir,
                    ca_pem,
                    start,
                    stop,
                });
            }
            Err(e) => {
                let server_log = std::fs::read_to_string(&log).unwrap_or_default();
                last = format!("{e}; server log: {server_log}");
            }
        }
    }
    Err(last)
}

/// Writes `server.crt` and `server.key` (mode 0600, as PostgreSQL demands) for 127.0.0.1 and
/// localhost into `dir`, issued by a fresh CA; returns the CA's certificate.
fn write_certificate(dir: &Path) -> Result<String, String> {
    use licsync_common::pki::CertificateAuthority;
    use std::os::unix::fs::PermissionsExt;
    let day = std::time::Duration::from_secs(86_400);
    let (ca, _) = CertificateAuthority::generate("licsync test PostgreSQL CA", day)
        .map_err(|e| format!("cannot create the test CA: {e}"))?;
    let names = ["127.0.0.1".to_owned(), "localhost".to_owned()];
    let issued = ca
        .issue_server(&names, day)
        .map_err(|e| format!("cannot issue the test server certificate: {e}"))?;
    let key = issued.key_pem.unwrap_or_default();
    for (name, text, mode) in [
        ("server.crt", &issued.cert_pem, 0o644),
        ("server.key", &key, 0o600),
    ] {
        let file = dir.join(name);
        std::fs::write(&file, text)
            .and_then(|()| std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)))
            .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    }
    Ok(ca.cert_pem().to_owned())
}

/// Starts the shell that stops the server and removes `dir` once this process is gone.
pub fn watchdog(root: bool, pg_ctl: &str, data: &str, dir: &str) -> Result<(), String> {
    let stop = as_owner(root, &[pg_ctl, "-D", data, "stop", "-m", "immediate"]);
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
        pid = std::process::id(),
        dir = quote(dir),
    );
    Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map(drop)
        .map_err(|e| format!("cannot start the server's watchdog: {e}"))
}
