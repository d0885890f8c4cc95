//! Prefixes larger than a gRPC message (4 MiB by default): the agent reads
//! its host prefix in pages, so that more than 4 MiB of junk under it — 20
//! values of 1 MiB, or 20,000 small keys — is deleted at start-up and the
//! agent gets ready and handles events; its watch survives a range deletion
//! whose events exceed its decoding limit; and `list` prints every record
//! of more than 4 MiB of records of several hosts, as a table and as JSON.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::OnceLock;

use etcd_client::{Client, GetOptions, Txn, TxnOp};
use serde_json::Value;

use common::*;

/// etcd's default `--max-txn-ops`: the junk goes in with as few requests.
const PUTS_PER_TXN: usize = 128;
/// Below etcd's default `--max-request-bytes` (1.5 MiB).
const BYTES_PER_TXN: usize = 1024 * 1024;
/// More than the 4 MiB a gRPC client decodes by default.
const OVER_A_MESSAGE: usize = 5 * 1024 * 1024;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

fn connect(endpoint: &str) -> Client {
    runtime()
        .block_on(Client::connect([endpoint], None))
        .unwrap_or_else(|e| panic!("etcd client for {endpoint}: {e}"))
}

/// Writes `entries` in transactions of at most [`PUTS_PER_TXN`] puts and
/// [`BYTES_PER_TXN`] bytes.
fn put_all(endpoint: &str, entries: &[(String, Vec<u8>)]) {
    let mut client = connect(endpoint);
    let mut batch: Vec<TxnOp> = Vec::new();
    let mut bytes = 0;
    let mut flush = |batch: &mut Vec<TxnOp>| {
        if !batch.is_empty() {
            let txn = Txn::new().and_then(std::mem::take(batch));
            runtime()
                .block_on(client.txn(txn))
                .unwrap_or_else(|e| panic!("etcd txn: {e}"));
        }
    };
    for (key, value) in entries {
        if batch.len() == PUTS_PER_TXN || bytes + key.len() + value.len() > BYTES_PER_TXN {
            flush(&mut batch);
            bytes = 0;
        }
        bytes += key.len() + value.len();
        batch.push(TxnOp::put(key.as_str(), value.as_slice(), None));
    }
    flush(&mut batch);
}

/// Every key and value under `prefix`, read in one response that may be as
/// large as 64 MiB: the test's own view, independent of the agent's paging.
fn read_all(endpoint: &str, prefix: &str) -> BTreeMap<String, String> {
    let mut kv = connect(endpoint)
        .kv_client()
        .max_decoding_message_size(64 * 1024 * 1024);
    let response = runtime()
        .block_on(kv.get(prefix, Some(GetOptions::new().with_prefix())))
        .unwrap_or_else(|e| panic!("etcd get {prefix}: {e}"));
    response
        .kvs()
        .iter()
        .map(|kv| {
            let key = kv.key_str().expect("utf-8 key").to_owned();
            (key, String::from_utf8_lossy(kv.value()).into_owned())
        })
        .collect()
}

/// `count` keys under `{host prefix}junk:latest/` (shaped like the records of
/// containers that are gone) with values of `value_len` bytes.
fn junk(env: &TestEnv, count: usize, value_len: usize) -> Vec<(String, Vec<u8>)> {
    (0..count)
        .map(|i| {
            let key = format!("{}junk:latest/{i:064x}", env.host_prefix());
            (key, vec![b'x'; value_len])
        })
        .collect()
}

