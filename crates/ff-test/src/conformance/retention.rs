//! Retention: terminal executions past their window are deleted with everything of theirs,
//! young and live ones are never touched, a lane's override wins over its namespace's and both
//! over the default, passes loop in batches and repeat harmlessly, a flow goes whole once every
//! member is old, pruned events expire the cursors before them (while the beginning of the log
//! stays readable), and bad input is refused without writing anything.

use std::time::Duration;

use ff_core::event::{CompletionEvent, CompletionStream, EventCursor, ScannerFilter};
use ff_core::*;
use futures::StreamExt;

use super::fixture::*;
use super::flow::graph;
use super::harness::{AGED_BY_MS, ConformanceHarness, Timer};

/// An hour: shorter than [`AGED_BY_MS`], so an aged execution is past it and a fresh one is not.
const HOUR_MS: i64 = 3_600_000;

fn trim_args(lane: &str, default_retention_ms: i64, batch_size: u32) -> TrimRetentionArgs {
    TrimRetentionArgs { lane: lane_id(lane), default_retention_ms, batch_size }
}

/// Creates, claims and completes an execution on `lane` (with one frame), as `f` adjusts it.
async fn finished<H: ConformanceHarness>(
    fx: &Fixture<H>,
    lane: &str,
    f: impl FnOnce(&mut CreateExecutionArgs),
) -> ExecutionId {
    let id = fx.create_with(lane, f).await;
    let h = fx.claim(lane, "w").await;
    assert_eq!(payload(&h).execution_id, id);
    fx.backend.append_frame(&h, frame(b"out", FrameKind::Stdout)).await.expect("append");
    fx.backend.complete(&h, Some(b"done".to_vec())).await.expect("complete");
    id
}

/// A finished execution whose end lies a day in the past.
async fn aged<H: ConformanceHarness>(fx: &Fixture<H>, lane: &str) -> ExecutionId {
    let id = finished(fx, lane, |_| {}).await;
    fx.make_past(&id, Timer::Completion).await;
    id
}

async fn exists<H: ConformanceHarness>(fx: &Fixture<H>, id: &ExecutionId) -> bool {
    fx.backend.read_execution_info(id).await.expect("read").is_some()
}

/// Trims `lane` until a batch comes back short; returns the executions deleted.
async fn trim_all<H: ConformanceHarness>(fx: &Fixture<H>, lane: &str, default_ms: i64) -> u32 {
    let mut total = 0;
    loop {
        let out = fx.backend.trim_retention(trim_args(lane, default_ms, 100)).await.expect("trim");
        total += out.executions;
        if !out.batch_full {
            return total;
        }
    }
}

/// An aged terminal execution goes (its frames too); a young terminal one, a running one and a
/// waiting one stay untouched, as does an aged one on another lane.
pub async fn old_terminal_executions_go_and_young_or_live_ones_stay<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let old = aged(&fx, "ret").await;
    let young = finished(&fx, "ret", |_| {}).await;
    let running = fx.create("ret").await;
    let h = fx.claim("ret", "w").await;
    assert_eq!(payload(&h).execution_id, running);
    let waiting = fx.create("ret").await;
    let elsewhere = aged(&fx, "ret-other").await;
    let before = [fx.fingerprint(&young).await, fx.fingerprint(&running).await, fx.fingerprint(&waiting).await];

    let out = fx.backend.trim_retention(trim_args("ret", HOUR_MS, 100)).await.unwrap();
    assert_eq!(out, TrimRetentionOutcome { executions: 1, flows: 0, batch_full: false });
    assert!(!exists(&fx, &old).await, "the aged execution is gone");
    let after = [fx.fingerprint(&young).await, fx.fingerprint(&running).await, fx.fingerprint(&waiting).await];
    assert_eq!(before, after, "young and live executions are untouched");
    assert_eq!(fx.state(&running).await, PublicState::Active);
    assert!(exists(&fx, &elsewhere).await, "another lane is trimmed by its own call");
    fx.backend.complete(&h, None).await.expect("the running execution still completes");
}

