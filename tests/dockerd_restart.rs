//! A real restart of dockerd (run on its own, after the other suites: it
//! takes the engine away from every test): the dockerd process is terminated
//! and started again with `scripts/setup.sh`. A container with
//! `--restart always` comes back (maybe on new host ports), one without stays
//! stopped, one more is started afterwards, and the agent, which talks to the
//! real socket, never exits and ends with exactly the running containers'
//! records.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Generous: dockerd waits for containers to stop before it exits.
const DOCKERD_EXIT: Duration = Duration::from_secs(90);
/// After dockerd is back: reconnect backoff (≤ 5 s) and re-list, with slack.
const CONVERGE: Duration = Duration::from_secs(20);

fn docker_answers() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn with_port(env: &TestEnv, extra: &[&str]) -> String {
    let mut args = extra.to_vec();
    args.extend(["-p", "127.0.0.1::80", "busybox", "sleep", "1000"]);
    env.containers.run(&args)
}

#[test]
fn dockerd_restart_with_restarting_and_stopped_containers() {
    let env = TestEnv::new("dockerd_restart");
    let service = Restarter {
        script: "setup.sh",
        answers: docker_answers,
    };
    let mut agent = env.start_agent(&[]);
    let always = with_port(&env, &["--restart", "always"]);
    let plain = with_port(&env, &[]);
    let before = env.expected_now();
    assert_eq!(before.len(), 2);
    env.wait_records(REACT, &before);

    // The equivalent of `pkill -x dockerd`, by process id.
    let killed = Instant::now();
    let took = terminate(&dockerd_pids(), "dockerd", DOCKERD_EXIT);
    eprintln!("dockerd exited {took:?} after SIGTERM");
    agent.assert_running();

    service.restart();
    let back = Instant::now();
    eprintln!(
        "dockerd back {:?} after it was terminated",
        killed.elapsed()
    );
    assert!(
        wait_until(SLOW, || is_running(&always)),
        "the --restart always container did not come back"
    );
    assert!(
        !is_running(&plain),
        "the container without restart policy runs"
    );
    let late = with_port(&env, &[]);

    let expected = env.expected_now();
    assert_eq!(expected.len(), 2, "always and late run: {expected:#?}");
    assert!(expected.contains_key(&env.key(IMAGE, &always)));
    assert!(expected.contains_key(&env.key(IMAGE, &late)));
    env.wait_records(CONVERGE, &expected);
    eprintln!("exact {:?} after dockerd was back", back.elapsed());
    agent.assert_running();

    let stderr = agent.lines().join("\n");
    let down = agent.count_log(&["dependency unavailable", "dependency=\"docker\""]);
    let up = agent.count_log(&["dependency back", "dependency=\"docker\""]);
    assert!(
        down >= 1 && down == up,
        "want the Docker outage logged and its end too ({down} down, {up} back); stderr:\n{stderr}"
    );
}
