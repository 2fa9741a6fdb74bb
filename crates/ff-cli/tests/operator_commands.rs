//! The `ff` admin commands (`ff executions ...`, `ff workers list`, `ff budgets ...`,
//! `ff quotas ...`) run as the built binary against a real server with a bearer token: each
//! command's output, and a refusal printing the server's code with a non-zero exit.

use std::process::Output;

use ff_backend_postgres::MIGRATOR;
use ff_core::wire::ClaimRequest;
use ff_core::{
    BudgetId, ExecutionId, LaneId, Namespace, QuotaPolicyId, RegisterWorkerArgs, WorkerId, WorkerInstanceId,
};
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

#[tokio::test]
async fn budget_and_quota_commands_act_on_a_running_server() {
    let db = TestDb::new(&MIGRATOR).await;
    let mut cfg = ServerConfig::new(db.url());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.api_token = Some(TOKEN.into());
    cfg.pool_size = 4;
    cfg.shutdown_grace_ms = 5_000;
    let server = Server::start(cfg).await.expect("server starts");
    let url = server.url();
    let run = |args: Vec<String>| {
        let url = url.clone();
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            ff(&url, Some(TOKEN), &refs).await
        }
    };
    let args = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();

    // budgets create: a new id printed, the same definition again a no-op, another refused.
    let budget = BudgetId::new();
    let create = format!(
        "budgets create --id {budget} --scope-type tenant --scope-id acme --limit tokens=100:80 --limit usd=0:5 \
         --reset-every-secs 3600 --on-hard-limit page"
    );
    assert_eq!(ok(&run(args(&create)).await).trim(), format!("created budget {budget}"));
    assert_eq!(ok(&run(args(&create)).await).trim(), format!("budget {budget} exists with this definition"));
    let other = create.replace("tokens=100:80", "tokens=200:80");
    refused(&run(args(&other)).await, "budget_already_exists");
    refused(&run(args("budgets create --scope-type t --scope-id a --limit tokens=10:20")).await, "invalid_budget_spec");
    let minted = ok(&run(args("budgets create --scope-type t --scope-id a --limit calls=5")).await);
    assert!(minted.starts_with("created budget "), "{minted}");

    // report: applied, past the soft limit, refused whole past the hard limit.
    let report = |usage: &str| args(&format!("budgets report {budget} --usage {usage}"));
    assert_eq!(ok(&run(report("tokens=50")).await).trim(), format!("usage applied to budget {budget}"));
    let soft = ok(&run(report("tokens=40")).await);
    assert!(soft.contains("tokens is past its soft limit (90 > 80)"), "{soft}");
    let hard = ok(&run(report("tokens=20")).await);
    assert!(hard.starts_with("nothing applied") && hard.contains("used 90 of 100"), "{hard}");
    refused(&run(report("tokens=-1")).await, "invalid_budget_spec");

    // show: text and JSON.
    let shown = ok(&run(args(&format!("budgets show {budget}"))).await);
    assert!(shown.contains(&format!("budget      {budget}")), "{shown}");
    assert!(shown.contains("scope       tenant/acme   mode strict   exhausted yes"), "{shown}");
    assert!(shown.contains("dimension   tokens: used 90, hard 100, soft 80"), "{shown}");
    assert!(shown.contains("dimension   usd: used 0, soft 5"), "{shown}");
    assert!(shown.contains("breaches    hard 1, soft 1 (last at "), "{shown}");
    assert!(shown.contains("on hard     page") && shown.contains("reset       every 3600 s, next at "), "{shown}");
    let status: Value = serde_json::from_str(&ok(&run(args(&format!("budgets show {budget} --json"))).await)).unwrap();
    assert_eq!((&status["usage"]["tokens"], &status["exhausted"]), (&json!(90), &json!(true)), "{status}");
    refused(&run(args(&format!("budgets show {}", BudgetId::new()))).await, "not_found");

    // limits and reset.
    let raised = ok(&run(args(&format!("budgets limits {budget} --limit tokens=500:400"))).await);
    assert!(raised.starts_with(&format!("limits of budget {budget} set: exhausted no")), "{raised}");
    let reset: Value = serde_json::from_str(&ok(&run(args(&format!("budgets reset {budget} --json"))).await)).unwrap();
    assert_eq!(reset["exhausted"], false, "{reset}");
    let shown = ok(&run(args(&format!("budgets show {budget}"))).await);
    assert!(shown.contains("dimension   tokens: used 0, hard 500, soft 400"), "{shown}");

    // quotas create and show.
    let policy = QuotaPolicyId::new();
    let create = format!(
        "quotas create --id {policy} --max-concurrent 4 --max-concurrent-per-key 1 --rate 100 --window-secs 60"
    );
    assert_eq!(ok(&run(args(&create)).await).trim(), format!("created quota policy {policy}"));
    assert_eq!(ok(&run(args(&create)).await).trim(), format!("quota policy {policy} exists with these limits"));
    refused(&run(args("quotas create --max-concurrent 0")).await, "invalid_quota_spec");
    let shown = ok(&run(args(&format!("quotas show {policy}"))).await);
    assert!(shown.contains("rate        100 per 60 s"), "{shown}");
    assert!(shown.contains("concurrent  4 (per key 1)"), "{shown}");
    assert!(shown.contains("active      0 (busiest key 0)"), "{shown}");
    let status: Value = serde_json::from_str(&ok(&run(args(&format!("quotas show {policy} --json"))).await)).unwrap();
    assert_eq!(status["limits"]["max_concurrent_per_key"], 1, "{status}");
    refused(&run(args(&format!("quotas show {}", QuotaPolicyId::new()))).await, "not_found");
    server.shutdown().await.unwrap();
}
