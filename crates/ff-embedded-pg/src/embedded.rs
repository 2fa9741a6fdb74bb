//! [`EmbeddedPostgres`]: a private cluster owned by one value, started by
//! [`EmbeddedPostgres::start`] and stopped by [`EmbeddedPostgres::stop`] or
//! when the value is dropped.
//!
//! Invariants: the server listens on 127.0.0.1 only and has no Unix socket;
//! its log is `postgres.log` in the data directory; a temporary data directory
//! lives exactly as long as its server (it is kept only when the server could
//! not be stopped), and a caller-given one is never removed.

use std::fs::DirBuilder;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::binaries::run_to_completion;
use crate::server::{self, SUPERUSER, ServerConfig, StopMode};
use crate::{EmbeddedError, PgBinaries};

/// How long a started server may take to accept connections (including crash
/// recovery of a persistent data directory).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How many free ports to try when the server exits while starting (another
/// process may take a free port before the server binds it).
const START_ATTEMPTS: usize = 3;

/// How often to look at the server while it starts.
const START_POLL: Duration = Duration::from_millis(50);

/// Name of the server log in the data directory.
const LOG_FILE: &str = "postgres.log";

/// Longest database name PostgreSQL keeps whole (`NAMEDATALEN - 1` bytes).
const MAX_DATABASE_NAME_BYTES: usize = 63;

/// What [`EmbeddedPostgres::start`] starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// The cluster's data directory: initialised when it does not exist or is
    /// empty, reused when it holds a cluster, and kept after the server
    /// stops; commits are durable. `None`: a fresh temporary directory,
    /// removed when the server stops, with durability traded for speed
    /// (`fsync` off).
    pub data_dir: Option<PathBuf>,
    /// The TCP port on 127.0.0.1. `None`: a free port.
    pub port: Option<u16>,
    /// The database [`EmbeddedPostgres::url`] names, created after start when
    /// missing. Default `ff`.
    pub database: String,
    /// Further `name=value` server settings, e.g. `ssl=on`.
    pub settings: Vec<String>,
    /// Files written into the data directory before the server starts (each
    /// start), owned by the server's user: certificates and keys, or a
    /// replacement `pg_hba.conf`.
    pub files: Vec<ClusterFile>,
}

/// A file [`EmbeddedPostgres::start`] writes into the data directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterFile {
    /// Path relative to the data directory, e.g. `server.key`.
    pub name: PathBuf,
    /// Contents.
    pub contents: Vec<u8>,
    /// Permission bits, e.g. `0o600` for a private key (PostgreSQL refuses
    /// a key that others can read).
    pub mode: u32,
}

impl Default for EmbeddedOptions {
    fn default() -> EmbeddedOptions {
        EmbeddedOptions {
            data_dir: None,
            port: None,
            database: "ff".to_owned(),
            settings: Vec::new(),
            files: Vec::new(),
        }
    }
}

/// A running private PostgreSQL server, stopped by [`Self::stop`] or, failing
/// that, when dropped.
///
/// The server runs as this process's user, or as the `postgres` user when
/// this process is root. It runs in its own process group, so a terminal's
/// Ctrl-C does not reach it: the owner stops it, e.g. after its own
/// connections have drained. A process that is killed outright (no drop)
/// leaves the server running.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    bins: PgBinaries,
    data_dir: PathBuf,
    port: u16,
    url: String,
    /// Further server settings.
    settings: Vec<String>,
    /// The process started for the server; `None` once stopped.
    server: Option<Child>,
    /// The data directory when it is temporary; `None` once removed.
    temp: Option<TempDataDir>,
}

