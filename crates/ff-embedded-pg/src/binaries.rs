//! Running the PostgreSQL server binaries: finding them, and running them as
//! the unprivileged [`SERVER_USER`] when this process is root (`initdb` and
//! `postgres` refuse to run as root), via `runuser` or, failing that, `su`.
//!
//! Invariant: every server-side program (`initdb`, `postgres`, `pg_ctl`) is
//! started through [`PgBinaries::command`], so it runs as the same user that
//! owns the data directory ([`PgBinaries::hand_over`]).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::EmbeddedError;

/// The OS user the server runs as when this process is root.
pub const SERVER_USER: &str = "postgres";

/// Directory holding both `initdb` and `postgres`: the first directory on
/// `PATH` holding both (symlinks resolved, so that `pg_ctl` and `createdb` are
/// found next to the real binaries), else the newest
/// `/usr/lib/postgresql/<version>/bin`. `None` when there is none.
pub fn find_pg_bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .find(|d| is_pg_bin_dir(d));
    if let Some(dir) = on_path {
        let real = std::fs::canonicalize(dir.join("initdb"))
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .filter(|d| is_pg_bin_dir(d));
        return Some(real.unwrap_or(dir));
    }
    let mut versions: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let version =
                name.to_str()?.split('.').map(|part| part.parse::<u64>().ok()).collect::<Option<Vec<u64>>>()?;
            let bin = entry.path().join("bin");
            is_pg_bin_dir(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Effective user id of this process (from `/proc/self/status`, else `id -u`).
pub fn effective_uid() -> Option<u32> {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .and_then(|euid| euid.parse().ok());
        if uid.is_some() {
            return uid;
        }
    }
    let out = Command::new("id").arg("-u").output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// The located server binaries, and how to run them as the server's user.
#[derive(Clone, Debug)]
pub struct PgBinaries {
    bin_dir: PathBuf,
    switch: Option<Switch>,
}

/// How to become [`SERVER_USER`].
#[derive(Clone, Debug)]
enum Switch {
    Runuser(PathBuf),
    Su(PathBuf),
}

impl PgBinaries {
    /// Finds the binaries ([`find_pg_bin_dir`]) and, when this process is
    /// root, a way to run them as [`SERVER_USER`].
    pub fn locate() -> Result<PgBinaries, EmbeddedError> {
        let bin_dir = find_pg_bin_dir().ok_or(EmbeddedError::BinariesNotFound)?;
        let switch = if effective_uid() == Some(0) {
            let user_exists = Command::new("id").args(["-u", SERVER_USER]).output().is_ok_and(|o| o.status.success());
            if !user_exists {
                return Err(EmbeddedError::NoServerUser { user: SERVER_USER });
            }
            Some(match (find_program("runuser"), find_program("su")) {
                (Some(runuser), _) => Switch::Runuser(runuser),
                (None, Some(su)) => Switch::Su(su),
                (None, None) => return Err(EmbeddedError::NoUserSwitch { user: SERVER_USER }),
            })
        } else {
            None
        };
        Ok(PgBinaries { bin_dir, switch })
    }

    /// The directory the binaries are taken from.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The user the server runs as when it differs from this process's user
    /// ([`SERVER_USER`] when root), else `None`.
    pub fn server_user(&self) -> Option<&'static str> {
        self.switch.as_ref().map(|_| SERVER_USER)
    }

    /// A command running `program` from [`Self::bin_dir`] with `args`, as the
    /// server's user, in `/` (paths given to it must be absolute).
    pub fn command(&self, program: &str, args: &[&OsStr]) -> Command {
        self.as_server_user(self.bin_dir.join(program).as_os_str(), args)
    }

    /// Runs `program` (see [`Self::command`]) to completion; an error carries
    /// its output.
    pub fn run(&self, program: &str, args: &[&OsStr]) -> Result<(), EmbeddedError> {
        run_to_completion(self.command(program, args))
    }

    /// Gives `paths` (recursively) to the server's user when it differs from
    /// this process's user; does nothing otherwise.
    pub fn hand_over(&self, paths: &[&Path]) -> Result<(), EmbeddedError> {
        if self.switch.is_none() {
            return Ok(());
        }
        let owner = format!("{SERVER_USER}:{SERVER_USER}");
        let mut cmd = Command::new("chown");
        cmd.args(["-R", &owner]).args(paths);
        run_to_completion(cmd)
    }

    /// Checks that the server's user may create files in `dir` (it, and every
    /// directory above it, is reachable by that user).
    pub fn check_writable(&self, dir: &Path) -> Result<(), EmbeddedError> {
        let Some(user) = self.server_user() else {
            return Ok(());
        };
        let args = [OsStr::new("-w"), dir.as_os_str(), OsStr::new("-a"), OsStr::new("-x"), dir.as_os_str()];
        let writable = self.as_server_user(OsStr::new("test"), &args).output().is_ok_and(|o| o.status.success());
        if writable { Ok(()) } else { Err(EmbeddedError::DirNotAccessible { user, dir: dir.to_path_buf() }) }
    }

    /// A command running `program` (a path, or a name looked up on `PATH`)
    /// as the server's user.
    fn as_server_user(&self, program: &OsStr, args: &[&OsStr]) -> Command {
        let mut cmd = match &self.switch {
            None => {
                let mut cmd = Command::new(program);
                cmd.args(args);
                cmd
            }
            Some(Switch::Runuser(runuser)) => {
                let mut cmd = Command::new(runuser);
                cmd.args(["-u", SERVER_USER, "--"]).arg(program).args(args);
                cmd
            }
            Some(Switch::Su(su)) => {
                let mut line = OsString::from("exec");
                for word in std::iter::once(program).chain(args.iter().copied()) {
                    line.push(" ");
                    line.push(shell_quote(word));
                }
                let mut cmd = Command::new(su);
                cmd.args([SERVER_USER, "-s", "/bin/sh", "-c"]).arg(line);
                cmd
            }
        };
        // The caller's working directory may be closed to the server's user.
        cmd.current_dir("/");
        cmd
    }
}

/// Runs `cmd` to completion; an error carries its output.
pub(crate) fn run_to_completion(mut cmd: Command) -> Result<(), EmbeddedError> {
    let out = cmd.output().map_err(|e| EmbeddedError::io(format!("running {cmd:?}"), e))?;
    if out.status.success() {
        return Ok(());
    }
    Err(EmbeddedError::CommandFailed {
        command: format!("{cmd:?}"),
        status: out.status.to_string(),
        output: format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    })
}

fn is_pg_bin_dir(dir: &Path) -> bool {
    is_executable(&dir.join("initdb")) && is_executable(&dir.join("postgres"))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// First executable `name` on `PATH` or in the usual sbin directories.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

/// `word` in single quotes for /bin/sh.
fn shell_quote(word: &OsStr) -> OsString {
    let mut quoted = Vec::with_capacity(word.len() + 2);
    quoted.push(b'\'');
    for &b in word.as_bytes() {
        if b == b'\'' {
            quoted.extend_from_slice(b"'\\''");
        } else {
            quoted.push(b);
        }
    }
    quoted.push(b'\'');
    OsStr::from_bytes(&quoted).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_for_the_shell() {
        assert_eq!(shell_quote(OsStr::new("a b")), OsStr::new("'a b'"));
        assert_eq!(shell_quote(OsStr::new("it's")), OsStr::new("'it'\\''s'"));
    }

    #[test]
    fn reads_own_uid() {
        assert!(effective_uid().is_some());
    }
}
