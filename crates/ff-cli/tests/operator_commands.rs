//! The `ff` admin commands (`ff executions ...`, `ff workers list`) run as the built binary
//! against a real server with a bearer token: each command's output, and a refusal printing the
//! server's code with a non-zero exit.

use std::process::Output;

use ff_backend_postgres::MIGRATOR;
use ff_core::wire::ClaimRequest;
use ff_core::{ExecutionId, LaneId, Namespace, RegisterWorkerArgs, WorkerId, WorkerInstanceId};
use ff_sdk::{Client, SubmitRequest};
use ff_server::{Server, ServerConfig};
use ff_test::TestDb;
use serde_json::{Value, json};

const TOKEN: &str = "operator-token";

/// Runs `ff <args>` with `FF_URL` and, when given, `FF_API_TOKEN` in its environment.
async fn ff(url: &str, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ff"));
    cmd.args(args).env("FF_URL", url).env_remove("FF_API_TOKEN").env("RUST_LOG", "warn");
    if let Some(t) = token {
        cmd.env("FF_API_TOKEN", t);
    }
    // The server runs on this test's runtime: wait for the process off it.
    tokio::task::spawn_blocking(move || cmd.output().expect("ff runs")).await.unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn all(out: &Output) -> String {
    format!("{}{}", stdout(out), String::from_utf8_lossy(&out.stderr))
}

/// Asserts the command succeeded and returns its standard output.
fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", all(out));
    stdout(out)
}

/// Asserts the command failed with the server's `code` in its message.
fn refused(out: &Output, code: &str) {
    assert!(!out.status.success(), "succeeded: {}", all(out));
    let text = all(out);
    assert!(text.contains("error:") && text.contains(code), "{code} missing: {text}");
}

