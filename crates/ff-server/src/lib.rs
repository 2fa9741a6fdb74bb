//! FlowFabric's HTTP server: the JSON API (`/v1/...`) over a Postgres engine backend, with
//! bearer-token auth, per-route body limits, CORS, `/healthz`, Prometheus `/metrics` and an
//! OpenAPI document generated from the route table; beside it, the operator dashboard
//! ([`dashboard`], under `/dashboard`).
//!
//! Boot ([`Server::start_with_metrics`]): validate the configuration, load the HTTPS certificate
//! if one is configured, apply (or check) the schema migrations, connect, start the
//! reconcilers, seed the waitpoint signing key (when one is configured), bind, serve (plain HTTP, or TLS through [`tls::TlsListener`]). Shutdown ([`Server::shutdown`]):
//! stop accepting, drain in-flight requests, stop the reconcilers, close the pool, each bounded
//! by the configured grace period.

#![warn(missing_docs)]

pub mod config;
pub mod dashboard;
pub mod http;
pub mod metrics;
pub mod openapi;
pub mod process;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use ff_backend_postgres::connection::connect_pool;
use ff_backend_postgres::{BackendConfig, Metrics, PostgresBackend, apply_migrations};
use ff_core::{EngineBackend, EngineError, SeedOutcome};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{MigratePolicy, ServerConfig};
pub use http::{AppState, BodyBudget, router};
pub use metrics::Telemetry;

/// Why the server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(EngineError),
    /// The database could not be reached, migrated or verified.
    #[error("database: {0}")]
    Database(EngineError),
    /// The HTTPS certificate or key cannot be used.
    #[error("invalid TLS configuration: {0}")]
    Tls(tls::TlsConfigError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    https: bool,
    backend: Arc<PostgresBackend>,
    stop: CancellationToken,
    serving: JoinHandle<Result<(), std::io::Error>>,
    grace: Duration,
    body_budget: BodyBudget,
}

impl Server {
    /// Starts a server with fresh engine counters.
    pub async fn start(config: ServerConfig) -> Result<Self, ServerError> {
        Self::start_with_metrics(config, Arc::new(Metrics::default())).await
    }

