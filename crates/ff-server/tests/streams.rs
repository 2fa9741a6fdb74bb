//! Streams and event subscriptions over HTTP: the long-polling tail, the server-sent-events
//! follow of an attempt's frames (resumed with `Last-Event-ID`), summary documents, and the
//! `/v1/events/...` subscriptions with their cursors.

mod common;

use std::time::Duration;

use common::Api;
use ff_core::wire::handle_token;
use ff_core::{
    AttemptEndBackend, CapabilitySet, ClaimPolicy, CreateExecutionArgs, ExecutionBackend, ExecutionId, Frame,
    FrameKind, Handle, LaneId, LeaseBackend, PartitionConfig, StreamBackend, StreamMode,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// One server-sent event.
#[derive(Debug, Default, Clone)]
struct SseEvent {
    event: String,
    id: Option<String>,
    data: String,
}

/// Reads server-sent events from an open response, chunk by chunk.
struct SseReader {
    resp: reqwest::Response,
    buffer: String,
}

impl SseReader {
    async fn open(api: &Api, path: &str, last_event_id: Option<&str>) -> Self {
        let mut req = api.http.get(format!("{}{path}", api.server.url()));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = req.send().await.expect("response");
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        Self { resp, buffer: String::new() }
    }

    /// The next event (comments, such as keep-alives, are skipped). The bound only turns a
    /// missing event into a failure instead of a hang.
    async fn next(&mut self) -> SseEvent {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut ev = SseEvent::default();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        ev.event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        ev.id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        ev.data.push_str(v.trim_start());
                    }
                }
                if !ev.event.is_empty() || !ev.data.is_empty() {
                    return ev;
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.resp.chunk())
                .await
                .expect("an event within the bound")
                .expect("the stream is readable")
                .expect("the stream is open");
            self.buffer.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }

    fn json(ev: &SseEvent) -> Value {
        serde_json::from_str(&ev.data).expect("JSON data")
    }
}

async fn running(api: &Api, lane: &str) -> (ExecutionId, Handle) {
    let lane = LaneId::try_new(lane).unwrap();
    let id = ExecutionId::solo(&lane, &PartitionConfig::default());
    let backend = api.server.backend();
    backend.create_execution(CreateExecutionArgs::new(id, lane.clone(), "k", b"in".to_vec())).await.unwrap();
    let h = backend
        .claim(&lane, &CapabilitySet::empty(), ClaimPolicy::new("pool", "w1", 30_000))
        .await
        .unwrap()
        .expect("claimed");
    (id, h)
}

fn text_frame(text: &str) -> Frame {
    Frame {
        bytes: text.as_bytes().to_vec(),
        kind: FrameKind::Stdout,
        frame_type: "log".into(),
        correlation_id: None,
        mode: StreamMode::Durable,
    }
}

#[tokio::test]
async fn an_attempt_is_followed_live_and_resumed_from_its_last_event_id() {
    let api = Api::start().await;
    let (id, h) = running(&api, "follow").await;
    let backend = api.server.backend();
    backend.append_frame(&h, text_frame("one")).await.unwrap();
    backend.append_frame(&h, text_frame("two")).await.unwrap();
    let path = format!("/v1/executions/{id}/attempts/0/stream/follow");
    let mut sse = SseReader::open(&api, &path, None).await;
    let one = sse.next().await;
    assert_eq!(one.event, "frame");
    let two = sse.next().await;
    assert_eq!(SseReader::json(&two)["bytes"], json!(b"two".to_vec()));
    backend.append_frame(&h, text_frame("three")).await.unwrap();
    let three = sse.next().await;
    assert_eq!(SseReader::json(&three)["seq"], 3);
    assert_eq!(three.id.as_deref(), Some(SseReader::json(&three)["id"].as_str().unwrap()));
    backend.complete(&h, None).await.unwrap();
    let closed = sse.next().await;
    assert_eq!(closed.event, "closed");
    assert_eq!(SseReader::json(&closed)["closed_reason"], "success");

    let mut resumed = SseReader::open(&api, &path, two.id.as_deref()).await;
    let again = resumed.next().await;
    assert_eq!((again.event.as_str(), again.id.clone()), ("frame", three.id.clone()));
    assert_eq!(resumed.next().await.event, "closed");

    let (status, body) = api.call(Method::GET, &format!("/v1/executions/{id}/attempts/9/stream/follow"), None).await;
    common::assert_error(status, &body, 404, "not_found");
    let (status, body) = api.call(Method::GET, &format!("{path}?after=nope"), None).await;
    common::assert_error(status, &body, 400, "invalid_offset");
}

