//! The properties every run must keep (docs/behaviour.md: "How it behaves", "Faults";
//! ARCHITECTURE.md: "Invariants"), checked on what a run left behind.

use std::collections::BTreeMap;
use std::time::Duration;

use super::cluster::{Actor, Effect};
use super::run::{engine_of, Run, CONVERGENCE, RESYNC, TTL};
use super::store::lock_name;

/// How far back a delete may be explained by a change of its container, a
/// fault of the engine or of the deleting agent's store.
const EXPLAINED_WITHIN: Duration = Duration::from_secs(15);
/// An agent whose store answered this long in one stretch has kept its
/// lease alive: a request still lost in a black hole when the stretch
/// began (5 s), then the longest retry delay (5 s), and a margin; a
/// healthy keep-alive needs only its period (TTL / 3).
const KEEP_ALIVE_CHANCE: Duration = Duration::from_millis(11_000);
/// The write rate: at most this many of an agent's transactions in any
/// [`RATE_WINDOW`], plus [`WRITES_PER_STIMULUS`] for each thing that
/// happened in the window before (a container change, a foreign write, a
/// fault, an agent starting or stopping).
const RATE_WINDOW: Duration = Duration::from_secs(10);
const FREE_WRITES: usize = 20;
const WRITES_PER_STIMULUS: usize = 8;

/// Every violation of the properties, in words; empty when the run is good.
pub fn violations(run: &Run) -> Vec<String> {
    let mut found = Vec::new();
    if run.panics > 0 {
        found.push(format!("{} task(s) panicked", run.panics));
    }
    only_own_keys(run, &mut found);
    converged(run, &mut found);
    no_needless_deletes(run, &mut found);
    no_needless_expiry(run, &mut found);
    handover_without_deletes(run, &mut found);
    one_writer(run, &mut found);
    restart_without_deletes(run, &mut found);
    standby_writes_nothing(run, &mut found);
    no_hand_over_between_engines(run, &mut found);
    bounded_write_rate(run, &mut found);
    found
}

/// No agent writes outside its host prefix, but for its lock key.
fn only_own_keys(run: &Run, found: &mut Vec<String>) {
    let candidates = format!("{}/", lock_name(&run.prefix));
    for (process, key) in &run.outside_prefix_attempts {
        found.push(format!(
            "agent {process} asked to write {key} outside its prefix"
        ));
    }
    for effect in &run.effects {
        let by_agent = matches!(effect.actor, Actor::Agent(_));
        let own = run.prefix.contains(&effect.key) || effect.key.starts_with(&candidates);
        if by_agent && !own {
            found.push(format!(
                "{:?} wrote {} at {:?}, outside its prefix",
                effect.actor, effect.key, effect.at
            ));
        }
    }
}

/// Once the faults stop, the host prefix equals the truth within
/// [`CONVERGENCE`].
fn converged(run: &Run, found: &mut Vec<String>) {
    for (key, value) in &run.final_truth {
        match run.final_prefix.get(key) {
            None => found.push(format!(
                "{CONVERGENCE:?} after the faults: {key} is missing"
            )),
            Some(held) if held != value => found.push(format!(
                "{CONVERGENCE:?} after the faults: {key} holds {}",
                String::from_utf8_lossy(held)
            )),
            Some(_) => {}
        }
    }
    for key in run.final_prefix.keys() {
        if !run.final_truth.contains_key(key) {
            found.push(format!("{CONVERGENCE:?} after the faults: {key} is stale"));
        }
    }
}

fn overlaps(window: (Duration, Duration), from: Duration, to: Duration) -> bool {
    window.0 <= to && window.1 >= from
}

