//! The private throwaway PostgreSQL cluster used when `DATABASE_URL` is unset,
//! also usable by other tools (e.g. benchmarks) that need a scratch server.
//! Initialising, starting and stopping it is [`ff_embedded_pg::server`]'s job;
//! this module owns sharing it.
//!
//! A cluster lives in one directory (by default [`default_dir`]):
//!
//! * `lock` — file lock; whoever holds it may initialise, start or probe;
//! * `data/` — the cluster (superuser `postgres`, trust authentication, not
//!   synced to disk);
//! * `sock/` — the server's Unix socket directory;
//! * `port` — the TCP port the server listens on (127.0.0.1 only);
//! * `postgres.log` — the server's output.
//!
//! All processes of a test run share it: the first one to take the lock starts
//! the server (detached, in its own process group, so it outlives the process
//! and ignores the terminal's Ctrl-C); the others find it alive through the
//! `port` file and reuse it. It keeps running after the tests, to be reused by
//! the next run. When this process is root, the server runs as `postgres`.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use ff_embedded_pg::server::{self, ServerConfig, StopMode};
use ff_embedded_pg::{EmbeddedError, PgBinaries};
use sqlx::{Connection, PgConnection};

pub use ff_embedded_pg::find_pg_bin_dir;

/// How long a freshly started server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How many fresh ports to try when the server cannot start.
const START_ATTEMPTS: usize = 3;

/// Settings beyond [`ff_embedded_pg::server`]'s: tests run many pools at once.
const TEST_SETTINGS: [&str; 1] = ["max_connections=500"];

/// The cluster directory shared by all test processes of this user:
/// `<temp dir>/ff-test-cluster-<effective uid>`.
pub fn default_dir() -> PathBuf {
    let uid = ff_embedded_pg::binaries::effective_uid().map_or_else(|| "unknown".to_owned(), |u| u.to_string());
    std::env::temp_dir().join(format!("ff-test-cluster-{uid}"))
}

/// Makes sure a private cluster in `dir` is running and returns the URL of its
/// admin database, `postgres://postgres@127.0.0.1:<port>/postgres`.
///
/// Reuses a running server of this cluster, or initialises (first time) and
/// starts one, waiting up to 30 s for it to accept connections. Serialised
/// across threads and processes by a file lock in `dir`.
pub async fn ensure_private_cluster(dir: &Path) -> Result<String, String> {
    let dir = dir.to_path_buf();
    let (lock, cluster) = blocking(move || {
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let dir = std::fs::canonicalize(&dir).map_err(|e| format!("resolving {}: {e}", dir.display()))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("opening {}: {e}", lock_path.display()))?;
        lock.lock().map_err(|e| format!("locking {}: {e}", lock_path.display()))?;
        Ok((lock, Cluster::new(dir)?))
    })
    .await?;
    let result = cluster.ensure_running().await;
    drop(lock);
    result
}

/// Paths and binaries of one cluster directory.
#[derive(Clone, Debug)]
struct Cluster {
    data: PathBuf,
    sock: PathBuf,
    port_file: PathBuf,
    log: PathBuf,
    bins: PgBinaries,
}

impl Cluster {
    fn new(dir: PathBuf) -> Result<Cluster, String> {
        Ok(Cluster {
            data: dir.join("data"),
            sock: dir.join("sock"),
            port_file: dir.join("port"),
            log: dir.join("postgres.log"),
            bins: PgBinaries::locate().map_err(|e| e.to_string())?,
        })
    }

    /// With the lock held: reuse, or (initialise and) start.
    async fn ensure_running(&self) -> Result<String, String> {
        if let Some(port) = read_port(&self.port_file)
            && let Ok(url) = self.probe(port).await
        {
            return Ok(url);
        }
        // Ours, but not where the port file says, or still recovering.
        if let Some(port) = self.live_postmaster_port() {
            if let Ok(url) = self.wait_ready(port, None).await {
                self.write_port(port)?;
                return Ok(url);
            }
            // Wedged: stop it (errors show up when starting again).
            let me = self.clone();
            let _ = blocking(move || {
                server::stop_server(&me.bins, &me.data, StopMode::Immediate).map_err(|e| e.to_string())
            })
            .await;
        }
        if !self.data.join("PG_VERSION").exists() {
            let me = self.clone();
            blocking(move || me.init()).await?;
        }
        let mut attempt = 1;
        loop {
            let port = server::free_port().map_err(|e| e.to_string())?;
            let child = self.start(port)?;
            match self.wait_ready(port, Some(child)).await {
                Ok(url) => return Ok(url),
                // E.g. someone else took the port meanwhile: try another one.
                Err(NotReady::Exited(_)) if attempt < START_ATTEMPTS => attempt += 1,
                Err(NotReady::Exited(e) | NotReady::TimedOut(e)) => return Err(e),
            }
        }
    }

