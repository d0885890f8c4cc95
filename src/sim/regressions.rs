//! Scripted schedules: paths the generated ones reach only by chance, and
//! the bugs found so far, each pinned by a test of its own that says it is
//! fixed.

use std::time::Duration;

use super::properties::violations;
use super::run::run;
use super::schedule::{Action, Schedule, CONTAINERS};

/// A compaction between the agent's read and its watch: the watch fails,
/// and the agent reads and watches again.
#[test]
fn a_watch_from_a_compacted_revision_is_created_again() {
    use super::schedule::{Foreign, Step, StoreFault};
    let at = |millis, action| Step {
        after: Duration::from_millis(millis),
        action,
    };
    let slow = StoreFault::Slow {
        agent: 0,
        delay: Duration::from_secs(4),
    };
    let schedule = Schedule {
        running: vec![true; CONTAINERS],
        require_healthy: false,
        records_on_lease: true,
        one_machine: false,
        other_engine: false,
        jitter_seed: 5,
        steps: vec![
            at(
                1_000,
                Action::Store {
                    fault: slow,
                    lasting: Duration::from_secs(30),
                },
            ),
            at(
                1_000,
                Action::Store {
                    fault: StoreFault::CancelWatches,
                    lasting: Duration::ZERO,
                },
            ),
            at(3_000, Action::Foreign(Foreign::Junk)),
            at(
                500,
                Action::Store {
                    fault: StoreFault::Compact,
                    lasting: Duration::ZERO,
                },
            ),
        ],
    };
    let run = run(&schedule);
    assert!(
        run.trace.iter().any(|line| line.ends_with("(compacted)")),
        "{:#?}",
        run.trace
    );
    assert_eq!(violations(&run), Vec::<String>::new());
}

/// Someone writes under the key of a running container whose record etcd
/// refuses as too large (an older agent, a script, the container's earlier
/// smaller record): the agent deletes it, so that load balancers never read
/// a stale value. (Found by the simulator.)
#[test]
fn a_record_too_large_leaves_no_stale_value() {
    use super::schedule::{Foreign, Step};
    let wide = 6; // engine::Kind::Wide
    let mut running = vec![false; CONTAINERS];
    running[wide] = true;
    let schedule = Schedule {
        running,
        require_healthy: false,
        records_on_lease: true,
        one_machine: false,
        other_engine: false,
        jitter_seed: 9,
        steps: vec![Step {
            after: Duration::from_secs(1),
            action: Action::Foreign(Foreign::Overwrite { container: wide }),
        }],
    };
    let run = run(&schedule);
    assert_eq!(run.final_too_large.len(), 1);
    let key = run
        .final_too_large
        .first()
        .expect("the wide container's key");
    assert_eq!(run.final_prefix.get(key), None, "a stale value stayed");
    assert_eq!(violations(&run), Vec::<String>::new());
}

/// The same schedule, with agents stopped (SIGTERM) in it, run several
/// times, replays exactly, the hand-over included. (Found by the simulator:
/// the selects against shutdown were not `biased`.)
#[test]
fn a_stopping_agent_is_reproducible() {
    use super::schedule::Step;
    use std::collections::BTreeSet;
    let schedule = Schedule {
        running: vec![true; CONTAINERS],
        require_healthy: false,
        records_on_lease: true,
        one_machine: false,
        other_engine: false,
        jitter_seed: 3,
        steps: vec![
            Step {
                after: Duration::from_secs(1),
                action: Action::StartAgent(1),
            },
            // The holder resigns and the standby, told to stop at the same
            // instant, may or may not take the host first.
            Step {
                after: Duration::from_secs(2),
                action: Action::StopAgent(0),
            },
            Step {
                after: Duration::ZERO,
                action: Action::StopAgent(1),
            },
        ],
    };
    let traces: BTreeSet<Vec<String>> = (0..16).map(|_| run(&schedule).trace).collect();
    assert_eq!(traces.len(), 1, "one trace, up to the end");
}