fn total_bytes(entries: &[(String, Vec<u8>)]) -> usize {
    entries.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// The agent, with debug logs of its own, so that a request that failed
/// once and then succeeded shows too.
fn start_agent(env: &TestEnv) -> Agent {
    let owned = env.agent_args();
    let args: Vec<&str> = owned.iter().map(String::as_str).collect();
    let mut agent = Agent::spawn(&args, &[("RUST_LOG", "docker_etcd_register=debug")]);
    agent.wait_ready();
    agent
}

/// Junk under the host prefix before the agent starts: it gets ready, the
/// junk is gone, the running container is registered, and so is one that
/// starts afterwards; etcd never failed a request of the agent.
fn agent_clears_junk(env: &TestEnv, junk: &[(String, Vec<u8>)]) -> Agent {
    assert!(total_bytes(junk) > OVER_A_MESSAGE);
    let running = env.containers.run(&["-p", "80", IMAGE, "sleep", "600"]);
    put_all(&env.endpoint(), junk);

    let mut agent = start_agent(env);
    let endpoint = env.endpoint();
    let ok = wait_until(REACT, || {
        read_all(&endpoint, &env.host_prefix()) == env.expected_now()
    });
    assert!(
        ok,
        "the host prefix did not become exactly the running container; keys left: {}",
        read_all(&endpoint, &env.host_prefix()).len()
    );
    assert!(env.records().contains_key(&env.key(IMAGE, &running)));

    let started = env.containers.run(&["-p", "80", IMAGE, "sleep", "600"]);
    env.wait_key(REACT, &env.key(IMAGE, &started));
    env.wait_records(REACT, &env.expected_now());
    agent.assert_running();
    assert_eq!(
        agent.count_log(&["request failed"]),
        0,
        "{:#?}",
        agent.lines()
    );
    assert!(agent.warnings().is_empty(), "{:#?}", agent.warnings());
    agent
}

/// 80 MiB in all, in values of 4 MiB (which etcd takes with a
/// `--max-request-bytes` of 5 MiB): the first page (32 keys) exceeds the
/// agent's decoding limit of 64 MiB and is asked for again with fewer keys.
#[test]
fn values_of_several_mebibytes_under_the_host_prefix_are_cleared() {
    let etcd = Etcd::start_with_flags(&["--max-request-bytes", "5242880"]);
    let env = TestEnv::with_etcd("large-values", etcd);
    let agent = agent_clears_junk(&env, &junk(&env, 20, 4 * 1024 * 1024));
    assert!(agent.count_log(&["page too large"]) > 0);
}

#[test]
fn twenty_thousand_small_keys_under_the_host_prefix_are_cleared() {
    let env = TestEnv::new("many-keys");
    agent_clears_junk(&env, &junk(&env, 20_000, 300));
}

fn signal(agent: &Agent, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(agent.pid().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {}", agent.pid());
}

/// A range deletion is one revision whose events all go to the watch at
/// once: with 2,200 keys of 32 KiB that is 70 MiB of events, more than even
/// the agent's decoding limit of 64 MiB, which its watch takes in fragments.
/// (Long keys rather than many: the agent logs a line per foreign change.) The agent is stopped meanwhile, so
/// that the keys are all there to be deleted at once (it would otherwise
/// delete them itself as they come), and its watch falls behind by every
/// revision of the puts, which etcd then sends in one batch too.
#[test]
fn the_watch_survives_more_than_a_message_of_events() {
    let env = TestEnv::new("large-watch");
    let id = env.containers.run(&["-p", "80", IMAGE, "sleep", "600"]);
    let mut agent = start_agent(&env);
    env.wait_key(REACT, &env.key(IMAGE, &id));

    let long_keys: Vec<(String, Vec<u8>)> = (0..2_200)
        .map(|i| {
            let key = format!("{}junk:latest/{i:032768}", env.host_prefix());
            (key, b"x".to_vec())
        })
        .collect();
    assert!(total_bytes(&long_keys) > 65 * 1024 * 1024);
    signal(&agent, "STOP");
    put_all(&env.endpoint(), &long_keys);
    let junk_prefix = format!("{}junk:latest/", env.host_prefix());
    etcdctl(&env.endpoint(), &["del", "--prefix", &junk_prefix]);
    signal(&agent, "CONT");

    // The watch is alive behind the burst: a foreign delete of a record
    // (which only the watch reports; no resync runs) is repaired.
    let key = env.key(IMAGE, &id);
    let value = env.wait_key(REACT, &key).value;
    assert_eq!(delete(&env.endpoint(), &key), 1);
    let repaired = wait_until(SLOW, || {
        env.records().get(&key).is_some_and(|r| r.value == value)
    });
    assert!(
        repaired,
        "the foreign delete behind the burst was not repaired"
    );
    let started = env.containers.run(&["-p", "80", IMAGE, "sleep", "600"]);
    env.wait_key(REACT, &env.key(IMAGE, &started));
    env.wait_records(REACT, &env.expected_now());
    agent.assert_running();
    assert_eq!(
        agent.count_log(&["request failed"]),
        0,
        "{:#?}",
        agent.warnings()
    );
    assert!(agent.warnings().is_empty(), "{:#?}", agent.warnings());
}

/// `list` over 9,000 records (three bindings each) of three hosts, more
/// than 5 MiB, plus 30 keys that are no records: every row is printed, the
/// first ten foreign keys are named on stderr and the rest counted.
#[test]
fn list_prints_every_record_of_more_than_a_message() {
    let etcd = Etcd::start();
    let hosts = ["10.1.0.1", "10.1.0.2", "10.1.0.10"];
    let image = "registry.example:5000::team::app:1.2";
    let mut records = Vec::new();
    for host in hosts {
        for i in 0..3_000 {
            let id = format!("{i:064x}");
            let bindings = [
                (host, "30001", "80", "tcp"),
                (host, "30002", "443", "tcp"),
                (host, "30003", "53", "udp"),
            ];
            let value = expected_value(&id, image, &bindings);
            records.push((record_key(host, image, &id), value.into_bytes()));
        }
    }
    assert!(total_bytes(&records) > OVER_A_MESSAGE);
    let foreign: Vec<(String, Vec<u8>)> = (0..30)
        .map(|i| (format!("/registered/10.1.0.1/stray{i:02}"), b"x".to_vec()))
        .collect();
    put_all(&etcd.endpoint(), &records);
    put_all(&etcd.endpoint(), &foreign);

    let out = list(&etcd.endpoint(), &["--json"]);
    let rows: Value = serde_json::from_slice(&out.stdout).expect("list --json prints JSON");
    let rows = rows.as_array().expect("a JSON array");
    assert_eq!(rows.len(), 3 * records.len());
    let listed: BTreeSet<&str> = rows.iter().map(|r| r["key"].as_str().unwrap()).collect();
    let written: BTreeSet<&str> = records.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(listed, written);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let named = stderr
        .lines()
        .filter(|l| l.contains("not a record"))
        .count();
    assert_eq!(named, 10, "{stderr}");
    assert!(stderr.contains("more=20"), "{stderr}");

    let out = list(&etcd.endpoint(), &[]);
    let table = String::from_utf8(out.stdout).expect("utf-8 table");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 1 + 3 * records.len());
    assert!(lines[0].starts_with("HOST"));
    for host in hosts {
        let of_host = lines
            .iter()
            .filter(|l| l.starts_with(&format!("{host} ")))
            .count();
        assert_eq!(of_host, 3 * 3_000, "rows of {host}");
    }
    assert!(lines[1].contains("10.1.0.1 ") && lines[1].contains("30001 -> 80/tcp"));
}