/// No agent deletes a record whose container kept qualifying (docs/host-lock.md: a
/// hung or unreachable engine or etcd deletes nothing): the container
/// changed in the [`EXPLAINED_WITHIN`] before the delete, or before the
/// faults (of the engine, of the deleting agent's store) that ran into
/// that span, during which the agent may have fallen behind.
fn no_needless_deletes(run: &Run, found: &mut Vec<String>) {
    let history = &run.history;
    for effect in &run.effects {
        let Actor::Agent(process) = effect.actor else {
            continue;
        };
        if effect.value.is_some() || !run.prefix.contains(&effect.key) {
            continue;
        }
        let to = effect.at;
        let slot = history.lifetimes.get(&process).map(|life| life.0);
        let mut faults: Vec<(Duration, Duration)> = history.engine_faults.clone();
        faults.extend(
            history
                .store_faults
                .iter()
                .filter(|(s, _, _)| s.is_none() || *s == slot)
                .map(|(_, a, b)| (*a, *b)),
        );
        let mut from = to.saturating_sub(EXPLAINED_WITHIN);
        loop {
            let earliest = faults
                .iter()
                .filter(|w| overlaps(**w, from, to))
                .map(|w| w.0.saturating_sub(EXPLAINED_WITHIN))
                .min()
                .unwrap_or(from);
            if earliest >= from {
                break;
            }
            from = earliest;
        }
        if qualified_throughout(run, &effect.key, from, to) {
            found.push(format!(
                "agent {process} deleted {} at {:?} (r{}) although its container qualified since {from:?}",
                effect.key, effect.at, effect.revision
            ));
        }
    }
}

/// A live agent's lease expires only when its store was out of reach: an
/// expiry after a stretch of [`KEEP_ALIVE_CHANCE`] in which it was
/// reachable is a lease the agent failed to keep alive.
fn no_needless_expiry(run: &Run, found: &mut Vec<String>) {
    let history = &run.history;
    let mut seen = Vec::new();
    for effect in &run.effects {
        let Some((lease, Some(owner), refreshed)) = effect.expired else {
            continue;
        };
        if seen.contains(&lease) {
            continue;
        }
        seen.push(lease);
        let Some(&(slot, _, end)) = history.lifetimes.get(&owner) else {
            continue;
        };
        if end.is_some_and(|end| end <= effect.at) {
            continue; // a dead agent's lease goes
        }
        let mut bad: Vec<(Duration, Duration)> = history
            .store_faults
            .iter()
            .filter(|(s, _, _)| *s == Some(slot))
            .map(|(_, a, b)| (*a, *b))
            .collect();
        bad.sort();
        let mut longest = Duration::ZERO;
        let mut good_from = refreshed;
        for (a, b) in bad {
            if b < refreshed || a > effect.at {
                continue;
            }
            longest = longest.max(a.saturating_sub(good_from));
            good_from = good_from.max(b);
        }
        longest = longest.max(effect.at.saturating_sub(good_from));
        if longest >= KEEP_ALIVE_CHANCE {
            found.push(format!(
                "the lease {lease:x} of live agent {owner} expired at {:?} (kept alive last at {refreshed:?}, TTL {TTL:?}) although its store answered for {longest:?} in one stretch",
                effect.at
            ));
        }
    }
}