/// A lane's override wins over its executions' namespace's, which wins over the default.
pub async fn overrides_lane_over_namespace_over_default<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let keep = Namespace::new("keep");
    let two_days = 2 * AGED_BY_MS;
    fx.backend
        .set_retention_policy(SetRetentionPolicyArgs {
            scope: RetentionScope::Namespace(keep.clone()),
            retention_ms: two_days,
        })
        .await
        .unwrap();
    fx.backend
        .set_retention_policy(SetRetentionPolicyArgs {
            scope: RetentionScope::Lane(lane_id("long")),
            retention_ms: two_days,
        })
        .await
        .unwrap();
    fx.backend
        .set_retention_policy(SetRetentionPolicyArgs {
            scope: RetentionScope::Lane(lane_id("short")),
            retention_ms: HOUR_MS,
        })
        .await
        .unwrap();

    let plain = aged(&fx, "mixed").await;
    let kept_by_namespace = finished(&fx, "mixed", |a| a.namespace = keep.clone()).await;
    fx.make_past(&kept_by_namespace, Timer::Completion).await;
    let kept_by_lane = aged(&fx, "long").await;
    let lane_beats_namespace = finished(&fx, "short", |a| a.namespace = keep.clone()).await;
    fx.make_past(&lane_beats_namespace, Timer::Completion).await;

    // The default alone would keep everything: the overrides decide.
    assert_eq!(trim_all(&fx, "mixed", HOUR_MS).await, 1);
    assert_eq!(trim_all(&fx, "long", HOUR_MS).await, 0);
    assert_eq!(trim_all(&fx, "short", two_days * 10).await, 1);
    assert!(!exists(&fx, &plain).await);
    assert!(exists(&fx, &kept_by_namespace).await, "the namespace's two days have not passed");
    assert!(exists(&fx, &kept_by_lane).await, "the lane's two days have not passed");
    assert!(!exists(&fx, &lane_beats_namespace).await, "the lane's hour wins over the namespace's two days");

    let listed = fx.backend.list_retention_policies().await.unwrap();
    let scopes: Vec<_> = listed.iter().map(|p| (p.scope.kind(), p.scope.id().to_owned(), p.retention_ms)).collect();
    assert_eq!(
        scopes,
        vec![
            ("lane", "long".to_owned(), two_days),
            ("lane", "short".to_owned(), HOUR_MS),
            ("namespace", "keep".to_owned(), two_days)
        ]
    );
    let long = RetentionScope::Lane(lane_id("long"));
    assert_eq!(fx.backend.read_retention_policy(&long).await.unwrap().map(|p| p.retention_ms), Some(two_days));
    assert!(fx.backend.clear_retention_policy(&long).await.unwrap());
    assert!(!fx.backend.clear_retention_policy(&long).await.unwrap(), "nothing left to clear");
    assert_eq!(fx.backend.read_retention_policy(&long).await.unwrap(), None);
    assert_eq!(trim_all(&fx, "long", HOUR_MS).await, 1, "without its override the lane takes the default");
    assert!(!exists(&fx, &kept_by_lane).await);
}

/// Five due executions in batches of two: full, full, then short; running it again deletes
/// nothing.
pub async fn trimming_loops_in_batches_and_is_idempotent<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(aged(&fx, "batches").await);
    }
    let mut seen = Vec::new();
    loop {
        let out = fx.backend.trim_retention(trim_args("batches", HOUR_MS, 2)).await.unwrap();
        seen.push((out.executions, out.batch_full));
        if !out.batch_full {
            break;
        }
    }
    assert_eq!(seen, vec![(2, true), (2, true), (1, false)]);
    for id in &ids {
        assert!(!exists(&fx, id).await);
    }
    let again = fx.backend.trim_retention(trim_args("batches", HOUR_MS, 2)).await.unwrap();
    assert_eq!(again, TrimRetentionOutcome::default());
}

/// A flow's members go only together, once every member is terminal and past its window.
pub async fn a_flow_goes_whole_once_every_member_is_old<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let (flow, ids) = graph(&fx, "flows", 2, &[(0, 1)], &[]).await;
    let h = fx.claim("flows", "w").await;
    assert_eq!(payload(&h).execution_id, ids[0]);
    fx.backend.complete(&h, None).await.unwrap();
    fx.make_past(&ids[0], Timer::Completion).await;
    assert_eq!(trim_all(&fx, "flows", HOUR_MS).await, 0, "a member is still live");
    assert!(exists(&fx, &ids[0]).await);

    let h = fx.claim("flows", "w").await;
    assert_eq!(payload(&h).execution_id, ids[1]);
    fx.backend.complete(&h, None).await.unwrap();
    assert_eq!(trim_all(&fx, "flows", HOUR_MS).await, 0, "a member is still young");

    fx.make_past(&ids[1], Timer::Completion).await;
    let out = fx.backend.trim_retention(trim_args("flows", HOUR_MS, 1)).await.unwrap();
    assert_eq!((out.executions, out.flows), (2, 1), "the whole flow goes with its first due member");
    assert!(!exists(&fx, &ids[0]).await && !exists(&fx, &ids[1]).await);
    assert_eq!(fx.backend.describe_flow(&flow).await.unwrap(), None);
}