#[tokio::test]
async fn a_long_polling_tail_returns_the_next_frame() {
    let api = Api::start().await;
    let (id, h) = running(&api, "tail").await;
    let url = format!("{}/v1/executions/{id}/attempts/0/stream/tail?after=%2B&block_ms=20000", api.server.url());
    let waiting = tokio::spawn({
        let http = api.http.clone();
        async move { http.get(url).send().await.unwrap().json::<Value>().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    api.server.backend().append_frame(&h, text_frame("late")).await.unwrap();
    let got = waiting.await.unwrap();
    assert_eq!(got["frames"].as_array().unwrap().len(), 1, "{got}");
    assert_eq!(got["frames"][0]["bytes"], json!(b"late".to_vec()));
    assert_eq!(got["last_seq"], 1);

    let (status, body) =
        api.call(Method::GET, &format!("/v1/executions/{id}/attempts/0/stream/tail?block_ms=30001"), None).await;
    common::assert_error(status, &body, 400, "invalid_input");
}

#[tokio::test]
async fn summary_frames_are_appended_and_read_over_http() {
    let api = Api::start().await;
    let (id, h) = running(&api, "summary").await;
    let summary_path = format!("/v1/executions/{id}/attempts/0/summary");
    let (status, body) = api.call(Method::GET, &summary_path, None).await;
    common::assert_error(status, &body, 404, "not_found");
    let append = |patch: Value| {
        json!({"handle": handle_token(&h), "frame_type": "state", "text": patch.to_string(),
               "mode": {"type": "durable_summary"}})
    };
    let frames = format!("/v1/executions/{id}/frames");
    let (status, out) = api.call(Method::POST, &frames, Some(append(json!({"step": 1, "log": "a"})))).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["summary_version"], 1);
    let (_, out) = api.call(Method::POST, &frames, Some(append(json!({"step": 2, "log": null})))).await;
    assert_eq!(out["summary_version"], 2);
    let (status, doc) = api.call(Method::GET, &summary_path, None).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["document_json"], json!({"step": 2}));
    assert_eq!(doc["version"], 2);
    let bad = json!({"handle": handle_token(&h), "frame_type": "state", "text": "not json",
                     "mode": {"type": "durable_summary"}});
    let before = api.fingerprint().await;
    let (status, body) = api.call(Method::POST, &frames, Some(bad)).await;
    common::assert_error(status, &body, 400, "invalid_input");
    assert_eq!(api.fingerprint().await, before, "a refused frame wrote");
    let live = json!({"handle": handle_token(&h), "frame_type": "tick", "text": "t",
                      "mode": {"type": "best_effort_live", "ttl_ms": 1000}});
    let (status, out) = api.call(Method::POST, &frames, Some(live)).await;
    assert_eq!(status, StatusCode::OK, "{out}");
}

#[tokio::test]
async fn event_subscriptions_resume_from_their_last_event_id() {
    let api = Api::start().await;
    let backend = api.server.backend();
    let mut completions = SseReader::open(&api, "/v1/events/completions", None).await;
    let mut leases = SseReader::open(&api, "/v1/events/lease-history", None).await;
    let mut tags = SseReader::open(&api, "/v1/events/instance-tags", None).await;

    let (first, h) = running(&api, "events").await;
    backend.complete(&h, None).await.unwrap();
    let (second, h) = running(&api, "events").await;
    backend.cancel(&h, "stop").await.unwrap();
    let put = json!({"value": "v1"});
    let (status, _) = api.call(Method::PUT, &format!("/v1/executions/{first}/tags/app.owner"), Some(put)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api.call(Method::DELETE, &format!("/v1/executions/{first}/tags/app.owner"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = api.call(Method::DELETE, &format!("/v1/executions/{first}/tags/app.owner"), None).await;
    common::assert_error(status, &body, 404, "not_found");

    let done = completions.next().await;
    assert_eq!(done.event, "completion");
    assert_eq!(SseReader::json(&done)["execution_id"], first.to_string());
    assert_eq!(SseReader::json(&done)["outcome"], "success");
    let cancelled = completions.next().await;
    assert_eq!(SseReader::json(&cancelled)["outcome"], "cancelled");
    let mut resumed = SseReader::open(&api, "/v1/events/completions", done.id.as_deref()).await;
    assert_eq!(SseReader::json(&resumed.next().await)["execution_id"], second.to_string());

    let acquired = leases.next().await;
    assert_eq!(acquired.event, "lease");
    assert_eq!(SseReader::json(&acquired)["kind"], json!({"type": "acquired", "worker_instance_id": "w1"}));

    let attached = tags.next().await;
    assert_eq!(SseReader::json(&attached)["change"], json!({"type": "attached", "value": "v1"}));
    let cleared = tags.next().await;
    assert_eq!(SseReader::json(&cleared)["change"], json!({"type": "cleared"}));
    assert_eq!(SseReader::json(&cleared)["key"], "app.owner");

    let (status, body) = api.call(Method::GET, "/v1/events/completions?after=12-x", None).await;
    common::assert_error(status, &body, 400, "invalid_offset");
    let (status, body) = api.call(Method::GET, "/v1/events/instance-tags?namespace=x", None).await;
    common::assert_error(status, &body, 400, "invalid_input");
}
