//! Renewal extends a lease by the TTL stored with it: a TTL edited into the handle is ignored.

mod common;

use common::*;
use ff_core::*;

#[tokio::test]
async fn renewal_uses_the_stored_ttl_not_the_handles() {
    let f = Fixture::new().await;
    let id = f.create("renewals").await;
    let handle = f.claim("renewals", "w1").await; // policy(): a 30 s lease
    let stored_ttl: i64 = sqlx::query_scalar("SELECT lease_ttl_ms FROM ff_execution WHERE execution_id = $1")
        .bind(id.uuid())
        .fetch_one(f.pool())
        .await
        .expect("stored ttl");

    // The same lease, with its TTL field rewritten to seven days and then to 2^62 ms.
    for edited in [7 * 24 * 3_600_000_u64, 1 << 62] {
        let mut forged = payload(&handle);
        forged.lease_ttl_ms = edited;
        let forged = forged.into_handle(BackendTag::Postgres, handle.kind);
        let now = f.backend.server_time_ms().await.expect("time") as i64;
        let renewal = f.backend.renew(&forged).await.expect("the fence holds: same lease");
        let granted = renewal.expires_at_ms.0 - now;
        assert!(
            granted <= stored_ttl + 1_000,
            "renewal granted {granted} ms for a stored TTL of {stored_ttl} ms (handle said {edited})"
        );
        let stored_after: i64 =
            sqlx::query_scalar("SELECT lease_expires_at_ms FROM ff_execution WHERE execution_id = $1")
                .bind(id.uuid())
                .fetch_one(f.pool())
                .await
                .expect("stored expiry");
        assert_eq!(stored_after, renewal.expires_at_ms.0);
    }
}