    /// Starts a server whose engine updates `metrics` (shared with the caller).
    pub async fn start_with_metrics(config: ServerConfig, metrics: Arc<Metrics>) -> Result<Self, ServerError> {
        config.validate().map_err(ServerError::Config)?;
        let tls = tls::load(config.tls_cert.as_deref(), config.tls_key.as_deref()).map_err(ServerError::Tls)?;
        let backend_config = config.backend_config();
        if config.migrate == MigratePolicy::Apply {
            let pool = connect_pool(&BackendConfig { max_connections: 1, ..config.migration_backend_config() })
                .await
                .map_err(ServerError::Database)?;
            apply_migrations(&pool).await.map_err(ServerError::Database)?;
            pool.close().await;
        }
        let partitions = config.partitions();
        let mut backend = PostgresBackend::connect_with_metrics(backend_config, partitions, metrics.clone())
            .await
            .map_err(ServerError::Database)?;
        backend.with_scanners(config.scanners());
        seed_waitpoint_key(backend.as_ref(), &config).await.map_err(ServerError::Database)?;
        let telemetry = Arc::new(Telemetry::new(metrics, Some(backend.pool().clone())));
        if config.token().is_none() {
            tracing::warn!("FF_API_TOKEN is not set: every route is open to anyone who can reach {}", config.listen);
        }
        let body_budget = BodyBudget::new(config.max_inflight_body_bytes, config.inflight_wait(), telemetry.clone());
        let state = AppState::new(backend.clone(), partitions, config.token().map(str::to_owned), telemetry)
            .with_body_budget(body_budget.clone(), config.max_body_bytes);
        let dashboard = dashboard::DashboardState::new(backend.clone(), config.token(), tls.is_some());
        let app = router(state, &config.cors_origins).map_err(ServerError::Config)?.merge(dashboard::router(dashboard));
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Bind { addr: config.listen, source })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind { addr: config.listen, source })?;
        let stop = CancellationToken::new();
        let shutdown = stop.clone().cancelled_owned();
        let https = tls.is_some();
        let serving = match tls {
            None => {
                let listener = listener.tap_io(|tcp| answer_at_once(tcp));
                tokio::spawn(axum::serve(listener, app).with_graceful_shutdown(shutdown).into_future())
            }
            Some(tls) => {
                let listener = tls::TlsListener::new(listener, tls)
                    .map_err(|source| ServerError::Bind { addr: config.listen, source })?;
                tokio::spawn(axum::serve(listener, app).with_graceful_shutdown(shutdown).into_future())
            }
        };
        tracing::info!(%addr, https, "serving the FlowFabric API");
        Ok(Self {
            addr,
            https,
            backend,
            stop,
            serving,
            grace: Duration::from_millis(config.shutdown_grace_ms),
            body_budget,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<bound address>`, or `https://` when serving TLS.
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The engine backend the server runs on.
    pub fn backend(&self) -> &Arc<PostgresBackend> {
        &self.backend
    }

    /// The budget of request-body bytes in flight (to watch it drain, for instance).
    pub fn body_budget(&self) -> &BodyBudget {
        &self.body_budget
    }

    /// Cancelled when shutdown begins; cancel it to begin shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Stops accepting, drains in-flight requests, stops reconcilers and closes the pool, each
    /// bounded by the grace period (stragglers are aborted).
    pub async fn shutdown(self) -> Result<(), ServerError> {
        self.stop.cancel();
        let mut serving = self.serving;
        let served = match tokio::time::timeout(self.grace, &mut serving).await {
            Ok(Ok(result)) => result.map_err(ServerError::Serve),
            Ok(Err(join)) => Err(ServerError::Serve(std::io::Error::other(join))),
            Err(_) => {
                tracing::warn!(grace = ?self.grace, "in-flight requests did not finish in time; aborting them");
                serving.abort();
                Ok(())
            }
        };
        // Never fails; stops the reconcilers and closes the pool.
        let _ = self.backend.shutdown_prepare(self.grace).await;
        served
    }
}

/// Installs the configured waitpoint signing key unless the database has one, and says which
/// key signs: the configured one (seeded now or earlier), another one (a warning: the
/// configuration is ignored until a rotation), or, with none configured, whatever key the
/// database holds or a random one installed on first use.
async fn seed_waitpoint_key(backend: &PostgresBackend, config: &ServerConfig) -> Result<(), EngineError> {
    use ff_core::backend::SuspensionBackend;
    let Some(key) = config.waitpoint_key() else {
        tracing::info!(
            "FF_WAITPOINT_SECRET is not set: waitpoint tokens are signed by the key stored in the database, \
             or by a random key installed on first use"
        );
        return Ok(());
    };
    match backend.seed_waitpoint_hmac_secret(key.clone()).await? {
        SeedOutcome::Seeded { kid } => tracing::info!(kid, "installed the configured waitpoint signing key"),
        SeedOutcome::AlreadySeeded { kid, same_secret: true } => {
            tracing::info!(kid, "the configured waitpoint signing key is installed already")
        }
        SeedOutcome::AlreadySeeded { kid, same_secret: false } => tracing::warn!(
            current_kid = kid,
            configured_kid = key.kid,
            "another waitpoint signing key is current, so FF_WAITPOINT_SECRET is ignored; to make it current, \
             rotate with POST /v1/admin/waitpoint-keys/rotate"
        ),
    }
    Ok(())
}

/// Sets `TCP_NODELAY` on an accepted connection (plain or TLS): answers go out at once rather
/// than waiting on Nagle's algorithm for the client's ACK of the previous segment.
fn answer_at_once(tcp: &tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
}
