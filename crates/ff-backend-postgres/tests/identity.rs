//! The Postgres backend names itself and reports what it supports truthfully. (That the
//! lifecycle calls answer and the identity matches the label on any backend is in the
//! conformance suite, `ff_test::conformance::reads`.)

mod common;

use common::*;
use ff_core::*;

#[tokio::test]
async fn postgres_reports_its_identity_and_what_it_supports() {
    let fx = Fixture::new().await;
    assert_eq!(fx.backend.backend_label(), "postgres");
    let caps = fx.backend.capabilities();
    assert_eq!(caps.identity.family, "postgres");
    assert!(caps.supports.claim && caps.supports.lease_reclaim && caps.supports.timeouts);
    assert!(caps.supports.flows);
    assert!(caps.supports.suspension && caps.supports.budgets);
    fx.create("identity").await;
    let h = fx.claim("identity", "w").await;
    assert_eq!(h.backend, BackendTag::Postgres);
}