/// A holder that stops hands the host over: a standby that was up and
/// reachable rewrites the records onto its own lease before the old lease
/// expires, so no live record sees a delete (docs/host-lock.md: "One agent per host").
fn handover_without_deletes(run: &Run, found: &mut Vec<String>) {
    let history = &run.history;
    for effect in &run.effects {
        let Some((lease, Some(owner), _)) = effect.expired else {
            continue;
        };
        if !history.stopped.contains(&owner) || !run.prefix.contains(&effect.key) {
            continue;
        }
        let Some(&(_, _, Some(stop))) = history.lifetimes.get(&owner) else {
            continue;
        };
        let to = effect.at;
        if to < stop {
            continue; // expired while it ran: `no_needless_expiry`'s case
        }
        let from = stop.saturating_sub(EXPLAINED_WITHIN);
        let calm = !history.engine_faults.iter().any(|w| overlaps(*w, from, to))
            && !history
                .store_faults
                .iter()
                .any(|(_, a, b)| overlaps((*a, *b), from, to));
        // A standby waiting in line when the holder stopped (the holder
        // resigns only for one that is there; `tenure::resign_or_keep`).
        let standby = history.lifetimes.iter().any(|(process, (_, start, end))| {
            *process != owner
                && *start <= from
                && end.is_none_or(|end| end >= to)
                && campaigning_at(run, *process, stop)
        });
        // A killed agent's key ahead in line: the holder cannot tell it
        // from a live one on another machine, and it holds until its lease
        // expires (docs/host-lock.md: a standby that cannot see the holder's process
        // waits for its lease).
        let dead_next = next_in_line_at(run, owner, stop).is_some_and(|next| {
            history
                .lifetimes
                .get(&next)
                .is_some_and(|(_, _, end)| end.is_some_and(|end| end <= stop))
        });
        if calm && standby && !dead_next && qualified_throughout(run, &effect.key, from, to) {
            found.push(format!(
                "{} expired with the lease {lease:x} of agent {owner}, stopped at {stop:?}, at {to:?}, although a standby was up",
                effect.key
            ));
        }
    }
}

/// The candidate keys in the election at `at`: each with the revision that
/// created it and the agent that wrote it.
fn line_at(run: &Run, at: Duration) -> BTreeMap<&str, (i64, usize)> {
    let candidates = format!("{}/", lock_name(&run.prefix));
    let mut line: BTreeMap<&str, (i64, usize)> = BTreeMap::new();
    for effect in run.effects.iter().take_while(|e| e.at <= at) {
        if !effect.key.starts_with(&candidates) {
            continue;
        }
        match (&effect.value, effect.actor) {
            (Some(_), Actor::Agent(writer)) => {
                line.entry(&effect.key).or_insert((effect.revision, writer));
            }
            (None, _) => {
                line.remove(effect.key.as_str());
            }
            _ => {}
        }
    }
    line
}

/// The agent whose candidate key came next after `owner`'s in the line at
/// `at` (the oldest other one): who held the host once `owner` resigned.
fn next_in_line_at(run: &Run, owner: usize, at: Duration) -> Option<usize> {
    line_at(run, at)
        .into_values()
        .filter(|(_, writer)| *writer != owner)
        .min_by_key(|(created, _)| *created)
        .map(|(_, writer)| writer)
}

/// Whether agent `process` had a candidate key in the election at `at`.
fn campaigning_at(run: &Run, process: usize, at: Duration) -> bool {
    line_at(run, at)
        .values()
        .any(|(_, writer)| *writer == process)
}

/// No agent writes the host's prefix while another holds the host's lock:
/// every write is fenced by the writer's own lock key.
fn one_writer(run: &Run, found: &mut Vec<String>) {
    for effect in &run.effects {
        let Actor::Agent(process) = effect.actor else {
            continue;
        };
        if !run.prefix.contains(&effect.key) || effect.holder.is_none_or(|h| h == process) {
            continue;
        }
        found.push(format!(
            "agent {process} wrote {} at {:?} while agent {:?} held the host",
            effect.key, effect.at, effect.holder
        ));
    }
}

/// How long a new run may take to take the host over from its previous run
/// and move the records onto its lease: a few requests, and a listing or an
/// engine that does not answer (the records are kept alive meanwhile).
const TAKE_OVER: Duration = Duration::from_secs(3);
/// How long after something happened a standby may still write (its
/// candidate key, once, at a campaign's start): the longest retry delay
/// (5 s), a request lost in a black hole (5 s), and a margin.
const STANDBY_REASON: Duration = Duration::from_secs(15);

