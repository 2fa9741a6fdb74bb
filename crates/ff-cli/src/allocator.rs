//! The process's allocator (mimalloc) and the one place that asks it to give freed memory back
//! to the operating system.
//!
//! mimalloc returns ("purges") free memory to the OS only after a delay (1 s by default) and
//! only when the allocator is next called: the purge is done lazily by allocations and frees,
//! not by a thread of its own. A server that goes quiet right after a burst of large request
//! bodies therefore keeps the burst's memory resident until traffic resumes. Lowering the purge
//! delay to zero would purge on every free, a system call on the hot path of every request; a
//! forced collection once a burst is over costs one pass when it matters and nothing otherwise.
//! So [`release_after_bursts`] waits for the server's body budget to drain after a large burst,
//! lets the last responses go out, and asks for a collection: `mi_collect(true)` frees the
//! calling thread's empty pages and purges every arena's freed memory, so it runs once on that
//! thread now and once on every runtime worker thread the next time it parks
//! ([`collect_if_asked`], the runtime's park hook). It also has the database pools replace their
//! connections, whose buffers grew to the burst's largest payloads.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ff_server::BodyBudget;

/// mimalloc: the HTTP path allocates per request; measured about 10% more executions/s than
/// the system allocator on the S1 benchmark through the API.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// The `mimalloc` crate links the whole of libmimalloc; it exposes this function only under a
// feature that pulls in another crate, so it is declared here.
unsafe extern "C" {
    fn mi_collect(force: bool);
}

/// A burst whose request bodies reached this many bytes in flight is worth a collection.
const LARGE_BURST: usize = 4 * 1024 * 1024;
/// How long after a burst drains the collection runs: responses finish going out meanwhile, and
/// back-to-back bursts share one collection (this is also the shortest interval between two).
const SETTLE: Duration = Duration::from_secs(1);

/// How long after asking the pools to replace their connections the second collection runs.
const RECYCLED: Duration = Duration::from_secs(5);

/// Asks every runtime thread for a collection and runs one on this thread.
fn ask_for_collection() {
    COLLECTIONS_ASKED.fetch_add(1, Ordering::Relaxed);
    collect_if_asked();
}

/// Collections asked for so far.
static COLLECTIONS_ASKED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Collections this thread has run.
    static COLLECTIONS_RUN: Cell<u64> = const { Cell::new(0) };
}

/// Runs the collection asked for since this thread's last one, if any: the runtime's worker
/// threads call this when they park (go idle), so each frees its own empty pages.
pub(crate) fn collect_if_asked() {
    let asked = COLLECTIONS_ASKED.load(Ordering::Relaxed);
    COLLECTIONS_RUN.with(|run| {
        if run.get() < asked {
            run.set(asked);
            // SAFETY: mi_collect takes no pointers and may be called from any thread at any
            // time; it only returns memory that no allocation uses.
            unsafe { mi_collect(true) };
        }
    });
}

/// Returns the memory of each large burst of request bodies to the OS once `budget` has
/// drained; runs until dropped.
pub(crate) async fn release_after_bursts(budget: BodyBudget) {
    loop {
        let high_water = budget.drained().await;
        if high_water < LARGE_BURST {
            continue;
        }
        tokio::time::sleep(SETTLE).await;
        if budget.in_flight() == 0 {
            ff_backend_postgres::connection::recycle_connections();
            ask_for_collection();
            // Connections are replaced as they are next used; collect again once most have been.
            tokio::time::sleep(RECYCLED).await;
            ask_for_collection();
        }
    }
}
