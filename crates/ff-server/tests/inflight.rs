//! The server-wide budget of request-body bytes in flight, over real HTTP: requests whose
//! bodies do not fit wait, then get `503 server_busy` with `Retry-After` and write nothing;
//! those within it succeed; a waiting request gets in once another finishes; the budget is
//! given back in full afterwards.
//!
//! Requests are written by hand on a TCP socket so a test can send the head (with its
//! `Content-Length`) and hold the body back: the request then holds its bytes of the budget
//! until the test lets it finish.

use std::time::Duration;

use ff_backend_postgres::MIGRATOR;
use ff_server::{Server, ServerConfig};
use ff_test::TestDb;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: usize = 1024 * 1024;
const BUDGET: usize = 2 * MIB;

/// A server whose budget is 2 MiB and whose routes accept bodies up to 2 MiB; a request waits
/// at most `wait_ms` for its bytes.
async fn start(wait_ms: u64) -> (TestDb, Server) {
    let db = TestDb::new(&MIGRATOR).await;
    let mut cfg = ServerConfig::new(db.url());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.pool_size = 4;
    cfg.shutdown_grace_ms = 5_000;
    cfg.max_inflight_body_bytes = BUDGET;
    cfg.max_body_bytes = Some(BUDGET);
    cfg.inflight_wait_ms = wait_ms;
    let server = Server::start(cfg).await.expect("server starts");
    (db, server)
}

/// A submission whose JSON body is exactly `size` bytes.
fn submission(key: &str, size: usize) -> Vec<u8> {
    let empty = json!({"lane_id": "big", "execution_kind": "k", "idempotency_key": key, "input": {"blob": ""}});
    let pad = size - empty.to_string().len();
    let body =
        json!({"lane_id": "big", "execution_kind": "k", "idempotency_key": key, "input": {"blob": "x".repeat(pad)}})
            .to_string();
    assert_eq!(body.len(), size);
    body.into_bytes()
}

/// A request whose head is sent and whose body is held back.
struct Pending {
    stream: TcpStream,
    body: Vec<u8>,
}