/// No live record is deleted by a restart (docs/host-lock.md: "One agent per host"):
/// when a holder crashes or stops and a new run starts on its machine, the
/// new run sees the old one gone and moves the records onto its own lease
/// before the old lease expires, whether or not the engine answers.
fn restart_without_deletes(run: &Run, found: &mut Vec<String>) {
    let history = &run.history;
    for effect in &run.effects {
        let Some((lease, Some(owner), _)) = effect.expired else {
            continue;
        };
        if !run.prefix.contains(&effect.key) {
            continue;
        }
        let Some(&(owner_slot, _, Some(ended))) = history.lifetimes.get(&owner) else {
            continue;
        };
        let to = effect.at;
        let successor = history.lifetimes.iter().find(|(_, (slot, start, end))| {
            (run.one_machine || *slot == owner_slot)
                && *start >= ended
                && *start + TAKE_OVER <= to
                && end.is_none_or(|end| end >= to)
                && !history.store_faults.iter().any(|(s, a, b)| {
                    (s.is_none() || *s == Some(*slot)) && overlaps((*a, *b), *start, to)
                })
        });
        let Some((successor, _)) = successor else {
            continue;
        };
        // Another agent in line (alive, or stopped with its key left to
        // expire) may rightly hold the host next; only a restart of the
        // host's one agent is this property's case.
        let alone = history.lifetimes.iter().all(|(process, (_, start, end))| {
            *process == owner
                || process == successor
                || end.is_some_and(|end| end + TTL < ended)
                || *start > to
        });
        if !alone {
            continue;
        }
        let from = ended.saturating_sub(EXPLAINED_WITHIN);
        if qualified_throughout(run, &effect.key, from, to) {
            found.push(format!(
                "{} expired with the lease {lease:x} of agent {owner}, ended at {ended:?}, at {to:?}, although agent {successor} was started again on its machine",
                effect.key
            ));
        }
    }
}

/// A standby costs etcd nothing while nothing changes: it writes (its
/// candidate key) only soon after something happened — it started, a
/// fault began or ended, the holder changed, a resync came.
fn standby_writes_nothing(run: &Run, found: &mut Vec<String>) {
    let history = &run.history;
    let mut reasons: Vec<Duration> = history.stimuli.clone();
    reasons.extend(history.engine_faults.iter().flat_map(|(a, b)| [*a, *b]));
    reasons.extend(history.store_faults.iter().flat_map(|(_, a, b)| [*a, *b]));
    reasons.extend(
        run.effects
            .iter()
            .filter(|e| e.expired.is_some() || !run.prefix.contains(&e.key))
            .map(|e| e.at),
    );
    for effect in &run.effects {
        let Actor::Agent(process) = effect.actor else {
            continue;
        };
        if effect.holder.is_none_or(|holder| holder == process) {
            continue;
        }
        let at = effect.at;
        let since = at.saturating_sub(STANDBY_REASON);
        let explained = reasons.iter().any(|r| *r >= since && *r <= at)
            || history
                .lifetimes
                .get(&process)
                .is_some_and(|(_, start, _)| {
                    let age = at.saturating_sub(*start);
                    age.as_nanos() % RESYNC.as_nanos() <= STANDBY_REASON.as_nanos()
                });
        if !explained {
            found.push(format!(
                "standby {process} wrote {} at {at:?} (r{}) while agent {:?} held the host and nothing had happened since {since:?}",
                effect.key, effect.revision, effect.holder
            ));
        }
    }
}

