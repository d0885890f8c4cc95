//! A real restart of Podman's API service (run on its own, after the other
//! suites: it takes the socket away from every Podman test): the
//! `podman system service` process is terminated, its socket goes away, and
//! it is started again with `scripts/setup-podman.sh`. Podman's containers
//! outlive the service; meanwhile one is stopped and one started with the
//! `podman` CLI, which works without the service. The agent never exits,
//! ends with exactly the running containers' records, and registers and
//! deregisters from events afterwards. Only the service process is killed,
//! never dockerd.

mod common;

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// The service exits at once on SIGTERM; slack for a loaded machine.
const SERVICE_EXIT: Duration = Duration::from_secs(30);
/// After the service is back: reconnect backoff (≤ 5 s) and re-list, with slack.
const CONVERGE: Duration = Duration::from_secs(20);

/// Whether something accepts connections on Podman's API socket.
fn socket_accepts() -> bool {
    UnixStream::connect(PODMAN_SOCKET).is_ok()
}

/// The ids of the `podman system service` processes serving
/// [`PODMAN_SOCKET`], from their command lines (`pidof podman` would also
/// name every `podman` CLI of other tests).
fn service_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let is_service = args.first()?.ends_with("podman")
                && args.iter().any(|a| a == "system")
                && args.iter().any(|a| a == "service")
                && args.iter().any(|a| a.ends_with(PODMAN_SOCKET));
            is_service.then_some(pid)
        })
        .collect()
}

#[test]
fn podman_service_restart() {
    let env = TestEnv::on(Engine::Podman, "podman_restart");
    let service = Restarter {
        script: "setup-podman.sh",
        answers: socket_accepts,
    };
    let mut agent = env.start_agent(&[]);
    let stopped_while_down = env.run_loopback_80();
    let survivor = env.run_loopback_80();
    let before = env.expected_now();
    assert_eq!(before.len(), 2);
    env.wait_records(REACT, &before);

    let pids = service_pids();
    assert!(
        !pids.is_empty(),
        "no podman system service on {PODMAN_SOCKET}"
    );
    let killed = Instant::now();
    terminate(&pids, "podman system service", SERVICE_EXIT);
    assert!(
        !socket_accepts(),
        "the socket still answers without the service"
    );
    eprintln!(
        "podman system service exited {:?} after SIGTERM; socket file left: {}",
        killed.elapsed(),
        Path::new(PODMAN_SOCKET).exists()
    );

    // Without the service the CLI still works: changes the agent can only
    // learn from the re-listing once the socket is back.
    env.containers.stop(&stopped_while_down);
    let started_while_down = env.run_loopback_80();
    agent.assert_running();

    service.restart();
    let back = Instant::now();
    eprintln!(
        "service back {:?} after it was terminated",
        killed.elapsed()
    );
    assert!(env.engine.is_running(&survivor), "the survivor stopped");
    let expected = env.expected_now();
    assert_eq!(
        expected.len(),
        2,
        "survivor and the late one: {expected:#?}"
    );
    assert!(expected.contains_key(&env.loopback_80_record(&started_while_down).0));
    env.wait_records(CONVERGE, &expected);
    eprintln!("exact {:?} after the service was back", back.elapsed());

    // Events are followed again: a start registers, a removal deregisters.
    let after = env.run_loopback_80();
    let mut expected = env.expected_now();
    assert_eq!(
        expected.len(),
        3,
        "survivor, late one, after: {expected:#?}"
    );
    env.wait_records(REACT, &expected);
    env.containers.rm_f(&survivor);
    expected.remove(&env.key(env.record_image(), &survivor));
    env.wait_records(REACT, &expected);
    assert!(expected.contains_key(&env.key(env.record_image(), &after)));
    agent.assert_running();

    let stderr = agent.lines().join("\n");
    let down = agent.count_log(&["dependency unavailable", "dependency=\"docker\""]);
    let up = agent.count_log(&["dependency back", "dependency=\"docker\""]);
    assert!(
        down >= 1 && down == up,
        "want the engine outage logged and its end too ({down} down, {up} back); stderr:\n{stderr}"
    );
}
