//! What the server's HTTP tests share: a server on a fresh database, a request helper, a
//! fingerprint of the stored rows (equal before and after a call that must write nothing), and
//! the check of an error body.

use ff_backend_postgres::MIGRATOR;
use ff_server::{Server, ServerConfig};
use ff_test::TestDb;
use reqwest::{Client, Method, StatusCode};
use serde_json::Value;

/// A server on its own fresh database.
pub struct Api {
    pub db: TestDb,
    pub server: Server,
    pub http: Client,
}

impl Api {
    /// Starts a server on a fresh, migrated database.
    pub async fn start() -> Self {
        let db = TestDb::new(&MIGRATOR).await;
        let mut cfg = ServerConfig::new(db.url());
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg.pool_size = 4;
        cfg.shutdown_grace_ms = 5_000;
        let server = Server::start(cfg).await.expect("server starts");
        Self { db, server, http: Client::new() }
    }

    /// Sends `body` (as JSON, when given) and returns the status and the body (`Null` when
    /// empty, a string when not JSON).
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.server.url()));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("response");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) })
    }

    /// Every stored registration, execution, attempt, event and grant, as text.
    pub async fn fingerprint(&self) -> String {
        sqlx::query_scalar(
            "SELECT coalesce((SELECT string_agg(w::text, '|' ORDER BY worker_instance_id) FROM ff_worker w), '') \
             || '#' || coalesce((SELECT string_agg(e::text, '|' ORDER BY execution_id) FROM ff_execution e), '') \
             || '#' || coalesce((SELECT string_agg(a::text, '|' ORDER BY execution_id, attempt_index) \
                                 FROM ff_attempt a), '') \
             || '#' || (SELECT count(*) FROM ff_event)::text \
             || '#' || (SELECT count(*) FROM ff_reclaim_grant)::text",
        )
        .fetch_one(self.db.pool())
        .await
        .unwrap()
    }
}

/// Checks an error answer: its status, its code, and the shape of its body.
pub fn assert_error(status: StatusCode, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!((status.as_u16(), body["code"].as_str()), (want_status, Some(want_code)), "{body}");
    assert!(body["message"].is_string() && body["retryable"].is_boolean(), "{body}");
}