/// A holder that stops (SIGTERM) resigns: the standby takes over at once
/// and moves every record onto its lease in place; no record is deleted,
/// not even when the old lease expires.
#[test]
fn a_stopped_holder_hands_over_without_a_delete() {
    use super::schedule::Step;
    let schedule = Schedule {
        running: vec![true; CONTAINERS],
        require_healthy: false,
        records_on_lease: true,
        one_machine: false,
        other_engine: false,
        jitter_seed: 4,
        steps: vec![
            Step {
                after: Duration::from_secs(1),
                action: Action::StartAgent(1),
            },
            Step {
                after: Duration::from_secs(5),
                action: Action::StopAgent(0),
            },
            Step {
                after: Duration::from_secs(30),
                action: Action::Container {
                    index: 0,
                    op: super::schedule::ContainerOp::Die,
                },
            },
        ],
    };
    let run = run(&schedule);
    assert_eq!(violations(&run), Vec::<String>::new());
    assert!(run
        .trace
        .iter()
        .any(|l| l.contains("Agent(1) won the lock")));
    let deletes: Vec<_> = run
        .effects
        .iter()
        .filter(|e| e.value.is_none() && run.prefix.contains(&e.key))
        .filter(|e| e.at < Duration::from_secs(36))
        .collect();
    assert!(deletes.is_empty(), "{deletes:#?}");
}

/// An agent whose lease ended without its connection failing (an operator
/// revoked it, or it expired while the keep-alive was late) learns it only
/// at its next keep-alive, up to a third of the TTL later; meanwhile a
/// standby has taken the host. Its writes are fenced by its lock key, so
/// etcd refuses them: one writer at a time. (Found by the simulator.)
#[test]
fn a_stale_holder_never_writes_beside_the_new_one() {
    use super::cluster::Actor;
    use super::schedule::{ContainerOp, Step, StoreFault};
    let mut running = vec![true; CONTAINERS];
    running[4] = false; // a second web container, started below
    let at = |millis, action| Step {
        after: Duration::from_millis(millis),
        action,
    };
    let schedule = Schedule {
        running,
        require_healthy: false,
        records_on_lease: false,
        one_machine: false,
        other_engine: false,
        jitter_seed: 2,
        steps: vec![
            at(
                2_000,
                Action::Store {
                    fault: StoreFault::ExpireLease { agent: 0 },
                    lasting: Duration::ZERO,
                },
            ),
            at(500, Action::StartAgent(1)),
            at(
                100,
                Action::Container {
                    index: 4,
                    op: ContainerOp::Start,
                },
            ),
        ],
    };
    let run = run(&schedule);
    let beside_the_holder: Vec<_> = run
        .effects
        .iter()
        .filter(|e| e.actor == Actor::Agent(0) && run.prefix.contains(&e.key))
        .filter(|e| e.holder == Some(1))
        .collect();
    assert!(beside_the_holder.is_empty(), "{beside_the_holder:#?}");
    assert_eq!(violations(&run), Vec::<String>::new());
}

/// A holder that dies: its lease expires after the TTL, taking its records
/// and the lock; the standby takes over and every live record is back
/// within TTL + 2 s of the death (docs/host-lock.md: "One agent per host"). The second
/// agent follows the same engine from another "machine" (the simulated
/// agents share no process table): it is a new run, so it takes the host at
/// once, and the first one stands by; then the new holder dies.
#[test]
fn a_dead_holders_records_are_back_within_the_ttl_and_2_s() {
    use super::cluster::Actor;
    use super::run::TTL;
    use super::schedule::Step;
    let schedule = Schedule {
        running: vec![true; CONTAINERS],
        require_healthy: false,
        records_on_lease: true,
        one_machine: false,
        other_engine: false,
        jitter_seed: 6,
        steps: vec![
            Step {
                after: Duration::from_secs(1),
                action: Action::StartAgent(1),
            },
            Step {
                after: Duration::from_millis(3_300),
                action: Action::KillAgent(1),
            },
        ],
    };
    let run = run(&schedule);
    assert_eq!(violations(&run), Vec::<String>::new());
    let death = Duration::from_millis(4_300);
    for key in run.final_truth.keys() {
        let back = run
            .effects
            .iter()
            .filter(|e| e.key == *key && e.actor == Actor::Agent(0) && e.at > death)
            .map(|e| e.at)
            .next();
        let back = back.unwrap_or_else(|| panic!("{key} never back"));
        assert!(
            back <= death + TTL + Duration::from_secs(2),
            "{key} back only at {back:?}"
        );
    }
}