impl EmbeddedPostgres {
    /// Initialises the data directory if needed, starts the server, waits
    /// until it accepts connections, and creates [`EmbeddedOptions::database`]
    /// if missing.
    ///
    /// Fails when the server binaries are missing (the error says what to
    /// install), the data directory cannot be used, or the server does not
    /// start (the error carries the end of its log). Nothing is left running
    /// when it fails, and a temporary data directory is removed.
    pub async fn start(opts: EmbeddedOptions) -> Result<EmbeddedPostgres, EmbeddedError> {
        check_database_name(&opts.database)?;
        let (data_dir, files) = (opts.data_dir.clone(), opts.files.clone());
        let (bins, data_dir, temp) = blocking(move || {
            let (bins, dir, temp) = prepare(data_dir)?;
            write_files(&bins, &dir, &files)?;
            Ok((bins, dir, temp))
        })
        .await?;
        let durable = temp.is_none();
        // From here on, dropping `pg` stops the server and removes a temporary data directory.
        let mut pg = EmbeddedPostgres {
            bins,
            data_dir,
            port: 0,
            url: String::new(),
            settings: opts.settings.clone(),
            server: None,
            temp,
        };
        let mut attempt = 1;
        loop {
            let port = match opts.port {
                Some(port) => port,
                None => server::free_port()?,
            };
            match pg.launch(port, durable).await {
                Ok(()) => break,
                Err(EmbeddedError::ServerExited { .. }) if opts.port.is_none() && attempt < START_ATTEMPTS => {
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
        pg.create_database(&opts.database).await?;
        pg.url = format!("postgres://{SUPERUSER}@127.0.0.1:{}/{}", pg.port, percent_encode(&opts.database));
        Ok(pg)
    }

    /// URL of the database: `postgres://postgres@127.0.0.1:<port>/<database>`
    /// (superuser `postgres`, no password).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The TCP port the server listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's data directory (absolute).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Stops the server (fast shutdown: open transactions are rolled back,
    /// clients disconnected) and waits until it has exited, then removes a
    /// temporary data directory.
    pub async fn stop(self) -> Result<(), EmbeddedError> {
        let mut pg = self;
        blocking(move || pg.shutdown()).await
    }

    /// Starts the server on `port` and waits until it accepts connections.
    /// When it exits instead, it is reaped and [`EmbeddedError::ServerExited`]
    /// returned; when it times out, it is left in `self.server` to be stopped.
    async fn launch(&mut self, port: u16, durable: bool) -> Result<(), EmbeddedError> {
        let log = self.data_dir.join(LOG_FILE);
        // A pid file left by an earlier server, which must not be taken for the new one's.
        let stale = server::read_postmaster_pid(&self.data_dir);
        let config = ServerConfig {
            data: self.data_dir.clone(),
            port,
            socket_dir: None,
            durable,
            settings: self.settings.clone(),
            log: log.clone(),
        };
        let child = self.server.insert(server::spawn_server(&self.bins, &config)?);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let current = server::read_postmaster_pid(&self.data_dir);
            if let Some(pm) = current
                && current != stale
                && pm.port == Some(port)
                && pm.ready
            {
                self.port = port;
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                self.server = None;
                return Err(EmbeddedError::ServerExited {
                    status: status.to_string(),
                    tail: server::log_tail(&log),
                    log,
                });
            }
            if Instant::now() >= deadline {
                return Err(EmbeddedError::StartTimedOut {
                    port,
                    timeout: START_TIMEOUT,
                    tail: server::log_tail(&log),
                    log,
                });
            }
            tokio::time::sleep(START_POLL).await;
        }
    }

    /// Creates `database` with `createdb` unless it exists.
    async fn create_database(&self, database: &str) -> Result<(), EmbeddedError> {
        let port = self.port.to_string();
        let mut cmd = Command::new(self.bins.bin_dir().join("createdb"));
        cmd.args(["-h", "127.0.0.1", "-p", &port, "-U", SUPERUSER, "--", database])
            .stdin(Stdio::null())
            // English messages from client and server, so that "already exists" can be recognised.
            .env("LC_ALL", "C")
            .env("PGOPTIONS", "-c lc_messages=C")
            // TLS when the server offers it, so a `hostssl`-only `pg_hba.conf` works too.
            .env("PGSSLMODE", "prefer")
            .env("PGCONNECT_TIMEOUT", "10");
        blocking(move || match run_to_completion(cmd) {
            Err(EmbeddedError::CommandFailed { output, .. }) if output.contains("already exists") => Ok(()),
            other => other,
        })
        .await
    }

    /// Stops the server if it was started and not stopped yet, then removes a
    /// temporary data directory. Idempotent; never panics.
    fn shutdown(&mut self) -> Result<(), EmbeddedError> {
        if let Some(mut child) = self.server.take()
            && let Err(e) = self.stop_process(&mut child)
        {
            // The server may still be using its files.
            if let Some(temp) = self.temp.take() {
                temp.keep();
            }
            return Err(e);
        }
        match self.temp.take() {
            Some(temp) => temp.remove(),
            None => Ok(()),
        }
    }

    /// Stops the server started as `child` (fast, else immediate shutdown)
    /// and reaps `child`. A server that already exited counts as stopped.
    fn stop_process(&self, child: &mut Child) -> Result<(), EmbeddedError> {
        let mut exited = || matches!(child.try_wait(), Ok(Some(_)));
        if !exited()
            && let Err(fast) = server::stop_server(&self.bins, &self.data_dir, StopMode::Fast)
            && !exited()
            && server::stop_server(&self.bins, &self.data_dir, StopMode::Immediate).is_err()
            && !exited()
        {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fast);
        }
        child.wait().map_err(|e| EmbeddedError::io("waiting for the PostgreSQL server to exit", e))?;
        Ok(())
    }
}

impl Drop for EmbeddedPostgres {
    /// Stops the server synchronously (blocking the thread for as long as the
    /// shutdown takes) when [`EmbeddedPostgres::stop`] was not called.
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!(data_dir = %self.data_dir.display(), "stopping the embedded PostgreSQL server failed: {e}");
        }
    }
}

