//! The client over HTTPS: `ff serve --tls-cert/--tls-key` serves TLS itself, a client that
//! trusts the server's CA does a round trip, one that does not is refused by the handshake,
//! and a half-given certificate setting is a typed error at boot.

use std::error::Error as _;

use ff_backend_postgres::MIGRATOR;
use ff_sdk::{Client, ClientConfig, SdkError, SubmitRequest};
use ff_server::tls::TlsConfigError;
use ff_server::{Server, ServerConfig, ServerError};
use ff_test::TestDb;
use ff_test::tls::{TestCa, TlsFiles};

#[tokio::test]
async fn a_client_trusting_the_ca_round_trips_over_https_and_one_without_it_is_refused() {
    let db = TestDb::new(&MIGRATOR).await;
    let ca = TestCa::new("ff https test CA");
    let cert = ca.issue_server_cert();
    let files = TlsFiles::new();
    let mut cfg = ServerConfig::new(db.url());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.shutdown_grace_ms = 5_000;
    cfg.tls_cert = Some(files.write("server.crt", &cert.cert_pem));
    cfg.tls_key = Some(files.write("server.key", &cert.key_pem));
    let ca_file = files.write("ca.pem", &ca.cert_pem());
    let server = Server::start(cfg).await.expect("server starts with TLS");
    assert!(server.url().starts_with("https://127.0.0.1:"), "{}", server.url());

    let client = Client::with_config(ClientConfig::new(server.url()).with_ca_file(&ca_file)).expect("client");
    let created = client.submit(&SubmitRequest::json("tls", "k", serde_json::json!({"n": 1}))).await.expect("submit");
    let snapshot = client.describe(&created.execution_id()).await.expect("describe").expect("the execution exists");
    assert_eq!(snapshot.execution_id, created.execution_id());

    let stranger = Client::new(server.url()).expect("client");
    let err = stranger.submit(&SubmitRequest::json("tls", "k", serde_json::json!({}))).await.unwrap_err();
    let SdkError::Http(http) = &err else { panic!("expected a transport error, got {err:?}") };
    let mut chain = http.to_string();
    let mut source = http.source();
    while let Some(s) = source {
        chain.push_str(&format!(": {s}"));
        source = s.source();
    }
    assert!(http.is_connect() && chain.contains("certificate"), "{chain}");

    // Plain HTTP to the TLS port gets no API answer.
    let plain = Client::new(server.url().replacen("https://", "http://", 1)).expect("client");
    assert!(plain.submit(&SubmitRequest::json("tls", "k", serde_json::json!({}))).await.is_err());

    server.shutdown().await.expect("graceful shutdown over TLS");
}

#[tokio::test]
async fn a_certificate_without_its_key_is_a_typed_error() {
    let files = TlsFiles::new();
    let ca = TestCa::new("ff https test CA");
    let mut cfg = ServerConfig::new("postgres://postgres@127.0.0.1:1/none");
    cfg.tls_cert = Some(files.write("server.crt", &ca.issue_server_cert().cert_pem));
    let err = Server::start(cfg.clone()).await.err().expect("refused");
    assert!(matches!(err, ServerError::Tls(TlsConfigError::Incomplete { .. })), "{err}");
    assert!(err.to_string().contains("FF_TLS_KEY"), "{err}");

    cfg.tls_key = Some(files.write("server.key", "not a key"));
    let err = Server::start(cfg).await.err().expect("refused");
    assert!(matches!(err, ServerError::Tls(TlsConfigError::NoKey { .. })), "{err}");
}
