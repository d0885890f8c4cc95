//! Scripted schedules with two engines under one host IP (docs/host-lock.md: One agent
//! per host): a conflict, never a hand-over; found by the simulator, each
//! pinned here.

use std::time::Duration;

use super::cluster::Actor;
use super::properties::{describe, violations};
use super::run::{run, Run, TTL};
use super::schedule::{
    at, Action, ContainerOp, Foreign, Schedule, Step, StoreFault, AGENT_SLOTS, CONTAINERS,
};

/// The last agent slot follows the other engine; one machine each.
fn two_engines(steps: Vec<Step>) -> Schedule {
    Schedule {
        running: vec![false; CONTAINERS],
        require_healthy: false,
        records_on_lease: true,
        one_machine: false,
        other_engine: true,
        jitter_seed: 0,
        steps,
    }
}

fn assert_good(run: &Run) {
    let found = violations(run);
    assert!(
        found.is_empty(),
        "{}\n{}",
        found.join("\n"),
        describe(&run.effects)
    );
}

/// A take-over removed the previous run's key and campaigned in a second
/// request: with a slow store between the two, the other engine's agent
/// found the lock free and took the host over the engine's live records.
/// The take-over now puts our key in the same transaction.
#[test]
fn a_take_over_never_leaves_the_lock_to_the_other_engine() {
    let slow = StoreFault::Slow {
        agent: 1,
        delay: Duration::from_millis(1_727),
    };
    let schedule = two_engines(vec![
        at(
            0,
            Action::Store {
                fault: slow,
                lasting: Duration::from_millis(17_396),
            },
        ),
        at(0, Action::StartAgent(1)),
        at(
            9_423,
            Action::Container {
                index: 0,
                op: ContainerOp::Start,
            },
        ),
        at(81, Action::CrashRestart(2)),
    ]);
    assert_good(&run(&schedule));
}

/// The engine's holder stops for good while the other engine's agent is in
/// conflict: once the holder's key has expired with its lease, the other
/// agent takes the host within its 10 s look, not at its next resync.
#[test]
fn a_conflict_ends_soon_after_the_other_engines_holder_is_gone() {
    let schedule = two_engines(vec![
        at(1_000, Action::StartAgent(2)),
        at(
            1_000,
            Action::Container {
                index: 0,
                op: ContainerOp::Start,
            },
        ),
        at(1_000, Action::StopAgent(0)),
        // Nothing else for a while: no run of the engine is started again
        // before the end of the schedule.
        at(30_000, Action::Foreign(Foreign::Neighbour)),
    ]);
    let run = run(&schedule);
    let stopped = Duration::from_secs(3);
    let clone_wrote = run
        .effects
        .iter()
        .filter(|e| run.prefix.contains(&e.key))
        .find(|e| match e.actor {
            Actor::Agent(process) => run
                .history
                .lifetimes
                .get(&process)
                .is_some_and(|(slot, _, _)| *slot == AGENT_SLOTS - 1),
            _ => false,
        })
        .map(|e| e.at);
    assert!(
        clone_wrote.is_some_and(|at| at <= stopped + TTL + Duration::from_secs(11)),
        "{clone_wrote:?}\n{}",
        describe(&run.effects)
    );
}
