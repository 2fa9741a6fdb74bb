//! Where this process's claims start in their lanes.
//!
//! Claims take work in claim-key order, `(-priority, eligible time, creation order)`. The index
//! entries of executions already claimed stay in the claim index until vacuum removes them (and
//! much longer while another session holds an old snapshot), so a claim that always scanned from
//! the head of its lane would walk all of them. Each claim key here (lane and capabilities)
//! remembers the key up to which it has claimed, and the lane's claim generation at that time;
//! the next claim starts just after that key, unless the generation moved: every transition
//! that can make work claimable behind a claimer's position bumps it (see `ff_lane` in the
//! schema), and `ff_claim` then scans from the head. Every claim key also scans from the head
//! at least every [`RESCAN_EVERY`], which bounds how long work skipped for reasons no
//! generation records (a row briefly locked by another statement when a claim passed it, a
//! claimer that rolled back) can be overlooked while its lane has other work.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A claim key: `(-priority, eligible time, creation order)`.
pub(crate) type ClaimPosition = (i32, i64, i64);

/// How often every claim key scans its lane from the head regardless.
pub(crate) const RESCAN_EVERY: Duration = Duration::from_secs(1);

/// Where claims start, per (lane, capabilities).
#[derive(Default)]
pub(crate) struct ClaimPositions(Mutex<HashMap<(String, Vec<String>), Position>>);

/// One claim key's position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Position {
    /// Everything claimable up to here was claimed.
    pub at: ClaimPosition,
    /// The lane's claim generation when `at` was reached.
    pub generation: i64,
    since: Instant,
}

impl ClaimPositions {
    /// Where the next claim of `lane` with `capabilities` starts (`None`: the head of the lane).
    pub(crate) fn start(&self, lane: &str, capabilities: &[String]) -> Option<Position> {
        let mut positions = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let key = (lane.to_owned(), capabilities.to_vec());
        match positions.get(&key) {
            Some(p) if p.since.elapsed() < RESCAN_EVERY => Some(*p),
            Some(_) => {
                positions.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Records that a claim which started at `started` claimed the keys `first..=last`, under
    /// the lane's claim `generation`.
    pub(crate) fn claimed(
        &self,
        lane: &str,
        capabilities: &[String],
        started: Option<Position>,
        first: ClaimPosition,
        last: ClaimPosition,
        generation: i64,
    ) {
        let mut positions = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let key = (lane.to_owned(), capabilities.to_vec());
        // It found work behind where it started (the head-of-lane pass for leftover slots):
        // more may lie there, so the next claim starts from the head.
        if started.is_some_and(|s| first <= s.at) {
            positions.remove(&key);
            return;
        }
        match positions.entry(key) {
            Entry::Occupied(mut e) => {
                let current = e.get_mut();
                let continued = started.is_some_and(|s| s.at == current.at && s.generation == generation);
                if continued && generation == current.generation && last > current.at {
                    current.at = last;
                } else if started.is_none() {
                    // A scan from the head of the lane knows the whole lane: it starts over.
                    *current = Position { at: last, generation, since: Instant::now() };
                }
            }
            Entry::Vacant(e) => {
                if started.is_none() {
                    e.insert(Position { at: last, generation, since: Instant::now() });
                }
            }
        }
    }
}
