//! The `ff` binary end to end: the demo on a given database and on its own embedded cluster,
//! schema migration commands, and configuration errors.

use std::process::{Command, Output};

use ff_test::TestDb;

fn ff(args: &[&str], database_url: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ff"));
    cmd.args(args).env_remove("DATABASE_URL").env("RUST_LOG", "warn");
    if let Some(url) = database_url {
        cmd.env("DATABASE_URL", url);
    }
    cmd.output().expect("ff runs")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test]
async fn the_demo_runs_on_a_given_database_and_its_outcome_matches() {
    let db = TestDb::empty().await;
    let url = db.url().to_owned();
    let out = ff(&["demo", "--executions", "200", "--workers", "2"], Some(&url));
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("Outcome matches the workload's expectations."), "{all}");
    let rows = [
        "completed",
        "failed",
        "cancelled",
        "skipped",
        "by operator",
        "retried",
        "reclaimed",
        "replayed",
        "approved",
        "timed out",
    ];
    for row in rows {
        let line = all.lines().find(|l| l.trim_start().starts_with(row)).unwrap_or_else(|| panic!("{row}: {all}"));
        assert!(line.trim_end().ends_with("ok"), "{line}");
    }
    // The two flows: the strict one fails (its all-of load is skipped), the tolerant one
    // completes (its load needs three of four transforms).
    let flow =
        |name: &str| all.lines().find(|l| l.contains(name)).unwrap_or_else(|| panic!("{name}: {all}")).to_owned();
    assert!(flow("etl.strict").contains("failed     (expected failed)"), "{all}");
    assert!(flow("etl.tolerant").contains("completed  (expected completed)"), "{all}");
    assert!(flow("etl.tolerant").contains("3 of 4 succeeded"), "{all}");
    // The operator's two actions, through the API.
    assert!(all.contains("cancelled by operator: 1 "), "{all}");
    assert!(all.contains("replayed: 1 (then completed)"), "{all}");
    // The two suspensions: the demo approves one through its waitpoint; the other times out.
    assert!(all.contains("Operator approved "), "{all}");
    assert!(all.contains("approved: 1 (then completed), timed out: 1 (then failed)"), "{all}");
    // The two pool workers and the killed one, whose registration has not lapsed yet.
    let registry = all.lines().find(|l| l.trim_start().starts_with("registry")).unwrap_or_else(|| panic!("{all}"));
    assert!(registry.contains(" 3 workers registered: "), "{registry}");
    assert_eq!(registry.matches("-pool-").count(), 2, "{registry}");
    assert!(registry.contains("doomed-"), "{registry}");
}

#[tokio::test]
async fn the_demo_starts_its_own_cluster_without_a_database_url() {
    let out = ff(&["demo", "--executions", "50", "--workers", "1"], None);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("Starting a private PostgreSQL cluster"), "{all}");
    assert!(all.contains("Outcome matches the workload's expectations."), "{all}");
}

#[test]
fn serve_without_a_database_says_how_to_get_one() {
    let out = ff(&["serve", "--listen", "127.0.0.1:0"], None);
    assert!(!out.status.success());
    assert!(text(&out).contains("set DATABASE_URL"), "{}", text(&out));
    let help = text(&ff(&["serve", "--help"], None));
    for flag in ["--listen", "FF_API_TOKEN", "DATABASE_URL", "--cors-origins", "--embedded", "--migrate"] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}

#[tokio::test]
async fn migrate_applies_the_schema_and_reports_its_version() {
    let db = TestDb::empty().await;
    let url = db.url().to_owned();
    let before = ff(&["migrate", "status"], Some(&url));
    assert!(!before.status.success(), "{}", text(&before));
    assert!(text(&before).contains("not migrated"), "{}", text(&before));
    let apply = ff(&["migrate", "apply"], Some(&url));
    assert!(apply.status.success(), "{}", text(&apply));
    let again = ff(&["migrate", "apply"], Some(&url));
    assert!(again.status.success(), "applying twice is a no-op: {}", text(&again));
    let after = ff(&["migrate", "status"], Some(&url));
    assert!(after.status.success(), "{}", text(&after));
    let bad = ff(&["migrate", "status"], Some("postgres://nobody@127.0.0.1:1/none"));
    assert!(!bad.status.success());
    assert!(text(&bad).contains("connecting to the database"), "{}", text(&bad));
}

#[test]
fn ctrl_c_stops_the_demo_and_removes_its_cluster() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;

    // Once while the cluster is still starting, once while the workload runs.
    for trigger in ["Starting a private PostgreSQL cluster", "Killed worker"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ff"))
            .args(["demo", "--executions", "20000"])
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ff runs");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut log = String::new();
        loop {
            let mut line = String::new();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "{trigger:?} never printed:\n{log}");
            log.push_str(&line);
            if line.contains(trigger) {
                // SAFETY: plain kill(2) on our own child's pid.
                let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
                assert_eq!(sent, 0, "SIGINT delivered");
                break;
            }
        }
        stderr.read_to_string(&mut log).unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "{log}");
        assert!(log.contains("Interrupted"), "{log}");
        let port = log
            .split("postgres://postgres@127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("no cluster address in:\n{log}"));
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "the cluster still listens:\n{log}");
        let prefix = format!("ff-embedded-pg-{}-", child.id());
        let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .collect();
        assert!(left.is_empty(), "data directories left behind: {left:?}\n{log}");
    }
}