    /// `initdb` into an empty `data/`.
    fn init(&self) -> Result<(), String> {
        if self.data.exists() {
            // Left over from an initdb that did not finish.
            std::fs::remove_dir_all(&self.data).map_err(|e| format!("removing {}: {e}", self.data.display()))?;
        }
        server::init_cluster(&self.bins, &self.data, false).map_err(|e| e.to_string())
    }

    /// Starts the server on `port`, detached, output appended to the log.
    fn start(&self, port: u16) -> Result<Child, String> {
        self.write_port(port)?;
        let config = ServerConfig {
            data: self.data.clone(),
            port,
            socket_dir: Some(self.sock.clone()),
            durable: false,
            settings: TEST_SETTINGS.map(str::to_owned).to_vec(),
            log: self.log.clone(),
        };
        server::spawn_server(&self.bins, &config).map_err(|e| e.to_string())
    }

    /// Polls until the server on `port` is ours and accepts connections. With
    /// the `child` that starts it, gives up as soon as that exits.
    async fn wait_ready(&self, port: u16, mut child: Option<Child>) -> Result<String, NotReady> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let last_error = match self.probe(port).await {
                Ok(url) => return Ok(url),
                Err(e) => e,
            };
            if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                let e = EmbeddedError::ServerExited {
                    status: status.to_string(),
                    log: self.log.clone(),
                    tail: server::log_tail(&self.log),
                };
                return Err(NotReady::Exited(e.to_string()));
            }
            if Instant::now() >= deadline {
                return Err(NotReady::TimedOut(format!(
                    "the PostgreSQL server on port {port} did not accept connections within \
                     {START_TIMEOUT:?} ({last_error}); end of {}:\n{}",
                    self.log.display(),
                    server::log_tail(&self.log)
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Connects to `port` and checks that the server there runs this cluster.
    async fn probe(&self, port: u16) -> Result<String, String> {
        let url = format!("postgres://{}@127.0.0.1:{port}/postgres", server::SUPERUSER);
        let connect = PgConnection::connect(&url);
        let mut conn = match tokio::time::timeout(Duration::from_secs(3), connect).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("connection timed out".into()),
        };
        let served: Result<String, _> = sqlx::query_scalar("SHOW data_directory").fetch_one(&mut conn).await;
        let _ = conn.close().await;
        let served = served.map_err(|e| e.to_string())?;
        if std::fs::canonicalize(&served).ok().as_ref() == Some(&self.data) {
            Ok(url)
        } else {
            Err(format!("port {port} serves {served}, not this cluster"))
        }
    }

    /// Port of a live postmaster running this cluster's data directory, from
    /// `data/postmaster.pid`. A pid file naming any other process is stale and
    /// removed.
    fn live_postmaster_port(&self) -> Option<u16> {
        let pm = server::read_postmaster_pid(&self.data)?;
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", pm.pid)).unwrap_or_default();
        let data = self.data.as_os_str().as_encoded_bytes();
        if cmdline.windows(data.len()).any(|w| w == data) {
            pm.port
        } else {
            let _ = std::fs::remove_file(self.data.join("postmaster.pid"));
            None
        }
    }

    fn write_port(&self, port: u16) -> Result<(), String> {
        std::fs::write(&self.port_file, format!("{port}\n"))
            .map_err(|e| format!("writing {}: {e}", self.port_file.display()))
    }
}

/// Why [`Cluster::wait_ready`] gave up (with a message saying why).
enum NotReady {
    /// The server process exited.
    Exited(String),
    /// It did not accept connections in time.
    TimedOut(String),
}

fn read_port(path: &Path) -> Option<u16> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Runs blocking work (file locks, child processes) off the async threads.
async fn blocking<T, F>(work: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, String> + Send + 'static,
{
    tokio::task::spawn_blocking(work).await.map_err(|e| format!("blocking task failed: {e}"))?
}
