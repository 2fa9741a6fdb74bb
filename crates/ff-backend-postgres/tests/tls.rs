//! Connections over TLS to a private cluster with `ssl = on` whose `pg_hba.conf` accepts only
//! TLS (`hostssl`): each `sslmode` does what libpq's does, and every refusal says why.

use std::path::PathBuf;

use ff_backend_postgres::connection::connect_pool;
use ff_backend_postgres::{BackendConfig, PostgresBackend, RootCert, SslMode, apply_migrations};
use ff_embedded_pg::{ClusterFile, EmbeddedOptions, EmbeddedPostgres};
use ff_test::tls::{TestCa, TlsFiles};

/// Accepts TLS connections from 127.0.0.1 only; plain ones have no matching line.
const HOSTSSL_ONLY: &str = "hostssl all all 127.0.0.1/32 trust\n";

struct TlsCluster {
    pg: EmbeddedPostgres,
    ca_file: PathBuf,
    other_ca_file: PathBuf,
    _files: TlsFiles,
}

async fn tls_cluster() -> TlsCluster {
    let ca = TestCa::new("ff test CA");
    let server = ca.issue_server_cert();
    let files = TlsFiles::new();
    let ca_file = files.write("ca.pem", &ca.cert_pem());
    let other_ca_file = files.write("other-ca.pem", &TestCa::new("another CA").cert_pem());
    let file = |name: &str, contents: &str, mode| ClusterFile { name: name.into(), contents: contents.into(), mode };
    let opts = EmbeddedOptions {
        settings: vec!["ssl=on".into(), "ssl_cert_file=server.crt".into(), "ssl_key_file=server.key".into()],
        files: vec![
            file("server.crt", &server.cert_pem, 0o644),
            file("server.key", &server.key_pem, 0o600),
            file("pg_hba.conf", HOSTSSL_ONLY, 0o600),
        ],
        ..EmbeddedOptions::default()
    };
    let pg = EmbeddedPostgres::start(opts).await.expect("start a private PostgreSQL cluster with ssl = on");
    TlsCluster { pg, ca_file, other_ca_file, _files: files }
}

fn config(url: String, mode: SslMode, root: Option<&PathBuf>) -> BackendConfig {
    BackendConfig {
        ssl_mode: Some(mode),
        ssl_root_cert: root.map(|p| RootCert::File(p.clone())),
        ..BackendConfig::new(url)
    }
}

async fn uses_tls(pool: &sqlx::PgPool) -> bool {
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(pool)
        .await
        .expect("read pg_stat_ssl")
}

#[tokio::test]
async fn each_sslmode_against_a_tls_only_server() {
    let c = tls_cluster().await;

    // verify-full with the right CA, given in the URL: connects, migrates, serves the backend.
    let url = format!("{}?sslmode=verify-full&sslrootcert={}", c.pg.url(), c.ca_file.display());
    let pool = connect_pool(&BackendConfig::new(url.clone())).await.expect("verify-full with the right CA connects");
    assert!(uses_tls(&pool).await);
    apply_migrations(&pool).await.expect("migrate over TLS");
    pool.close().await;
    let backend = PostgresBackend::connect(BackendConfig::new(url)).await.expect("backend over verify-full");
    backend.ping().await.expect("ping over TLS");

    // The same through the settings rather than the URL.
    let pool = connect_pool(&config(c.pg.url().to_owned(), SslMode::VerifyFull, Some(&c.ca_file)))
        .await
        .expect("verify-full set as settings connects");
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&pool).await.expect("query");
    assert_eq!(one, 1);
    pool.close().await;

    // A CA that did not sign the server's certificate: refused, and the error names the problem.
    for mode in [SslMode::VerifyFull, SslMode::VerifyCa] {
        let err = connect_pool(&config(c.pg.url().to_owned(), mode, Some(&c.other_ca_file)))
            .await
            .expect_err("a wrong CA must not connect");
        let text = err.to_string();
        assert!(text.contains("certificate") && text.contains("UnknownIssuer"), "{mode}: {text}");
        assert_eq!(err.code(), "transport");
    }

    // require: encrypted, certificate not checked.
    let pool = connect_pool(&config(c.pg.url().to_owned(), SslMode::Require, None)).await.expect("require connects");
    assert!(uses_tls(&pool).await);
    pool.close().await;

    // disable against hostssl-only: refused by pg_hba.conf, and the error says so.
    let err = connect_pool(&config(c.pg.url().to_owned(), SslMode::Disable, None))
        .await
        .expect_err("a plain connection must be refused");
    let text = err.to_string();
    assert!(text.contains("pg_hba.conf") && text.contains("no encryption"), "{text}");

    drop(backend);
    c.pg.stop().await.expect("stop the cluster");
}

#[tokio::test]
async fn bad_tls_settings_fail_before_connecting() {
    // Nothing listens on port 1; these must fail on the settings alone.
    let url = "postgres://postgres@127.0.0.1:1/ff".to_owned();
    let missing = PathBuf::from("/nonexistent/ca.pem");
    let cases = [
        (config(url.clone(), SslMode::VerifyFull, None), "no sslrootcert is set"),
        (config(url.clone(), SslMode::VerifyFull, Some(&missing)), "cannot read sslrootcert /nonexistent/ca.pem"),
        (config(url.clone(), SslMode::Disable, Some(&missing)), "sslmode=disable"),
    ];
    for (cfg, text) in cases {
        let err = connect_pool(&cfg).await.expect_err("bad settings");
        assert_eq!(err.code(), "invalid_input", "{err}");
        assert!(err.to_string().contains(text), "{err}");
    }
}