/// The next item of a completion stream, however long the log takes to show it.
async fn next_item(stream: &mut CompletionStream) -> Result<CompletionEvent, EngineError> {
    tokio::time::timeout(Duration::from_secs(30), stream.next()).await.expect("an item").expect("the stream is open")
}

/// Pruning the aged head of the log expires a cursor inside it; the beginning still reads, from
/// the oldest retained event; an event younger than the window stops the pruning.
pub async fn pruned_events_expire_older_cursors<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let completions = fx.harness.completions();
    let first = aged(&fx, "events").await;
    let second = aged(&fx, "events").await;
    let young = finished(&fx, "events", |_| {}).await;

    let mut from_start =
        completions.subscribe_completions_from(EventCursor::BEGINNING, &ScannerFilter::default()).await.unwrap();
    let first_event = next_item(&mut from_start).await.unwrap();
    assert_eq!(first_event.execution_id, first);

    let second_event = next_item(&mut from_start).await.unwrap();
    assert_eq!(second_event.execution_id, second);

    // Events become prunable once no transaction older than them is in flight (in the whole
    // database cluster), so the pass is repeated until it has reached them.
    let mut horizon = EventCursor::BEGINNING;
    for _ in 0..600 {
        let out =
            fx.backend.prune_event_log(PruneEventLogArgs { retention_ms: HOUR_MS, batch_size: 100 }).await.unwrap();
        horizon = out.horizon;
        if horizon >= second_event.cursor {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(horizon >= second_event.cursor, "the aged events were pruned");
    let again = fx.backend.prune_event_log(PruneEventLogArgs { retention_ms: HOUR_MS, batch_size: 100 }).await.unwrap();
    assert_eq!((again.events, again.horizon), (0, horizon), "the young events stop the pruning");

    let mut expired =
        completions.subscribe_completions_from(first_event.cursor, &ScannerFilter::default()).await.unwrap();
    let e = next_item(&mut expired).await.expect_err("a cursor behind the horizon");
    assert_eq!(e.code(), "cursor_expired");

    let mut restarted =
        completions.subscribe_completions_from(EventCursor::BEGINNING, &ScannerFilter::default()).await.unwrap();
    let oldest = next_item(&mut restarted).await.unwrap();
    assert_eq!(oldest.execution_id, young, "the young execution's events stopped the pruning");
    assert!(oldest.cursor > horizon);
    assert!(exists(&fx, &second).await, "pruning events deletes no execution");
}

/// Windows outside 1..=MAX_RETENTION_MS and batches outside 1..=MAX_RETENTION_BATCH are
/// `invalid_input`, and nothing is written or deleted.
pub async fn bad_retention_input_is_refused_and_writes_nothing<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let old = aged(&fx, "bad").await;
    let before = fx.fingerprint(&old).await;
    let b = &fx.backend;
    for (ms, batch) in [(-1, 10), (0, 10), (MAX_RETENTION_MS + 1, 10), (HOUR_MS, 0), (HOUR_MS, MAX_RETENTION_BATCH + 1)]
    {
        let e = b.trim_retention(trim_args("bad", ms, batch)).await.unwrap_err();
        assert_eq!(e.code(), "invalid_input", "trim {ms} {batch}");
        let e = b.prune_event_log(PruneEventLogArgs { retention_ms: ms, batch_size: batch }).await.unwrap_err();
        assert_eq!(e.code(), "invalid_input", "prune {ms} {batch}");
    }
    for ms in [-5, 0, MAX_RETENTION_MS + 1] {
        let args = SetRetentionPolicyArgs { scope: RetentionScope::Lane(lane_id("bad")), retention_ms: ms };
        assert_eq!(b.set_retention_policy(args).await.unwrap_err().code(), "invalid_input");
    }
    let nul = RetentionScope::Namespace(Namespace::new("a\0b"));
    assert_eq!(
        b.set_retention_policy(SetRetentionPolicyArgs { scope: nul.clone(), retention_ms: HOUR_MS })
            .await
            .unwrap_err()
            .code(),
        "nul_in_text"
    );
    assert_eq!(b.read_retention_policy(&nul).await.unwrap_err().code(), "nul_in_text");
    assert!(b.list_retention_policies().await.unwrap().is_empty(), "no override was written");
    assert_eq!(fx.fingerprint(&old).await, before, "nothing was deleted");
}
