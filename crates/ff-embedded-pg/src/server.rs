//! Building blocks for running one cluster with a lifecycle of the caller's
//! choosing: `initdb` ([`init_cluster`]), starting the server
//! ([`spawn_server`]), reading its `postmaster.pid` ([`read_postmaster_pid`]),
//! stopping it ([`stop_server`]).
//!
//! [`crate::EmbeddedPostgres`] composes them into a cluster owned by one
//! value; the test kit composes them into a cluster shared by test processes
//! that outlives them. Every cluster made here has the superuser
//! [`SUPERUSER`], trusts every local connection, and listens on 127.0.0.1 only.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use crate::{EmbeddedError, PgBinaries};

/// The superuser `initdb` creates (connections authenticate as it, without a
/// password).
pub const SUPERUSER: &str = "postgres";

/// Settings that trade crash safety for speed, for clusters nobody keeps.
const NON_DURABLE_SETTINGS: [&str; 3] = ["fsync=off", "synchronous_commit=off", "full_page_writes=off"];

/// Creates the cluster in `data` (which must not exist or be empty) with
/// `initdb`: superuser [`SUPERUSER`], trust authentication, UTF-8, locale C.
///
/// The directory is created and handed over to the server's user first. With
/// `durable == false` the files are not synced to disk (for throwaway
/// clusters).
pub fn init_cluster(bins: &PgBinaries, data: &Path, durable: bool) -> Result<(), EmbeddedError> {
    std::fs::create_dir_all(data).map_err(|e| EmbeddedError::io(format!("creating {}", data.display()), e))?;
    bins.hand_over(&[data])?;
    bins.check_writable(data)?;
    let mut args = vec![
        OsStr::new("-D"),
        data.as_os_str(),
        OsStr::new("-A"),
        OsStr::new("trust"),
        OsStr::new("-U"),
        OsStr::new(SUPERUSER),
        OsStr::new("-E"),
        OsStr::new("UTF8"),
        // Independent of the caller's (possibly not installed) locale.
        OsStr::new("--locale=C"),
    ];
    if !durable {
        args.push(OsStr::new("--no-sync"));
    }
    bins.run("initdb", &args)
}

/// How to start a server with [`spawn_server`].
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The data directory (initialised, absolute).
    pub data: PathBuf,
    /// The TCP port to listen on, on 127.0.0.1.
    pub port: u16,
    /// Directory for the Unix socket, created and handed over to the server's
    /// user if needed; `None` disables Unix sockets.
    pub socket_dir: Option<PathBuf>,
    /// Whether commits must survive a crash of the machine. When `false`,
    /// `fsync`, `synchronous_commit` and `full_page_writes` are off.
    pub durable: bool,
    /// Further `name=value` server settings.
    pub settings: Vec<String>,
    /// File the server's output is appended to.
    pub log: PathBuf,
}

/// Starts `postgres` as described by `config` and returns the process
/// (`postgres` itself, or `runuser`/`su` running it).
///
/// It runs in its own process group, so a terminal's Ctrl-C does not reach it:
/// its owner decides when it stops ([`stop_server`]). The caller waits for it
/// to be ready ([`read_postmaster_pid`]).
pub fn spawn_server(bins: &PgBinaries, config: &ServerConfig) -> Result<Child, EmbeddedError> {
    if let Some(sock) = &config.socket_dir {
        std::fs::create_dir_all(sock).map_err(|e| EmbeddedError::io(format!("creating {}", sock.display()), e))?;
        bins.hand_over(&[sock])?;
    }
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&config.log)
        .map_err(|e| EmbeddedError::io(format!("opening {}", config.log.display()), e))?;
    let log_err = log.try_clone().map_err(|e| EmbeddedError::io("duplicating the log file handle", e))?;
    let port = config.port.to_string();
    let socket_dir = config.socket_dir.as_deref().map_or(OsStr::new(""), Path::as_os_str);
    let mut args = vec![
        OsStr::new("-D"),
        config.data.as_os_str(),
        OsStr::new("-p"),
        OsStr::new(&port),
        OsStr::new("-k"),
        socket_dir,
    ];
    let durability = if config.durable { &[][..] } else { &NON_DURABLE_SETTINGS[..] };
    let settings = std::iter::once("listen_addresses=127.0.0.1")
        .chain(durability.iter().copied())
        .chain(config.settings.iter().map(String::as_str));
    for setting in settings {
        args.extend([OsStr::new("-c"), OsStr::new(setting)]);
    }
    let mut cmd = bins.command("postgres", &args);
    cmd.stdin(Stdio::null()).stdout(log).stderr(log_err).process_group(0);
    cmd.spawn().map_err(|e| EmbeddedError::io(format!("starting {cmd:?}"), e))
}

