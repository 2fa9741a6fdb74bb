//! Prometheus metrics of one server: HTTP request counts and latencies (labelled by matched
//! route, never by raw path, so cardinality stays bounded), the engine's counters (claims,
//! completions, failures, retries, lease expiries...), connection-pool usage, and the budget of
//! request-body bytes in flight (bytes reserved, requests waiting, requests refused), rendered
//! in the Prometheus text format at scrape time.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use ff_backend_postgres::Metrics;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use sqlx::PgPool;

type CounterOf = fn(&Metrics) -> &AtomicU64;

/// Everything `/metrics` reports.
pub struct Telemetry {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    engine: Arc<Metrics>,
    engine_counters: Vec<(IntCounter, CounterOf)>,
    pool: Option<PgPool>,
    pool_connections: IntGaugeVec,
    body_budget: IntGauge,
    body_in_flight: IntGauge,
    body_waiting: IntGauge,
    body_refused: IntCounter,
}

impl Telemetry {
    /// Metrics over `engine`'s counters and, when given, `pool`'s usage.
    pub fn new(engine: Arc<Metrics>, pool: Option<PgPool>) -> Self {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new("ff_http_requests_total", "HTTP requests by method, matched route and status."),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let http_duration = HistogramVec::new(
            HistogramOpts::new("ff_http_request_duration_seconds", "HTTP request latency by method and route.")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0]),
            &["method", "route"],
        )
        .expect("valid metric");
        let pool_connections = IntGaugeVec::new(
            Opts::new("ff_db_pool_connections", "Database pool connections by state (idle, in_use, max)."),
            &["state"],
        )
        .expect("valid metric");
        let counters: [(&str, &str, CounterOf); 10] = [
            ("ff_executions_created_total", "Executions created.", |m| &m.created),
            ("ff_claims_total", "Leases granted by claims.", |m| &m.claims),
            ("ff_completions_total", "Executions completed.", |m| &m.completions),
            ("ff_failures_total", "Attempts failed (retried or terminal).", |m| &m.failures),
            ("ff_retries_total", "Retries scheduled.", |m| &m.retries),
            ("ff_cancellations_total", "Executions cancelled.", |m| &m.cancellations),
            ("ff_lease_expiries_total", "Leases found expired.", |m| &m.lease_expiries),
            ("ff_lease_revocations_total", "Leases revoked from dead workers.", |m| &m.lease_revocations),
            ("ff_expirations_total", "Executions expired by timeout or deadline.", |m| &m.expirations),
            ("ff_fence_rejections_total", "Lease-holder writes refused by the fence.", |m| &m.fence_rejections),
        ];
        let engine_counters: Vec<(IntCounter, CounterOf)> = counters
            .into_iter()
            .map(|(name, help, f)| (IntCounter::new(name, help).expect("valid metric"), f))
            .collect();
        let body_budget = IntGauge::new("ff_http_body_budget_bytes", "The budget of request-body bytes in flight.")
            .expect("valid metric");
        let body_in_flight = IntGauge::new(
            "ff_http_body_bytes_in_flight",
            "Request-body bytes reserved by requests being read or handled now.",
        )
        .expect("valid metric");
        let body_waiting = IntGauge::new(
            "ff_http_body_budget_waiting_requests",
            "Requests waiting for their body's bytes in the in-flight budget.",
        )
        .expect("valid metric");
        let body_refused = IntCounter::new(
            "ff_http_body_budget_refusals_total",
            "Requests answered 503 server_busy because their body did not fit in the in-flight budget.",
        )
        .expect("valid metric");
        for metric in [&body_budget, &body_in_flight, &body_waiting] {
            registry.register(Box::new(metric.clone())).expect("unique metric");
        }
        registry.register(Box::new(body_refused.clone())).expect("unique metric");
        registry.register(Box::new(http_requests.clone())).expect("unique metric");
        registry.register(Box::new(http_duration.clone())).expect("unique metric");
        registry.register(Box::new(pool_connections.clone())).expect("unique metric");
        for (c, _) in &engine_counters {
            registry.register(Box::new(c.clone())).expect("unique metric");
        }
        Self {
            registry,
            http_requests,
            http_duration,
            engine,
            engine_counters,
            pool,
            pool_connections,
            body_budget,
            body_in_flight,
            body_waiting,
            body_refused,
        }
    }

    /// Records the size of the budget of request-body bytes in flight.
    pub fn set_body_budget(&self, bytes: usize) {
        self.body_budget.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Adds `delta` (negative when given back) to the request-body bytes in flight.
    pub fn body_bytes_in_flight(&self, delta: i64) {
        self.body_in_flight.add(delta);
    }

    /// Adds `delta` to the requests waiting for body bytes.
    pub fn body_budget_waiters(&self, delta: i64) {
        self.body_waiting.add(delta);
    }

    /// Counts one request refused with `503 server_busy`.
    pub fn body_budget_refused(&self) {
        self.body_refused.inc();
    }

    /// Records one finished request.
    pub fn observe_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.http_requests.with_label_values(&[method, route, &status.to_string()]).inc();
        self.http_duration.with_label_values(&[method, route]).observe(elapsed.as_secs_f64());
    }

    /// The current values in the Prometheus text format.
    pub fn render(&self) -> String {
        for (counter, of) in &self.engine_counters {
            let now = Metrics::get(of(&self.engine));
            let seen = counter.get();
            if now > seen {
                counter.inc_by(now - seen);
            }
        }
        if let Some(pool) = &self.pool {
            let size = i64::from(pool.size());
            let idle = pool.num_idle() as i64;
            self.pool_connections.with_label_values(&["idle"]).set(idle);
            self.pool_connections.with_label_values(&["in_use"]).set(size - idle);
            self.pool_connections.with_label_values(&["max"]).set(i64::from(pool.options().get_max_connections()));
        }
        let mut out = Vec::new();
        // Encoding gathered families into a Vec cannot fail.
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
