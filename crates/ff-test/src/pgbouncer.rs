//! A private PgBouncer in transaction-pooling mode in front of the tests' server, for tests of
//! the engine behind a transaction pooler.
//!
//! One per test process, started on first use ([`pgbouncer`]) from the installed `pgbouncer`
//! binary (Debian package `pgbouncer`; when it is missing the tests that need it fail, saying
//! so). It listens on a free port of 127.0.0.1, forwards every database name to the server of
//! [`admin_url`](crate::admin_url) and gives each database only a few server connections, so
//! that a backend's pooled connections really do share server connections transaction by
//! transaction. It is killed when the test process ends (`PR_SET_PDEATHSIG`). When this
//! process is root it runs as `postgres` (PgBouncer refuses to run as root).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::sync::OnceCell;

/// Server connections PgBouncer opens per database (and user): fewer than a backend's pool.
pub const SERVER_CONNECTIONS_PER_DATABASE: u32 = 4;

/// How long a freshly started PgBouncer may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A running PgBouncer.
#[derive(Debug)]
pub struct PgBouncer {
    port: u16,
    dir: PathBuf,
    user: String,
}

static BOUNCER: OnceCell<Result<PgBouncer, String>> = OnceCell::const_new();

/// This process's PgBouncer, started on first use.
pub async fn pgbouncer() -> Result<&'static PgBouncer, String> {
    BOUNCER.get_or_init(start).await.as_ref().map_err(Clone::clone)
}

impl PgBouncer {
    /// The URL of database `direct_url` names, reached through this PgBouncer (same user).
    pub fn url_for(&self, direct_url: &str) -> Result<String, String> {
        let options =
            PgConnectOptions::from_str(direct_url).map_err(|e| format!("not a usable URL {direct_url:?}: {e}"))?;
        let database = options.get_database().ok_or_else(|| format!("{direct_url:?} names no database"))?;
        Ok(format!("postgres://{}@127.0.0.1:{}/{database}?sslmode=disable", self.user, self.port))
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding its configuration and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The uid and gid of `postgres`, when this process is root.
fn switch_to() -> Result<Option<(u32, u32)>, String> {
    if ff_embedded_pg::binaries::effective_uid() != Some(0) {
        return Ok(None);
    }
    let id = |flag: &str| -> Result<u32, String> {
        let out = Command::new("id").args([flag, "postgres"]).output().map_err(|e| format!("running id: {e}"))?;
        if !out.status.success() {
            return Err("PgBouncer refuses to run as root and there is no user `postgres` to run it as".into());
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|e| format!("reading id's output: {e}"))
    };
    Ok(Some((id("-u")?, id("-g")?)))
}

async fn start() -> Result<PgBouncer, String> {
    let binary = ff_embedded_pg::binaries::find_program("pgbouncer").ok_or_else(|| {
        "no pgbouncer binary (looked in PATH, /usr/sbin, /sbin, /usr/bin and /bin): install the Debian package `pgbouncer` \
         (apt-get install pgbouncer); .ci/run does"
            .to_owned()
    })?;
    let admin = crate::admin_url().await?;
    let upstream = PgConnectOptions::from_str(&admin).map_err(|e| format!("admin URL {admin:?}: {e}"))?;
    let user = upstream.get_username().to_owned();
    let port = ff_embedded_pg::server::free_port().map_err(|e| e.to_string())?;
    let parent = std::env::temp_dir().join("ff-test-pgbouncer");
    remove_dead(&parent);
    let dir = parent.join(format!("{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let switch = switch_to()?;
    let config = format!(
        "[databases]\n\
         * = host={host} port={upstream_port}\n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {port}\n\
         unix_socket_dir =\n\
         auth_type = trust\n\
         auth_file = {dir}/users.txt\n\
         pool_mode = transaction\n\
         default_pool_size = {SERVER_CONNECTIONS_PER_DATABASE}\n\
         max_client_conn = 4000\n\
         ignore_startup_parameters = extra_float_digits,options\n\
         logfile = {dir}/pgbouncer.log\n\
         pidfile = {dir}/pgbouncer.pid\n\
         log_connections = 0\n\
         log_disconnections = 0\n",
        host = upstream.get_host(),
        upstream_port = upstream.get_port(),
        dir = dir.display(),
    );
    std::fs::write(dir.join("pgbouncer.ini"), config).map_err(|e| format!("writing pgbouncer.ini: {e}"))?;
    std::fs::write(dir.join("users.txt"), format!("\"{user}\" \"\"\n"))
        .map_err(|e| format!("writing users.txt: {e}"))?;
    if let Some((uid, gid)) = switch {
        let status = Command::new("chown")
            .args(["-R", &format!("{uid}:{gid}")])
            .arg(&dir)
            .status()
            .map_err(|e| format!("running chown: {e}"))?;
        if !status.success() {
            return Err(format!("could not give {} to postgres", dir.display()));
        }
    }
    spawn(binary, dir.join("pgbouncer.ini"), switch)?;
    let bouncer = PgBouncer { port, dir, user };
    wait_ready(&bouncer).await?;
    Ok(bouncer)
}

/// Removes the directories of test processes that have ended (named `<pid>-<port>`; their
/// PgBouncer died with them, leaving its files).
fn remove_dead(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name.to_str().and_then(|n| n.split_once('-')).map(|(pid, _)| pid.to_owned());
        if let Some(pid) = pid.filter(|p| p.parse::<u32>().is_ok())
            && !Path::new("/proc").join(&pid).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Starts PgBouncer from a thread that lives as long as the process: the parent-death signal
/// fires when the spawning thread ends, and a test's thread ends with the test.
fn spawn(binary: PathBuf, config: PathBuf, switch: Option<(u32, u32)>) -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("pgbouncer-parent".into())
        .spawn(move || {
            let mut cmd = Command::new(&binary);
            cmd.arg(&config).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
            if let Some((uid, gid)) = switch {
                cmd.uid(uid).gid(gid);
            }
            // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            match cmd.spawn() {
                Ok(mut child) => {
                    let _ = tx.send(Ok(()));
                    let _ = child.wait();
                    // Keep the thread (the child's parent) alive until the process ends.
                    loop {
                        std::thread::park();
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("starting {}: {e}", binary.display())));
                }
            }
        })
        .map_err(|e| format!("starting the pgbouncer thread: {e}"))?;
    rx.recv().map_err(|_| "the pgbouncer thread ended".to_owned())?
}

async fn wait_ready(bouncer: &PgBouncer) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    let url = format!("postgres://{}@127.0.0.1:{}/postgres?sslmode=disable", bouncer.user, bouncer.port);
    loop {
        match PgConnection::connect(&url).await {
            Ok(conn) => {
                let _ = conn.close().await;
                return Ok(());
            }
            Err(e) if Instant::now() >= deadline => {
                let log = std::fs::read_to_string(bouncer.dir.join("pgbouncer.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                return Err(format!(
                    "pgbouncer on port {} did not accept connections within {START_TIMEOUT:?}: {e}\nlog:\n{}",
                    bouncer.port,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