/// An agent starts (a restart, an upgrade, a standby taking over) while one
/// running container's inspect hangs: that container keeps the record etcd
/// holds for it, though the new agent never knew it. (Found by the
/// simulator.)
#[test]
fn a_fresh_agent_keeps_the_record_of_a_container_it_cannot_inspect() {
    use super::cluster::Actor;
    use super::engine::container_id;
    use super::schedule::{EngineFault, Foreign, Step};
    let pair = 1;
    let mut running = vec![false; CONTAINERS];
    running[pair] = true;
    let hang = EngineFault::SlowInspect {
        container: pair,
        delay: Duration::from_secs(10),
    };
    let schedule = Schedule {
        running,
        require_healthy: false,
        records_on_lease: false,
        one_machine: false,
        other_engine: false,
        jitter_seed: 0,
        steps: vec![
            Step {
                after: Duration::from_millis(1),
                action: Action::StopAgent(0),
            },
            Step {
                after: Duration::ZERO,
                action: Action::Engine {
                    fault: hang,
                    lasting: Duration::from_secs(14),
                },
            },
            Step {
                after: Duration::ZERO,
                action: Action::StartAgent(0),
            },
            // The schedule goes on a little (faults are healed at its end),
            // so that the hang is in force when the new agent inspects.
            Step {
                after: Duration::from_millis(20),
                action: Action::Foreign(Foreign::Neighbour),
            },
        ],
    };
    let run = run(&schedule);
    let id = container_id(pair);
    let deleted_by_the_new_agent = run
        .effects
        .iter()
        .any(|e| e.actor == Actor::Agent(1) && e.value.is_none() && e.key.ends_with(&id));
    assert!(
        !deleted_by_the_new_agent,
        "the new agent deleted the record"
    );
    assert_eq!(violations(&run), Vec::<String>::new());
}

/// Someone floods our prefix with large keys while a container whose record
/// is too large runs: the agent reads the prefix in pages (some refused as
/// too large for the client, then asked for in fewer keys) and removes the
/// flood in a few transactions. A batch refused as too large used to be
/// split into one transaction per operation, a storm of 40 here. (Found by
/// the simulator.)
#[test]
fn a_flood_beside_a_record_too_large_is_removed_without_a_storm() {
    use super::schedule::{Foreign, Step};
    let mut running = vec![true; CONTAINERS];
    running[3] = false;
    let schedule = Schedule {
        running,
        require_healthy: false,
        records_on_lease: true,
        one_machine: false,
        other_engine: false,
        jitter_seed: 3,
        steps: vec![Step {
            after: Duration::ZERO,
            action: Action::Foreign(Foreign::Flood),
        }],
    };
    let run = run(&schedule);
    let pages = run
        .trace
        .iter()
        .filter(|line| line.contains("observed"))
        .count();
    assert!(pages > 0, "{:#?}", run.trace);
    assert!(
        run.trace
            .iter()
            .any(|line| line.contains("observed") && !line.contains("in 1 requests")),
        "the flood took more than one page: {:#?}",
        run.trace
    );
    assert_eq!(violations(&run), Vec::<String>::new());
}