/// Finds the binaries and makes sure the data directory holds a cluster.
fn prepare(data_dir: Option<PathBuf>) -> Result<(PgBinaries, PathBuf, Option<TempDataDir>), EmbeddedError> {
    let bins = PgBinaries::locate()?;
    let Some(dir) = data_dir else {
        let temp = TempDataDir::create()?;
        server::init_cluster(&bins, &temp.path, false)?;
        let dir = temp.path.clone();
        return Ok((bins, dir, Some(temp)));
    };
    std::fs::create_dir_all(&dir).map_err(|e| EmbeddedError::io(format!("creating {}", dir.display()), e))?;
    let dir = std::fs::canonicalize(&dir).map_err(|e| EmbeddedError::io(format!("resolving {}", dir.display()), e))?;
    if dir.join("PG_VERSION").exists() {
        bins.check_writable(&dir)?;
    } else {
        let mut entries =
            std::fs::read_dir(&dir).map_err(|e| EmbeddedError::io(format!("reading {}", dir.display()), e))?;
        if entries.next().is_some() {
            return Err(EmbeddedError::NotADataDir { dir });
        }
        server::init_cluster(&bins, &dir, true)?;
    }
    Ok((bins, dir, None))
}

/// Writes `files` into `dir` with their modes and hands them to the server's
/// user.
fn write_files(bins: &PgBinaries, dir: &Path, files: &[ClusterFile]) -> Result<(), EmbeddedError> {
    for file in files {
        let path = dir.join(&file.name);
        std::fs::write(&path, &file.contents)
            .map_err(|e| EmbeddedError::io(format!("writing {}", path.display()), e))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(file.mode))
            .map_err(|e| EmbeddedError::io(format!("setting the mode of {}", path.display()), e))?;
        bins.hand_over(&[&path])?;
    }
    Ok(())
}

/// A directory `<temp dir>/ff-embedded-pg-<pid>-<n>`, removed when dropped
/// unless kept.
#[derive(Debug)]
struct TempDataDir {
    path: PathBuf,
    keep: bool,
}

impl TempDataDir {
    /// Creates a new directory only this process's user can enter.
    fn create() -> Result<TempDataDir, EmbeddedError> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let parent = std::env::temp_dir();
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = parent.join(format!("ff-embedded-pg-{}-{n}", std::process::id()));
            match DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {
                    // Own it before anything can fail, so it is removed then.
                    let mut temp = TempDataDir { path, keep: false };
                    temp.path = std::fs::canonicalize(&temp.path)
                        .map_err(|e| EmbeddedError::io(format!("resolving {}", temp.path.display()), e))?;
                    return Ok(temp);
                }
                // Left behind by an earlier process with the same id.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(EmbeddedError::io(format!("creating {}", path.display()), e)),
            }
        }
    }

    /// Removes the directory now.
    fn remove(mut self) -> Result<(), EmbeddedError> {
        self.keep = true;
        std::fs::remove_dir_all(&self.path)
            .map_err(|e| EmbeddedError::io(format!("removing {}", self.path.display()), e))
    }

    /// Leaves the directory in place.
    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for TempDataDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Checks that `name` can be created and named in a URL.
fn check_database_name(name: &str) -> Result<(), EmbeddedError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > MAX_DATABASE_NAME_BYTES {
        "it is longer than 63 bytes"
    } else if name.contains('\0') {
        "it contains a NUL character"
    } else {
        return Ok(());
    };
    Err(EmbeddedError::InvalidDatabaseName { name: name.to_owned(), reason })
}

/// `text` with every byte outside the URL's unreserved characters as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    encoded
}

/// Runs blocking work (child processes, file system) off the async threads.
async fn blocking<T, F>(work: F) -> Result<T, EmbeddedError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, EmbeddedError> + Send + 'static,
{
    tokio::task::spawn_blocking(work).await.map_err(|e| EmbeddedError::Task(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_database_names_for_urls() {
        let cases =
            [("ff", "ff"), ("my db", "my%20db"), ("a/b?c", "a%2Fb%3Fc"), ("é", "%C3%A9"), ("x-y.z_~", "x-y.z_~")];
        for (name, encoded) in cases {
            assert_eq!(percent_encode(name), encoded, "{name}");
        }
    }

    #[test]
    fn rejects_unusable_database_names() {
        for name in ["", "a\0b", &"x".repeat(64)] {
            assert!(matches!(check_database_name(name), Err(EmbeddedError::InvalidDatabaseName { .. })), "{name:?}");
        }
        for name in ["ff", "Demo Db", &"x".repeat(63)] {
            assert!(check_database_name(name).is_ok(), "{name:?}");
        }
    }
}
