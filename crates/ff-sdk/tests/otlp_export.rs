//! OTLP export: with an endpoint configured, [`ff_sdk::telemetry::install`] exports finished
//! spans as OTLP/HTTP protobuf to `<endpoint>/v1/traces`, flushed at shutdown. The collector
//! here is a bare HTTP/1.1 listener that records what it receives.

use std::time::Duration;

use ff_sdk::telemetry::{SUBMIT_SPAN, TelemetryConfig, install, submit_span};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// One received request: its head (request line and headers, lowercased) and body.
struct Received {
    head: String,
    body: Vec<u8>,
}

/// Answers every request `200 OK` and passes it on.
async fn collector(listener: TcpListener, tx: mpsc::UnboundedSender<Received>) {
    while let Ok((stream, _)) = listener.accept().await {
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Some(r) = read_request(stream).await {
                let _ = tx.send(r);
            }
        });
    }
}

async fn read_request(mut stream: TcpStream) -> Option<Received> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let end = loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
    let length: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    while buf.len() < end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await.ok()?;
    Some(Received { head, body: buf[end..end + length].to_vec() })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_http_when_an_endpoint_is_configured() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(collector(listener, tx));

    let config =
        TelemetryConfig { otlp_endpoint: Some(format!("http://{addr}")), ..TelemetryConfig::new("otlp-export-test") };
    let telemetry = install(&config).unwrap();
    assert!(telemetry.exporting());
    submit_span("lane", "kind", 1).in_scope(|| tracing::info!("submitting"));
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await.unwrap();

    let got = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.expect("an export").unwrap();
    assert!(got.head.starts_with("post /v1/traces "), "{}", got.head);
    assert!(got.head.contains("content-type: application/x-protobuf"), "{}", got.head);
    assert!(contains(&got.body, SUBMIT_SPAN.as_bytes()), "the span's name is in the export");
    assert!(contains(&got.body, b"otlp-export-test"), "the service name is in the export");
}