/// What a cluster's `postmaster.pid` says about the server running it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PostmasterPid {
    /// Process id of the postmaster.
    pub pid: u32,
    /// The TCP port it listens on, once written.
    pub port: Option<u16>,
    /// Whether it accepts connections (status `ready`).
    pub ready: bool,
}

/// Reads `data/postmaster.pid`; `None` when there is no (readable) file. The
/// file may be stale: its process may be gone.
pub fn read_postmaster_pid(data: &Path) -> Option<PostmasterPid> {
    let contents = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    // Lines: pid, data directory, start time, port, socket directory, listen
    // address, shared memory key, status.
    let lines: Vec<&str> = contents.lines().map(str::trim).collect();
    let pid = lines.first()?.parse().ok()?;
    let port = lines.get(3).and_then(|p| p.parse().ok());
    let ready = lines.get(7) == Some(&"ready");
    Some(PostmasterPid { pid, port, ready })
}

/// How [`stop_server`] shuts the server down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// Roll back open transactions, disconnect, checkpoint, exit.
    Fast,
    /// Exit at once; the next start runs crash recovery.
    Immediate,
}

/// Stops the server running `data` with `pg_ctl stop`, waiting (up to a
/// minute) until it has exited. Fails when no server runs it.
pub fn stop_server(bins: &PgBinaries, data: &Path, mode: StopMode) -> Result<(), EmbeddedError> {
    let mode = match mode {
        StopMode::Fast => "fast",
        StopMode::Immediate => "immediate",
    };
    let args = [
        OsStr::new("stop"),
        OsStr::new("-D"),
        data.as_os_str(),
        OsStr::new("-m"),
        OsStr::new(mode),
        OsStr::new("-w"),
        OsStr::new("-t"),
        OsStr::new("60"),
    ];
    bins.run("pg_ctl", &args)
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16, EmbeddedError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| EmbeddedError::io("finding a free TCP port on 127.0.0.1", e))
}

/// The last few lines of a server log, for error messages.
pub fn log_tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let len = file.metadata().map_or(0, |m| m.len());
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(3000)));
        let mut bytes = Vec::new();
        let _ = file.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_postmaster_pid_file() {
        let dir = std::env::temp_dir().join(format!("ff-embedded-pg-pidfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create dir");
        let cases = [
            ("4242\n/data\n1700000000\n5433\n\n127.0.0.1\n  1234     5678\nready   \n", 4242, Some(5433), true),
            ("4242\n/data\n1700000000\n5433\n\n127.0.0.1\n  1234     5678\nstarting\n", 4242, Some(5433), false),
            ("4242\n/data\n", 4242, None, false),
        ];
        for (contents, pid, port, ready) in cases {
            std::fs::write(dir.join("postmaster.pid"), contents).expect("write pid file");
            assert_eq!(read_postmaster_pid(&dir), Some(PostmasterPid { pid, port, ready }), "{contents:?}");
        }
        std::fs::write(dir.join("postmaster.pid"), "garbage\n").expect("write pid file");
        assert_eq!(read_postmaster_pid(&dir), None);
        std::fs::remove_dir_all(&dir).expect("remove dir");
    }
}