#[tokio::test]
async fn admin_commands_act_on_a_running_server() {
    let db = TestDb::new(&MIGRATOR).await;
    let mut cfg = ServerConfig::new(db.url());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.api_token = Some(TOKEN.into());
    cfg.pool_size = 4;
    cfg.shutdown_grace_ms = 5_000;
    let server = Server::start(cfg).await.expect("server starts");
    let url = server.url();
    let client = Client::new(&url).unwrap().with_token(TOKEN);
    let submit = |lane: &str| {
        let mut req = SubmitRequest::json(lane, "k", json!({"n": 1}));
        req.tags.insert("app.owner".into(), "ann".into());
        req
    };
    let a = client.submit(&submit("media")).await.unwrap().execution_id();
    let b = client.submit(&submit("media")).await.unwrap().execution_id();
    let (a_s, b_s) = (a.to_string(), b.to_string());
    let u: &str = &url;
    let run = move |args: &'static [&'static str]| ff(u, Some(TOKEN), args);
    let with_id = |args: &[&str], id: &str| -> Vec<String> {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.insert(2, id.to_owned());
        v
    };
    let run_id = move |args: &[&str], id: &ExecutionId| {
        let args = with_id(args, &id.to_string());
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            ff(u, Some(TOKEN), &refs).await
        }
    };

    // list: the ids of one partition.
    let partition = a.partition_index().to_string();
    let list = ff(&url, Some(TOKEN), &["executions", "list", "--partition", &partition]).await;
    let ids = ok(&list);
    assert!(ids.lines().any(|l| l == a_s), "{ids}");
    let page = ok(&ff(&url, Some(TOKEN), &["executions", "list", "--partition", &partition, "--json"]).await);
    let page: Value = serde_json::from_str(&page).unwrap();
    assert!(page["executions"].as_array().unwrap().contains(&json!(a_s)), "{page}");

    // show: text and JSON.
    let shown = ok(&run_id(&["executions", "show"], &a).await);
    assert!(shown.contains(&format!("execution   {a_s}")), "{shown}");
    assert!(shown.contains("state       waiting"), "{shown}");
    assert!(shown.contains("lane        media"), "{shown}");
    assert!(shown.contains("tags        app.owner=ann"), "{shown}");
    let json_snap: Value = serde_json::from_str(&ok(&run_id(&["executions", "show", "--json"], &a).await)).unwrap();
    assert_eq!((&json_snap["execution_id"], &json_snap["public_state"]), (&json!(a_s), &json!("waiting")));
    let ghost = ExecutionId::from_parts(a.partition_index(), uuid::Uuid::nil());
    refused(&run_id(&["executions", "show"], &ghost).await, "not_found");

    // priority: changed, and a refusal with the server's code.
    let changed = ok(&run_id(&["executions", "priority", "500"], &a).await);
    assert_eq!(changed.trim(), format!("priority of {a_s}: 0 -> 500"));
    refused(&run_id(&["executions", "priority", "9001"], &a).await, "priority_out_of_range");
    refused(&run_id(&["executions", "priority", "-1"], &a).await, "priority_out_of_range");

    // revoke: a held lease, after refusing the wrong holder.
    let claim = ClaimRequest {
        lane_id: "media".into(),
        worker_instance_id: "w1".into(),
        capabilities: Vec::new(),
        lease_ttl_ms: 600_000,
        max: 1,
        max_wait_ms: 0,
    };
    let claimed = client.claim("pool", &claim).await.unwrap();
    assert_eq!(claimed.claimed[0].execution_id, a, "the higher priority is claimed first");
    refused(&run_id(&["executions", "revoke", "--worker-instance", "w2"], &a).await, "stale_lease");
    let revoked = ok(&run_id(&["executions", "revoke", "--worker-instance", "w1", "--reason", "hung"], &a).await);
    assert!(revoked.starts_with("revoked lease ") && revoked.contains(&a_s), "{revoked}");
    let noop = ok(&run_id(&["executions", "revoke"], &a).await);
    assert_eq!(noop.trim(), format!("nothing to revoke for {a_s}: already_revoked"));

    // cancel, then replay.
    refused(&run_id(&["executions", "replay"], &b).await, "execution_not_terminal");
    let cancelled = ok(&run_id(&["executions", "cancel", "--reason", "not needed"], &b).await);
    assert_eq!(cancelled.trim(), format!("cancelled {b_s}: cancelled"));
    refused(&run_id(&["executions", "cancel", "--reason", "again"], &b).await, "terminal");
    let replayed = ok(&run_id(&["executions", "replay"], &b).await);
    assert_eq!(replayed.trim(), format!("replayed {b_s}: waiting (replay 1)"));
    let replayed: Value = serde_json::from_str(&ok(&run_id(&["executions", "show", "--json"], &b).await)).unwrap();
    assert_eq!(replayed["replay_count"], 1);
    let shown = ok(&run_id(&["executions", "show"], &a).await);
    assert!(shown.contains("state       active (lifecycle active, ownership lease_revoked"), "{shown}");
    assert!(shown.contains("detail      hung"), "{shown}");

    // workers list: text and JSON.
    let registration = RegisterWorkerArgs {
        worker_id: WorkerId::new("pool"),
        worker_instance_id: WorkerInstanceId::new("w-listed"),
        lanes: vec![LaneId::try_new("media").unwrap()],
        capabilities: Default::default(),
        liveness_ttl_ms: 60_000,
        namespace: Namespace::new("tenant-a"),
    };
    client.register_worker(&registration).await.unwrap();
    let table = ok(&run(&["workers", "list"]).await);
    let row = table.lines().find(|l| l.starts_with("w-listed")).unwrap_or_else(|| panic!("{table}"));
    assert_eq!(row.split_whitespace().take(4).collect::<Vec<_>>(), ["w-listed", "pool", "tenant-a", "media"], "{row}");
    let header = table.lines().next().unwrap();
    assert_eq!(row.find("pool"), header.find("WORKER"), "columns line up:\n{table}");
    let page: Value =
        serde_json::from_str(&ok(&run(&["workers", "list", "--namespace", "tenant-a", "--json"]).await)).unwrap();
    assert_eq!(page["entries"][0]["worker_instance_id"], "w-listed", "{page}");

    // The token and URL come from the environment or the flags; a wrong one is refused.
    refused(&ff(&url, None, &["workers", "list"]).await, "unauthorized");
    refused(&ff(&url, Some("wrong"), &["workers", "list"]).await, "unauthorized");
    let flags = ff("http://127.0.0.1:1", None, &["workers", "list", "--url", &url, "--token", TOKEN]).await;
    assert!(ok(&flags).contains("w-listed"));
    // A malformed id never reaches the server.
    let bad = ff(&url, Some(TOKEN), &["executions", "show", "not-an-id"]).await;
    assert!(!bad.status.success() && all(&bad).contains("malformed execution id"), "{}", all(&bad));
    server.shutdown().await.unwrap();
}
