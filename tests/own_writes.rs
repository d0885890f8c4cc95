//! Which of the changes under its prefix an agent takes for its own: only
//! revisions that its own transactions created. A transaction that changes
//! nothing (a delete of a key someone else already deleted) answers with the
//! current revision, which is someone else's write, and must not hide that
//! write from the repair (docs/faults.md: Faults). And the repair of someone else's
//! writes, held back while they keep coming, never holds back the agent's
//! own writes for the containers it follows.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::etcd_faults::overwrite_repeatedly;
use common::*;
use docker_etcd_register::config::EtcdSecurity;
use docker_etcd_register::etcd::Etcd as EtcdAdapter;
use docker_etcd_register::plan::Operation;
use docker_etcd_register::record::HostPrefix;
use rig::{delete, revision, runtime};

#[test]
fn a_transaction_that_changes_nothing_reports_no_revision_of_its_own() {
    let etcd = rig::Etcd::start();
    let endpoint = etcd.endpoint();
    let host = HostPrefix::new("/registered", "10.0.0.5".parse().unwrap());
    let key = format!("{}busybox:latest/{}", host.as_str(), "a".repeat(64));
    let mut adapter = EtcdAdapter::new(
        std::slice::from_ref(&endpoint),
        EtcdSecurity::default(),
        host,
        "unix:///var/run/docker.sock".to_owned(),
    );
    let put = Operation::Put {
        key: key.clone(),
        value: "{}".to_owned(),
    };
    let written = runtime().block_on(adapter.apply(&[put], 0, None)).unwrap();
    assert_eq!(
        written.revisions,
        [revision(&endpoint)],
        "a put creates a revision"
    );

    assert_eq!(delete(&endpoint, &key), 1);
    let foreign = revision(&endpoint);
    let gone = Operation::Delete { key: key.clone() };
    let applied = runtime().block_on(adapter.apply(&[gone], 0, None)).unwrap();
    assert_eq!(applied.done.len(), 1, "the delete is confirmed");
    assert_eq!(revision(&endpoint), foreign, "it created no revision");
    assert!(
        applied.revisions.is_empty(),
        "the foreign delete at r{foreign} is not ours: {:?}",
        applied.revisions
    );
}

/// A drained record goes, and a new container is registered, within this of
/// the engine's word, however busy someone else keeps the prefix.
const OWN_WRITE: Duration = Duration::from_secs(1);

#[test]
fn a_foreign_writer_beside_the_agent_never_delays_its_own_writes() {
    let env = TestEnv::new("own_beside_storm");
    let agent = env.start_agent(&[]);
    let run = || {
        env.containers
            .run(&["-p", "127.0.0.1::80", "busybox", "sleep", "1000"])
    };
    let drained = run();
    env.wait_records(REACT, &env.expected_now());
    let junk = format!("{}junk:latest/{}", env.host_prefix(), "f".repeat(64));
    let endpoint = env.endpoint();
    thread::scope(|scope| {
        scope.spawn(|| {
            overwrite_repeatedly(
                &endpoint,
                &junk,
                Duration::from_millis(500),
                Duration::from_secs(9),
            )
        });
        // By now the repairs of the junk are held back by seconds.
        thread::sleep(Duration::from_secs(4));
        let killed = Instant::now();
        env.containers.kill(&drained);
        env.wait_gone(OWN_WRITE, &env.key(IMAGE, &drained));
        eprintln!("drained record gone {:?} after the kill", killed.elapsed());

        let started = Instant::now();
        let new = run();
        env.wait_key(OWN_WRITE, &env.key(IMAGE, &new));
        eprintln!(
            "new record {:?} after `docker run` returned",
            started.elapsed()
        );
    });
    assert!(
        agent
            .warnings()
            .iter()
            .any(|l| l.contains("keeps being changed by someone else")),
        "the repairs of the junk were never held back; stderr:\n{}",
        agent.lines().join("\n")
    );
    env.wait_records(Duration::from_secs(12), &env.expected_now());
}
