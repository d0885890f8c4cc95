//! The simulator's tests: properties on thousands of generated schedules
//! (each failure shrinks to a small schedule), a soak from a seed, the
//! reproducibility of a seed, and the regressions found so far.

use proptest::strategy::Strategy;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, RngSeed, TestCaseError, TestRng, TestRunner};

use super::properties::{describe, violations};
use super::run::run;
use super::schedule::{schedule, Schedule, CONTAINERS};

/// Steps per generated schedule: short, so that 10,000 run in `cargo test`.
const MAX_STEPS: usize = 24;

/// Cases per property test; four of them run by default (10,000 in all).
fn cases() -> u32 {
    std::env::var("SIM_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(2_500)
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Runs `schedule` and fails with every violation and the store's effects.
fn check(schedule: &Schedule) -> Result<(), TestCaseError> {
    let run = run(schedule);
    let found = violations(&run);
    if found.is_empty() {
        return Ok(());
    }
    Err(TestCaseError::fail(format!(
        "{}\n--- what the store saw:\n{}",
        found.join("\n"),
        describe(&run.effects)
    )))
}

/// The schedule that seed `seed` generates (what the soak runs).
fn schedule_of_seed(seed: u64) -> Schedule {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    schedule(MAX_STEPS)
        .new_tree(&mut runner)
        .expect("a schedule")
        .current()
}

/// The seed of property test `part`: fixed, so that the suite checks the
/// same 10,000 schedules every time and a failure replays (docs/testing.md: Tests);
/// `SIM_EXPLORE=<seed>` explores others, `SIM_EXPLORE=random` new ones at
/// every run.
fn rng_seed(part: u64) -> RngSeed {
    match std::env::var("SIM_EXPLORE").ok().as_deref() {
        None => RngSeed::Fixed(part),
        Some("random") => RngSeed::Random,
        Some(seed) => RngSeed::Fixed(seed.parse::<u64>().unwrap_or(0).wrapping_mul(4) + part),
    }
}

/// Checks `cases()` generated schedules; a failure shrinks to a small one.
fn explore(part: u64) {
    let config = Config {
        cases: cases(),
        failure_persistence: None,
        max_shrink_iters: 4_096,
        rng_seed: rng_seed(part),
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    if let Err(error) = runner.run(&schedule(MAX_STEPS), |plan| check(&plan)) {
        panic!("{error}");
    }
}

#[test]
fn schedules_keep_the_properties_1() {
    explore(1);
}

#[test]
fn schedules_keep_the_properties_2() {
    explore(2);
}

#[test]
fn schedules_keep_the_properties_3() {
    explore(3);
}

#[test]
fn schedules_keep_the_properties_4() {
    explore(4);
}

/// `SIM_SEED=<first seed> SIM_SCHEDULES=<how many> cargo test --release
/// --lib sim::tests::soak`: the schedules of consecutive seeds; a failure
/// names the seed that reproduces it.
#[test]
fn soak() {
    let first = env_number("SIM_SEED", 1);
    let count = env_number("SIM_SCHEDULES", 50);
    for seed in first..first.saturating_add(count) {
        let schedule = schedule_of_seed(seed);
        let run = run(&schedule);
        let found = violations(&run);
        assert!(
            found.is_empty(),
            "SIM_SEED={seed} SIM_SCHEDULES=1 reproduces this:\n{}\n{schedule:#?}\n--- what the store saw:\n{}",
            found.join("\n"),
            describe(&run.effects)
        );
    }
}

#[test]
fn a_seed_replays_exactly() {
    for seed in 1..=12 {
        let schedule = schedule_of_seed(seed);
        assert_eq!(schedule, schedule_of_seed(seed), "the same schedule");
        let first = run(&schedule);
        let second = run(&schedule);
        assert!(first.trace.len() > 5, "{:?}", first.trace);
        assert_eq!(first.trace, second.trace, "seed {seed}");
    }
}

#[test]
fn a_quiet_host_is_registered() {
    let schedule = Schedule {
        running: vec![true; CONTAINERS],
        require_healthy: false,
        records_on_lease: true,
        one_machine: false,
        other_engine: false,
        jitter_seed: 1,
        steps: Vec::new(),
    };
    let run = run(&schedule);
    assert!(violations(&run).is_empty(), "{:?}", violations(&run));
    // Web, Pair, Checked and the second Web publish; Silent, Ignored do
    // not, and Wide is too large for the store.
    assert_eq!(run.final_prefix.len(), 4, "{:?}", run.final_prefix.keys());
}

/// The generated schedules reach every path that matters: without this, a
/// fault that never bites would let the properties pass vacuously.
#[test]
fn the_faults_reach_the_agent() {
    let signs = [
        ("a lease expired", "Expiry ended lease"),
        ("a lease revoked", "Foreign ended lease"),
        ("a request failed", " failed: "),
        ("a record refused as too large", "too large"),
        ("a second agent took over", "Agent(1) won the lock"),
        ("a foreign write repaired", "Foreign r"),
    ];
    let mut seen = vec![0usize; signs.len()];
    for seed in 1..=300 {
        let run = run(&schedule_of_seed(seed));
        for (count, (_, sign)) in seen.iter_mut().zip(&signs) {
            if run.trace.iter().any(|line| line.contains(sign)) {
                *count += 1;
            }
        }
    }
    for (count, (what, _)) in seen.iter().zip(&signs) {
        eprintln!("{what}: in {count} of 300 runs");
        assert!(*count > 0, "no run had {what}");
    }
}