impl Pending {
    /// Sends the head of `POST /v1/executions` declaring `body`'s length.
    async fn open(server: &Server, body: Vec<u8>) -> Self {
        let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
        let head = format!(
            "POST /v1/executions HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        Self { stream, body }
    }

    /// Sends the body and reads the answer.
    async fn finish(mut self) -> Answer {
        // A refused request is answered without its body being read, and the server may have
        // closed the connection already: a failed write is expected then.
        let _ = self.stream.write_all(&self.body).await;
        self.answer().await
    }

    /// Reads the answer without sending the body.
    async fn answer(mut self) -> Answer {
        let mut raw = Vec::new();
        // The server may reset a connection whose body it never read; what arrived first is
        // the answer.
        let _ = self.stream.read_to_end(&mut raw).await;
        Answer::parse(&raw)
    }
}

/// A status, the headers (lowercase names) and the body as JSON.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Answer {
    fn parse(raw: &[u8]) -> Self {
        let text = String::from_utf8_lossy(raw);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no answer: {text:?}"));
        let mut lines = head.lines();
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect::<Vec<_>>();
        let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v == "chunked");
        let body = if chunked { dechunk(body) } else { body.to_owned() };
        Self { status, headers, body: serde_json::from_str(&body).unwrap_or(Value::String(body)) }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// The value of a metric without labels on `/metrics`.
async fn metric(server: &Server, name: &str) -> i64 {
    let text = reqwest::get(format!("{}/metrics", server.url())).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
        .parse()
        .unwrap()
}

/// Polls `/metrics` until `name` reads `want` (the state under test is reached by other
/// requests' progress, not by a timer).
async fn until_metric(server: &Server, name: &str, want: i64) {
    for _ in 0..1000 {
        if metric(server, name).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{name} never reached {want} (now {})", metric(server, name).await);
}

async fn executions(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM ff_execution").fetch_one(db.pool()).await.unwrap()
}

#[tokio::test]
async fn submissions_beyond_the_budget_get_503_with_retry_after_and_write_nothing() {
    let (db, server) = start(100).await;
    let size = 900 * 1024;
    // Two 900 KiB bodies fit in the 2 MiB budget; the other two wait, then are refused.
    let mut admitted = Vec::new();
    for i in 0..2 {
        admitted.push(Pending::open(&server, submission(&format!("in-{i}"), size)).await);
        until_metric(&server, "ff_http_body_bytes_in_flight", ((i + 1) * size) as i64).await;
    }
    let refused = futures::future::join_all((0..2).map(|i| {
        let server = &server;
        async move { Pending::open(server, submission(&format!("out-{i}"), size)).await.answer().await }
    }))
    .await;
    for answer in &refused {
        assert_eq!(answer.status, 503, "{answer:?}");
        assert_eq!(answer.body["code"], "server_busy", "{answer:?}");
        assert_eq!(answer.body["retryable"], true, "{answer:?}");
        assert!(answer.body["message"].is_string(), "{answer:?}");
        assert_eq!(answer.header("retry-after"), Some("1"), "{answer:?}");
    }
    assert_eq!(metric(&server, "ff_http_body_budget_refusals_total").await, 2);
    assert_eq!(executions(&db).await, 0, "a refused submission creates no execution");

    for pending in admitted {
        let answer = pending.finish().await;
        assert_eq!(answer.status, 201, "{answer:?}");
    }
    assert_eq!(executions(&db).await, 2);

    // The budget is back in full: a body that needs all of it gets in.
    until_metric(&server, "ff_http_body_bytes_in_flight", 0).await;
    let whole = Pending::open(&server, submission("whole", BUDGET)).await.finish().await;
    assert_eq!(whole.status, 201, "{whole:?}");
    assert_eq!(metric(&server, "ff_http_body_bytes_in_flight").await, 0);
    assert_eq!(executions(&db).await, 3);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_waiting_request_gets_in_once_another_finishes() {
    let (db, server) = start(30_000).await;
    let first = Pending::open(&server, submission("first", 1536 * 1024)).await;
    until_metric(&server, "ff_http_body_bytes_in_flight", 1536 * 1024).await;

    let second = Pending::open(&server, submission("second", MIB)).await;
    let second = tokio::spawn(second.finish());
    until_metric(&server, "ff_http_body_budget_waiting_requests", 1).await;
    assert_eq!(executions(&db).await, 0);

    assert_eq!(first.finish().await.status, 201);
    let second = second.await.unwrap();
    assert_eq!(second.status, 201, "{second:?}");
    assert_eq!(executions(&db).await, 2);
    until_metric(&server, "ff_http_body_bytes_in_flight", 0).await;
    assert_eq!(metric(&server, "ff_http_body_budget_refusals_total").await, 0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_declared_length_over_the_route_limit_is_413_unread() {
    let (db, server) = start(100).await;
    let answer = Pending::open(&server, submission("huge", BUDGET + 1)).await.answer().await;
    assert_eq!((answer.status, answer.body["code"].as_str()), (413, Some("payload_too_large")), "{answer:?}");
    assert_eq!(executions(&db).await, 0);
    assert_eq!(metric(&server, "ff_http_body_bytes_in_flight").await, 0);
    server.shutdown().await.unwrap();
}

#[test]
fn a_budget_below_the_largest_route_limit_is_refused_at_boot() {
    let mut cfg = ServerConfig::new("postgres://unused@127.0.0.1/none");
    cfg.validate().expect("the defaults are valid");
    cfg.max_inflight_body_bytes = 32 * MIB;
    let message = cfg.validate().unwrap_err().to_string();
    assert!(message.contains("FF_MAX_INFLIGHT_BODY_BYTES"), "{message}");
    cfg.max_body_bytes = Some(16 * MIB);
    cfg.validate().expect("a budget above every lowered route limit is valid");
    cfg.max_body_bytes = Some(1024);
    let message = cfg.validate().unwrap_err().to_string();
    assert!(message.contains("FF_MAX_BODY_BYTES"), "{message}");
}
