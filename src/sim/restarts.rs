//! Scripted restarts of the agent while its engine does not answer (docs/host-lock.md:
//! One agent per host): the previous run's records stay alive on the new
//! run's lease, whatever else is in line for the host lock.

use std::time::Duration;

use super::properties::{describe, violations};
use super::run::{run, Run};
use super::schedule::{at, Action, EngineFault, Foreign, Schedule, Step, CONTAINERS};

/// Both agent slots on one machine, every container running.
fn on_one_machine(steps: Vec<Step>) -> Schedule {
    Schedule {
        running: vec![true; CONTAINERS],
        require_healthy: false,
        records_on_lease: true,
        one_machine: true,
        other_engine: false,
        jitter_seed: 1,
        steps,
    }
}

fn engine_down(lasting: Duration) -> Action {
    Action::Engine {
        fault: EngineFault::Down,
        lasting,
    }
}

/// The records deleted or expired between `from` and `to`.
fn losses(run: &Run, from: Duration, to: Duration) -> Vec<String> {
    run.effects
        .iter()
        .filter(|e| e.value.is_none() && run.prefix.contains(&e.key))
        .filter(|e| e.at >= from && e.at <= to)
        .map(|e| format!("{:?} {:?} {}", e.at, e.actor, e.key))
        .collect()
}

fn assert_kept(schedule: &Schedule, from: Duration, to: Duration) {
    let run = run(schedule);
    let lost = losses(&run, from, to);
    assert!(
        lost.is_empty(),
        "{lost:#?}\n{}\n{}",
        run.trace.join("\n"),
        describe(&run.effects)
    );
    let found = violations(&run);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// The holder is stopped while the engine is down and started again: it
/// kept its lock key, its next run takes over and keeps every record alive
/// for as long as the engine is down (two minutes, eight TTLs).
#[test]
fn a_restart_while_the_engine_is_down_keeps_every_record() {
    let schedule = on_one_machine(vec![
        at(3_000, engine_down(Duration::from_secs(120))),
        at(1_000, Action::StopAgent(0)),
        at(0, Action::StartAgent(0)),
        at(40_000, Action::Foreign(Foreign::Neighbour)),
    ]);
    assert_kept(&schedule, Duration::from_secs(4), Duration::from_secs(124));
}

/// A standby beside the holder was killed; its key waits for its lease.
/// The holder, stopped while the engine is down, does not resign to that
/// dead candidate: it keeps its key, and its next run takes over and keeps
/// the records alive.
#[test]
fn a_dead_standby_in_line_is_not_handed_the_host() {
    let schedule = on_one_machine(vec![
        at(1_000, Action::StartAgent(1)),
        at(2_000, Action::KillAgent(1)),
        at(500, engine_down(Duration::from_secs(120))),
        at(500, Action::StopAgent(0)),
        at(0, Action::StartAgent(0)),
        at(40_000, Action::Foreign(Foreign::Neighbour)),
    ]);
    assert_kept(&schedule, Duration::from_secs(4), Duration::from_secs(124));
}

/// A run crash-restarted on its machine while its previous run's key still
/// waits in line behind another holder (found by the simulator): the new
/// run removes that dead key, so that when the holder stops it hands the
/// host to a live standby instead of a key nobody uses until its lease
/// expires, and no record expires.
#[test]
fn a_crash_restarted_run_clears_its_dead_key_from_the_line() {
    use super::schedule::{ContainerOp, StoreFault};
    let schedule = Schedule {
        running: vec![false; CONTAINERS],
        require_healthy: false,
        records_on_lease: true,
        one_machine: false,
        other_engine: false,
        jitter_seed: 16_516_901_870,
        steps: vec![
            at(
                0,
                Action::Container {
                    index: 1,
                    op: ContainerOp::Start,
                },
            ),
            at(0, Action::CrashRestart(2)),
            at(0, Action::Foreign(Foreign::Overwrite { container: 0 })),
            at(
                0,
                Action::Store {
                    fault: StoreFault::RevokeLease { agent: 0 },
                    lasting: Duration::from_millis(100),
                },
            ),
            at(200, Action::StartAgent(1)),
            at(
                0,
                Action::Container {
                    index: 0,
                    op: ContainerOp::Start,
                },
            ),
            at(121, Action::CrashRestart(2)),
            at(145, Action::StopAgent(1)),
        ],
    };
    let run = run(&schedule);
    let found = violations(&run);
    assert!(
        found.is_empty(),
        "{}\n{}",
        found.join("\n"),
        describe(&run.effects)
    );
}
