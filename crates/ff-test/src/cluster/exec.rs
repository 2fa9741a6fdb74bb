//! Running the PostgreSQL server binaries: finding them, and running them as
//! the unprivileged `postgres` user when this process is root (they refuse to
//! run as root), via `runuser` or, failing that, `su`.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The user the server runs as when this process is root.
pub(crate) const PG_USER: &str = "postgres";

/// Directory holding both `initdb` and `postgres`: the first on `PATH`, else
/// the newest `/usr/lib/postgresql/<version>/bin`.
pub(crate) fn find_pg_bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .find(|d| is_pg_bin_dir(d));
    if let Some(dir) = on_path {
        // Resolve symlinks such as /usr/local/bin/initdb so that helpers like
        // pg_ctl are found next to the real binaries.
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

fn is_pg_bin_dir(dir: &Path) -> bool {
    is_executable(&dir.join("initdb")) && is_executable(&dir.join("postgres"))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// First executable `name` on `PATH` or in the usual sbin directories.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

/// Effective user id of this process (from /proc/self/status, else `id -u`).
pub(crate) fn effective_uid() -> Option<u32> {
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

/// How to become the `postgres` user.
#[derive(Clone, Debug)]
enum Switch {
    Runuser(PathBuf),
    Su(PathBuf),
}

/// Builds commands for the PostgreSQL binaries, as `postgres` when root.
#[derive(Clone, Debug)]
pub(crate) struct Runner {
    bin_dir: PathBuf,
    switch: Option<Switch>,
}

impl Runner {
    /// Finds the binaries and, when root, a way to drop to `postgres`.
    pub(crate) fn new() -> Result<Runner, String> {
        let bin_dir = find_pg_bin_dir().ok_or(
            "no PostgreSQL server binaries (initdb and postgres) on PATH or under \
             /usr/lib/postgresql/<version>/bin",
        )?;
        let switch = if effective_uid() == Some(0) {
            let user_exists = Command::new("id").args(["-u", PG_USER]).output().is_ok_and(|o| o.status.success());
            if !user_exists {
                return Err(format!(
                    "running as root, and PostgreSQL refuses to run as root, but there is no \
                     `{PG_USER}` user to run it as (the Debian package `postgresql` creates it; \
                     or run the tests as a non-root user)"
                ));
            }
            Some(match (find_program("runuser"), find_program("su")) {
                (Some(runuser), _) => Switch::Runuser(runuser),
                (None, Some(su)) => Switch::Su(su),
                (None, None) => {
                    return Err(format!(
                        "running as root, and neither `runuser` nor `su` is available to run \
                         PostgreSQL as the `{PG_USER}` user"
                    ));
                }
            })
        } else {
            None
        };
        Ok(Runner { bin_dir, switch })
    }

    /// Whether commands are run as the `postgres` user (we are root).
    pub(crate) fn switches_user(&self) -> bool {
        self.switch.is_some()
    }

    /// A command running `program` (from the binaries' directory) with `args`.
    pub(crate) fn command(&self, program: &str, args: &[&OsStr]) -> Command {
        let program = self.bin_dir.join(program);
        match &self.switch {
            None => {
                let mut cmd = Command::new(program);
                cmd.args(args);
                cmd
            }
            Some(Switch::Runuser(runuser)) => {
                let mut cmd = Command::new(runuser);
                cmd.args(["-u", PG_USER, "--"]).arg(program).args(args);
                cmd
            }
            Some(Switch::Su(su)) => {
                let mut line = OsString::from("exec");
                for word in std::iter::once(program.as_os_str()).chain(args.iter().copied()) {
                    line.push(" ");
                    line.push(shell_quote(word));
                }
                let mut cmd = Command::new(su);
                cmd.args([PG_USER, "-s", "/bin/sh", "-c"]).arg(line);
                cmd
            }
        }
    }

    /// Runs `program` to completion; an error carries its output.
    pub(crate) fn run(&self, program: &str, args: &[&OsStr]) -> Result<(), String> {
        let mut cmd = self.command(program, args);
        let out = cmd.output().map_err(|e| format!("running {cmd:?}: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        Err(format!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }

    /// Gives `paths` (recursively) to the `postgres` user when we are root.
    pub(crate) fn hand_over(&self, paths: &[&Path]) -> Result<(), String> {
        if !self.switches_user() {
            return Ok(());
        }
        let owner = format!("{PG_USER}:{PG_USER}");
        let out = Command::new("chown")
            .args(["-R", &owner])
            .args(paths)
            .output()
            .map_err(|e| format!("running chown: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("chown -R {owner} {paths:?} failed: {}", String::from_utf8_lossy(&out.stderr)))
        }
    }
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
