//! The backend conformance suite: the engine's behaviour, written once against
//! `&dyn EngineBackend` (and `CompletionBackend`), run unchanged against every backend.
//!
//! # What it covers
//!
//! One module per behaviour area; each case is a `pub async fn name<H: ConformanceHarness>()`
//! that builds its own fresh backend through [`Fixture`].
//! - [`fencing`] — stale epochs, expired leases, forged handles, other backends' handles and
//!   damaged handles get typed errors and write nothing; a stalled worker never overwrites the
//!   attempt that replaced it; replays after completion report the terminal state.
//! - [`state_machine`] — after every transition, `describe_execution(..).state` equals what
//!   `ff_core::state::apply` computes from the vector before it, and is valid.
//! - [`claim`] — priority then FIFO, capability routing, delayed work, batches, claims with
//!   context, renewal and progress.
//! - [`attempt_end`] — complete (single and batched with stale items), cancel, delay and resume.
//! - [`retry`] — backoff schedules retries, exhausted or permanent failures are terminal.
//! - [`reclaim`] — lease expiry, plain reclaims, reclaim grants, the reclaim cap.
//! - [`timeouts`] — execution deadlines and attempt timeouts.
//! - [`concurrency`] — concurrent claimers claim every execution exactly once.
//! - [`stream`] — appends, range reads, closure, fenced appends, bad input.
//! - [`ingress`], [`reads`] — creation, idempotency, reads, tags, listings, metadata.
//! - [`bad_input`] — each main validation: its specific `code()`, and nothing written.
//! - [`completions`] — completion subscriptions: order, resume from a cursor, filters.
//! - [`route`] — work no live worker can run is parked, and unparked by a capable worker's
//!   registration or claim.
//! - [`operator`] — operator cancel, lease revocation, priority changes, replays, expired-lease
//!   listings and the fence-triple peers of renew, complete and fail; their refusals.
//! - [`flow`] — DAGs: hops released in the completing transaction, skips cascading, quorum
//!   sibling cancellation, refused graph edits, flow cancellation, waiting for children, races
//!   and a 1,000-way fan-out and fan-in.
//! - [`suspension`] — suspend and resume by signal on the same attempt, signal effects, dedup,
//!   buffering on pending waitpoints, tokens with rotation and grace, timeouts by behaviour,
//!   resume delays, listings; every refusal writes nothing.
//! - [`quota`] — quota policies: caps admit exactly N, releases admit the next waiter however
//!   the holder ended, keys queue separately, rate windows, explicit admissions, 16 racing
//!   claimers never exceed the cap, bad input.
//! - [`budget`] — budgets: all-or-nothing, deduplicated usage reports, breaches, a strict
//!   budget that runs out stops claims until reset or raised, attributed spend and its
//!   release, bad input.
//! - [`grant`] — claim grants (reserve, claim with the key, refusals, lapse), the operator's
//!   immediate claim, the block primitives fenced by reason.
//! - [`trace`] — a submitter's trace context travels with every claim of its execution.
//! - [`retention`] — aged terminal executions and flows deleted whole, young and live work
//!   untouched, overrides by lane then namespace, batches, event pruning and `cursor_expired`,
//!   bad input.
//! - [`worker_registry`] — registration, heartbeats, listings; a dead or lapsed worker's
//!   leases are revoked at once; bad input.
//!
//! Cases never sleep waiting for a timer: [`ConformanceHarness::make_past`] moves one stored
//! timer ([`Timer`]) into the past and the case then calls the `MaintenanceBackend` hook a
//! reconciler would. A rejected call is proven to write nothing by comparing
//! [`ConformanceHarness::fingerprint`] before and after. Cases assert behaviour, never timings.
//!
//! # Running it against a backend
//!
//! The backend's test crate (which needs `tokio` with the `macros` and `rt-multi-thread`
//! features) implements [`ConformanceHarness`] and invokes the macro once, in an integration
//! test file:
//!
//! ```text
//! struct MyHarness { /* a fresh backend */ }
//! #[async_trait::async_trait]
//! impl ff_test::conformance::ConformanceHarness for MyHarness { /* new, backend, ... */ }
//! ff_test::conformance_suite!(MyHarness);
//! ```
//!
//! This expands to one `#[tokio::test]` per case, named `<area>::<case>`, so cases run in
//! parallel and fail one by one. The Postgres backend runs it from
//! `crates/ff-backend-postgres/tests/conformance.rs`; a new backend passes it unchanged.
//!
//! # Growing it
//!
//! Every operation added to the backend traits from now on gets its cases here (its behaviour,
//! its fencing, its bad input), listed in [`conformance_suite!`](crate::conformance_suite).
//! Tests that need to look inside one backend's storage (its SQL, its schema, its background
//! loops) stay in that backend's own test crate.

