//! The server-wide budget of request-body bytes in flight ([`BodyBudget`]), on top of each
//! route's own body limit.
//!
//! Before a route's body is read, the request reserves its size from one shared byte semaphore
//! (tokio's [`Semaphore`], so waiters are served in arrival order and a large request is not
//! starved by small ones): its declared `Content-Length`, or, when the length is not declared
//! (a chunked body), the route's whole limit, because the bytes it will bring are unknown. The
//! reservation is held until the handler has answered (or the request is dropped), which covers
//! the body and everything the handler decoded from it. A request that cannot reserve within
//! the configured wait is answered `503 server_busy` with `Retry-After`, and its body is never
//! read. A declared length over the route's limit is `413 payload_too_large`, also unread.
//!
//! Invariants: the bytes reserved never exceed the budget; every reservation is given back
//! exactly once (it is a guard dropped with the request's future); a request without a body
//! reserves nothing. The configuration guarantees the budget is at least every route's limit,
//! so any request a route accepts can be admitted when the server is otherwise idle.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::HttpBody;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;
use crate::metrics::Telemetry;

/// The shared budget of request-body bytes in flight; clones share it.
#[derive(Clone)]
pub struct BodyBudget(Arc<Inner>);

struct Inner {
    semaphore: Arc<Semaphore>,
    total: usize,
    wait: Duration,
    telemetry: Arc<Telemetry>,
    /// Signalled each time the bytes in flight return to zero (see [`BodyBudget::drained`]).
    drained: Notify,
    /// The most bytes in flight since [`BodyBudget::drained`] last returned.
    high_water: AtomicUsize,
}

impl BodyBudget {
    /// A budget of `total` bytes; a request waits at most `wait` for its share. Its gauge and
    /// refusal counter are `telemetry`'s.
    pub fn new(total: usize, wait: Duration, telemetry: Arc<Telemetry>) -> Self {
        telemetry.set_body_budget(total);
        Self(Arc::new(Inner {
            semaphore: Arc::new(Semaphore::new(total)),
            total,
            wait,
            telemetry,
            drained: Notify::new(),
            high_water: AtomicUsize::new(0),
        }))
    }

    /// The budget, in bytes.
    pub fn total(&self) -> usize {
        self.0.total
    }

    /// The bytes reserved by requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.0.total - self.0.semaphore.available_permits()
    }

    /// Resolves once the bytes in flight have returned to zero since the last call returned
    /// (at once, if that happened while nobody waited): a cue that a burst of requests is over
    /// and the memory it used is free. Returns the most bytes that were in flight meanwhile.
    pub async fn drained(&self) -> usize {
        self.0.drained.notified().await;
        self.0.high_water.swap(0, Ordering::Relaxed)
    }

    /// Reserves `bytes` (at most the budget), waiting at most the configured time.
    async fn reserve(&self, bytes: usize) -> Option<Reservation> {
        let bytes = u32::try_from(bytes.min(self.0.total)).ok()?;
        let telemetry = &self.0.telemetry;
        telemetry.body_budget_waiters(1);
        let acquired = tokio::time::timeout(self.0.wait, self.0.semaphore.clone().acquire_many_owned(bytes)).await;
        telemetry.body_budget_waiters(-1);
        // The semaphore is never closed, so the only failure is the timeout.
        let permit = acquired.ok()?.ok()?;
        telemetry.body_bytes_in_flight(i64::from(bytes));
        self.0.high_water.fetch_max(self.in_flight(), Ordering::Relaxed);
        Some(Reservation { budget: self.clone(), permit: Some(permit) })
    }
}

/// Bytes reserved by one request; given back when dropped.
struct Reservation {
    budget: BodyBudget,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else { return };
        let bytes = permit.num_permits();
        drop(permit);
        self.budget.0.telemetry.body_bytes_in_flight(-(bytes as i64));
        if self.budget.in_flight() == 0 {
            self.budget.0.drained.notify_one();
        }
    }
}

/// The budget as one route sees it: the shared budget and the route's body limit.
#[derive(Clone)]
pub(super) struct RouteBudget {
    pub(super) budget: BodyBudget,
    pub(super) limit: usize,
}

/// Middleware: admits a request once its body's bytes are reserved, holds them until the
/// handler has answered; `503 server_busy` (with `Retry-After`) when the budget stays short
/// for the configured wait, `413` when the declared length exceeds the route's limit.
pub(super) async fn admit(State(route): State<RouteBudget>, req: Request, next: Next) -> Response {
    let hint = req.body().size_hint();
    let bytes = match hint.upper() {
        Some(0) => return next.run(req).await,
        Some(upper) => usize::try_from(upper).unwrap_or(usize::MAX),
        None => route.limit,
    };
    if bytes > route.limit {
        return ApiError::payload_too_large().into_response();
    }
    let Some(reservation) = route.budget.reserve(bytes).await else {
        route.budget.0.telemetry.body_budget_refused();
        let mut response = ApiError::server_busy().into_response();
        response.headers_mut().insert(header::RETRY_AFTER, retry_after(route.budget.0.wait));
        return response;
    };
    let response = next.run(req).await;
    drop(reservation);
    response
}

/// Whole seconds to wait before retrying: the admission wait rounded up, at least one.
fn retry_after(wait: Duration) -> HeaderValue {
    HeaderValue::from(wait.as_millis().div_ceil(1000).max(1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_the_wait_up_to_whole_seconds() {
        for (ms, secs) in [(0, "1"), (1, "1"), (1000, "1"), (1001, "2"), (2500, "3")] {
            assert_eq!(retry_after(Duration::from_millis(ms)), secs, "{ms} ms");
        }
    }
}