/// Two engines under one host IP are a conflict, never a hand-over
/// (docs/host-lock.md: One agent per host): no agent overwrites or deletes a record
/// that an agent of the other engine wrote and that agent still runs.
/// (The simulated engines show the same containers, so the records agree;
/// between real engines such a write would delete the other's records.)
fn no_hand_over_between_engines(run: &Run, found: &mut Vec<String>) {
    if !run.other_engine {
        return;
    }
    let history = &run.history;
    let life = |process: usize| history.lifetimes.get(&process).copied();
    let engine = |process: usize| life(process).map(|(slot, _, _)| engine_of(true, slot));
    // Per record key, the agent whose value it holds now.
    let mut written_by: BTreeMap<&str, usize> = BTreeMap::new();
    let mut written_at: BTreeMap<&str, Duration> = BTreeMap::new();
    let candidates = format!("{}/", lock_name(&run.prefix));
    let lock_keys_lost: Vec<Duration> = run
        .effects
        .iter()
        .filter(|e| e.key.starts_with(&candidates) && e.value.is_none())
        .filter(|e| !matches!(e.actor, Actor::Agent(_)))
        .map(|e| e.at)
        .collect();
    for effect in &run.effects {
        if !run.prefix.contains(&effect.key) {
            continue;
        }
        let Actor::Agent(writer) = effect.actor else {
            written_by.remove(effect.key.as_str());
            continue;
        };
        let at = effect.at;
        let previous = match effect.value {
            Some(_) => written_by.insert(&effect.key, writer),
            None => written_by.remove(effect.key.as_str()),
        };
        let since = written_at.insert(&effect.key, at).unwrap_or(at);
        let Some(rival) = previous else {
            continue;
        };
        let Some((slot, _, end)) = life(rival) else {
            continue;
        };
        // A rival whose store failed, or a holder whose lock key was lost
        // (its lease revoked or expired), may have lost the host to the
        // other engine's agent (docs/host-lock.md: One agent per host).
        let lost = history
            .store_faults
            .iter()
            .any(|(s, a, b)| s.is_none_or(|s| s == slot) && overlaps((*a, *b), since, at))
            || lock_keys_lost
                .iter()
                .any(|lost| *lost >= since && *lost <= at);
        let running = end.is_none_or(|end| end > at);
        if running && !lost && engine(rival) != engine(writer) {
            found.push(format!(
                "agent {writer} ({}) wrote {} at {at:?} over the record of agent {rival} ({}), which still ran",
                engine(writer).unwrap_or_default(),
                effect.key,
                engine(rival).unwrap_or_default(),
            ));
        }
    }
}

/// Whether `key` was in the truth all the time from `from` to `to`.
fn qualified_throughout(run: &Run, key: &str, from: Duration, to: Duration) -> bool {
    let truth = &run.history.truth;
    let in_force = truth.iter().rposition(|(at, _)| *at <= from).unwrap_or(0);
    truth[in_force..]
        .iter()
        .take_while(|(at, _)| *at <= to)
        .all(|(_, truth)| truth.contains_key(key))
}

/// No write storms: an agent's transactions in any window are bounded by
/// what happened just before.
fn bounded_write_rate(run: &Run, found: &mut Vec<String>) {
    let mut writes: BTreeMap<i64, Duration> = BTreeMap::new();
    for effect in &run.effects {
        if matches!(effect.actor, Actor::Agent(_)) {
            writes.insert(effect.revision, effect.at);
        }
    }
    let times: Vec<Duration> = writes.into_values().collect();
    let stimuli = &run.history.stimuli;
    for (index, &to) in times.iter().enumerate() {
        let from = to.saturating_sub(RATE_WINDOW);
        let in_window = times[..=index].iter().filter(|at| **at >= from).count();
        let explained = stimuli
            .iter()
            .filter(|at| **at >= from.saturating_sub(RATE_WINDOW) && **at <= to)
            .count();
        let allowed = FREE_WRITES + WRITES_PER_STIMULUS * explained;
        if in_window > allowed {
            found.push(format!(
                "{in_window} agent transactions in the {RATE_WINDOW:?} before {to:?}, {explained} changes to explain them"
            ));
            return;
        }
    }
}

/// The effects as lines, for a failure report.
pub fn describe(effects: &[Effect]) -> String {
    effects
        .iter()
        .map(|e| {
            format!(
                "{:>8} {:?} r{} {} {}",
                e.at.as_millis(),
                e.actor,
                e.revision,
                if e.value.is_some() { "put" } else { "del" },
                e.key
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