pub mod attempt_end;
pub mod bad_input;
pub mod budget;
pub mod claim;
pub mod completions;
pub mod concurrency;
pub mod fencing;
mod fixture;
pub mod flow;
pub mod grant;
mod harness;
pub mod ingress;
pub mod operator;
pub mod quota;
pub mod reads;
pub mod reclaim;
pub mod retention;
pub mod retry;
pub mod route;
pub mod state_machine;
pub mod stream;
pub mod suspension;
pub mod timeouts;
pub mod trace;
pub mod worker_registry;

pub use fixture::Fixture;
pub use harness::{AGED_BY_MS, ConformanceHarness, Timer};

/// Expands to one `#[tokio::test]` per conformance case, run against the given
/// [`ConformanceHarness`](crate::conformance::ConformanceHarness) type. Invoke it once, at the
/// root of an integration test file where the harness type is in scope.
#[macro_export]
macro_rules! conformance_suite {
    ($harness:ty) => {
        $crate::__conformance_cases! { $harness;
            fencing {
                stale_epoch_after_reclaim_is_rejected_and_writes_nothing,
                expired_lease_is_rejected_and_writes_nothing,
                forged_handle_of_another_worker_is_rejected,
                handle_from_another_backend_or_damaged_is_rejected,
                stalled_worker_never_overwrites_the_newer_attempt,
                replay_after_completion_is_reported_as_not_active,
                fingerprint_changes_with_every_kind_of_write,
            }
            state_machine {
                one_execution_through_every_non_terminal_transition,
                lease_holder_terminal_transitions,
                delayed_create_and_promotion,
                timeout_and_deadline_expiry,
                operator_transitions,
                flow_transitions,
                suspension_transitions,
            }
            claim {
                highest_priority_first_then_fifo,
                batch_created_executions_are_claimed_in_submission_order,
                only_workers_with_every_required_capability_claim,
                delayed_execution_is_claimable_once_promoted,
                order_holds_for_work_that_arrives_ahead_of_what_was_claimed,
                empty_lane_returns_no_work,
                renew_and_progress_update_the_lease,
                claims_with_context_return_what_the_handler_needs,
            }
            attempt_end {
                complete_stores_the_result,
                complete_batch_fences_each_item_on_its_own,
                complete_batch_credits_the_live_lease_not_a_stale_one,
                cancel_by_the_lease_holder_is_terminal,
                delay_releases_the_lease_and_the_next_claim_resumes_the_same_attempt,
            }
            retry {
                backoff_schedules_a_retry_and_exhausting_retries_fails,
                permanent_failure_is_terminal_despite_retries_left,
                no_retry_policy_means_first_failure_is_terminal,
                exponential_backoff_grows_and_is_capped,
            }
            trace {
                the_trace_context_travels_with_every_claim,
            }
            reclaim {
                plain_claim_reclaims_an_expired_lease,
                lease_expiry_hook_rejects_the_wrong_partition,
                reclaim_grant_admits_one_worker_once,
                reclaim_cap_fails_the_execution,
            }
            timeouts {
                execution_deadline_expires_a_waiting_execution,
                attempt_timeout_expires_the_running_attempt_and_fences_its_worker,
            }
            concurrency {
                concurrent_claimers_claim_each_execution_exactly_once,
            }
            stream {
                frames_append_in_order_and_read_back_verbatim,
                fenced_append_after_reclaim_is_rejected,
                stream_bad_input_is_rejected,
                a_tail_waits_for_the_next_frame_and_for_the_end,
                summary_frames_merge_into_the_summary_document,
                best_effort_frames_are_trimmed_and_durable_ones_kept,
            }
            ingress {
                create_sets_the_initial_state_from_the_state_machine,
                idempotency_key_returns_the_original_as_duplicate,
                batch_create_returns_results_in_input_order,
            }
            reads {
                describe_info_context_and_result,
                policy_and_deadline_are_stored,
                missing_executions_read_as_none_or_not_found,
                tags_set_get_and_validate,
                list_executions_pages_through_a_partition,
                lanes_are_registered_on_create_and_listed_in_order,
                backend_metadata_is_consistent,
            }
            route {
                unroutable_work_is_parked_until_a_capable_worker_registers,
                a_claim_with_the_capabilities_unparks_and_takes_parked_work,
                routable_work_is_not_parked,
            }
            quota {
                a_concurrency_cap_admits_n_and_a_release_admits_the_next,
                a_slot_is_released_however_the_holder_ends,
                suspension_gives_back_its_slot_and_resumption_asks_again,
                a_flow_member_released_by_its_upstream_is_admitted_by_its_policy,
                one_keys_backlog_does_not_hold_back_another_key,
                a_lanes_policy_applies_to_work_created_on_it,
                rate_limited_work_waits_for_its_window,
                explicit_admissions_share_the_policys_slots,
                sixteen_concurrent_claimers_never_exceed_the_cap,
                quota_bad_input_is_refused,
            }
            budget {
                usage_reports_apply_all_or_nothing_and_once_per_key,
                a_strict_budget_that_runs_out_stops_claims_until_reset_or_raised,
                spend_is_attributed_and_released,
                budget_bad_input_is_refused,
            }
            grant {
                a_grant_reserves_work_for_the_worker_who_claims_with_it,
                grant_refusals_write_nothing,
                issue_claim_grant_checks_the_worker_and_the_execution,
                an_operator_claims_at_once,
                blocks_and_unblocks_are_fenced_by_reason,
            }
            worker_registry {
                register_refresh_heartbeat_and_list,
                an_instance_bound_to_another_worker_is_refused,
                marking_a_worker_dead_revokes_its_leases_at_once,
                a_lapsed_worker_is_retired_and_its_leases_revoked,
                unknown_workers_are_not_registered,
                bad_registry_input_is_rejected_and_writes_nothing,
            }
            operator {
                operator_cancel_ends_any_non_terminal_state,
                non_operator_cancel_needs_the_current_fence,
                revoke_lease_makes_the_execution_reclaimable_at_once,
                change_priority_reorders_waiting_work,
                replay_runs_a_terminal_execution_again_up_to_its_cap,
                list_expired_leases_pages_through_expired_leases,
                fence_triple_peers_act_like_the_handle_calls,
                operator_bad_input_is_rejected_and_writes_nothing,
            }
            bad_input {
                bad_create_input_is_rejected_and_writes_nothing,
                one_bad_item_rejects_the_whole_batch,
                malformed_ids_and_lanes_are_rejected_before_any_call,
                bad_claim_input_is_rejected_and_claims_nothing,
                bad_attempt_input_is_rejected_and_writes_nothing,
            }
            completions {
                completions_are_delivered_resumable_and_filtered,
                lease_history_follows_every_lease_change,
                instance_tags_follow_set_and_clear,
                a_waiting_subscriber_is_woken_by_a_completion,
            }
            flow {
                chain_releases_each_hop_in_the_completing_transaction,
                incremental_build_holds_children_until_their_parents_end,
                a_failure_skips_its_downstreams_transitively,
                cancelled_and_expired_upstreams_count_as_failures,
                quorum_cancels_its_remaining_siblings,
                an_impossible_any_of_group_skips_its_downstream,
                bad_graph_edits_are_refused_and_write_nothing,
                cancel_flow_applies_its_policy,
                cancel_flow_header_leaves_members_to_the_caller,
                wait_children_resumes_the_parent_when_its_children_end,
                concurrent_upstreams_release_an_all_of_child_once,
                concurrent_batches_across_flows_both_succeed,
                a_flow_cancel_racing_a_completion_ends_consistently,
                thousand_way_fan_out_and_fan_in,
                flow_reads_listings_tags_and_repairs,
                replaying_a_failed_branch_runs_its_downstream_again,
            }
            suspension {
                a_signal_resumes_the_same_attempt,
                signal_effects_dedup_and_distinct_sources,
                pending_waitpoints_buffer_signals,
                suspend_twice_and_idempotent_suspend,
                tokens_are_verified_with_rotation_and_grace,
                bad_signals_and_suspends_are_refused_and_write_nothing,
                suspension_timeouts_act_by_behaviour,
                resume_delay_is_honoured,
                listings_and_waitpoint_expiry,
                signal_deliveries_are_followed_from_a_cursor,
                resumed_attempts_are_claimed_by_id_or_grant,
            }
            retention {
                old_terminal_executions_go_and_young_or_live_ones_stay,
                overrides_lane_over_namespace_over_default,
                trimming_loops_in_batches_and_is_idempotent,
                a_flow_goes_whole_once_every_member_is_old,
                pruned_events_expire_older_cursors,
                bad_retention_input_is_refused_and_writes_nothing,
            }
        }
    };
}

/// The expansion behind [`conformance_suite!`]: one module per area, one test per case.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($harness:ty; $($area:ident { $($case:ident),* $(,)? })*) => {
        $(
            mod $area {
                #[allow(unused_imports)]
                use super::*;
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $case() {
                        $crate::conformance::$area::$case::<$harness>().await;
                    }
                )*
            }
        )*
    };
}
