//! etcd security: TLS with client-certificate authentication (an endpoint
//! without a scheme becomes `https` with `--etcd-cacert`), a server whose
//! certificate the agent does not trust (it keeps running and says so, and
//! writes nothing), etcd's user authentication with a least-privilege role
//! (registration, removal, repair of a foreign delete and
//! `--deregister-on-exit`, all within `/registered/<HOST_IP>/`), and a wrong
//! password given as file, flag or environment variable. No password ever
//! appears in the agent's stderr.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Host IP and required label of the test, `--etcd-endpoints` as given.
fn base_args(env: &TestEnv, endpoints: &str) -> Vec<String> {
    vec![
        "--host-ip".into(),
        env.host_ip.clone(),
        "--etcd-endpoints".into(),
        endpoints.into(),
        "--require-label".into(),
        env.label().to_string(),
    ]
}

fn spawn(args: &[String], envs: &[(&str, &str)]) -> Agent {
    Agent::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>(), envs)
}

/// Fails if `secret` occurs in any stderr line of the agent.
fn assert_secret_not_logged(agent: &Agent, secret: &str) {
    let leaked: Vec<String> = agent
        .lines()
        .into_iter()
        .filter(|l| l.contains(secret))
        .collect();
    assert!(
        leaked.is_empty(),
        "the password appears in the agent's stderr:\n{}",
        leaked.join("\n")
    );
}

/// A password unlikely to occur anywhere by chance.
fn password(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("Pw{tag}x{nanos:09}q{}", std::process::id())
}

// ----------------------------------------------------------------------- TLS

#[test]
fn tls_with_client_certificate_registers_the_exact_value() {
    let pki = TestPki::generate();
    let etcd = Etcd::start_tls(&pki);
    let env = TestEnv::with_etcd("security_tls", etcd);
    let ep = env.endpoint();
    assert!(ep.starts_with("https://"), "{ep}");
    let bare = format!("127.0.0.1:{}", env.etcd.client_port());

    // Without a client certificate etcd refuses the connection: the client
    // certificate is what lets the agent in.
    let refused = std::process::Command::new(rig::etcd::etcdctl_bin())
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &ep, "--cacert", path_str(&pki.ca())])
        .args(["--dial-timeout", "2s", "--command-timeout", "3s"])
        .args(["get", "--prefix", "/"])
        .output()
        .expect("run etcdctl");
    assert!(
        !refused.status.success(),
        "etcd answered a client without certificate: {}",
        String::from_utf8_lossy(&refused.stdout)
    );

    let mut args = base_args(&env, &bare);
    for (flag, path) in [
        ("--etcd-cacert", pki.ca()),
        ("--etcd-cert", pki.client_cert()),
        ("--etcd-key", pki.client_key()),
    ] {
        args.push(flag.into());
        args.push(path_str(&path).into());
    }
    let mut agent = spawn(&args, &[]);
    agent.wait_ready();

    let id = env.run_loopback_80();
    let (key, value) = env.loopback_80_record(&id);
    env.wait_records(REACT, &BTreeMap::from([(key.clone(), value.clone())]));
    let record = env.records()[&key].clone();
    assert_ne!(record.lease, 0, "the record rides the agent's lease");
    assert!(lease_ttl(&ep, record.lease) > 0, "the lease is alive");

    // The same, seen by etcdctl with the client certificate.
    let seen = etcdctl(
        &ep,
        &[
            "--cacert",
            path_str(&pki.ca()),
            "--cert",
            path_str(&pki.client_cert()),
            "--key",
            path_str(&pki.client_key()),
            "get",
            "--print-value-only",
            &key,
        ],
    );
    assert_eq!(seen, value);
    assert!(
        agent.count_log(&["etcd_tls=true"]) >= 1,
        "start-up does not say that TLS is on; stderr:\n{}",
        agent.lines().join("\n")
    );

    // The environment variables do the same.
    agent.sigterm();
    let status = agent.wait_exit(Duration::from_secs(5));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{status:?}");
    let envs = [
        ("ETCD_ENDPOINT", bare.clone()),
        ("ETCD_CACERT", path_str(&pki.ca()).to_string()),
        ("ETCD_CERT", path_str(&pki.client_cert()).to_string()),
        ("ETCD_KEY", path_str(&pki.client_key()).to_string()),
    ];
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut agent = spawn(
        &[
            "--host-ip".to_string(),
            env.host_ip.clone(),
            "--require-label".to_string(),
            env.label().to_string(),
        ],
        &envs,
    );
    agent.wait_ready();
    let second = env.run_loopback_80();
    let expected = BTreeMap::from([(key, value), env.loopback_80_record(&second)]);
    env.wait_records(REACT, &expected);
    let leases: Vec<i64> = env.records().values().map(|r| r.lease).collect();
    assert!(
        leases.iter().all(|l| *l != 0 && *l != record.lease),
        "records not on the new agent's lease: {leases:x?} (old {:x})",
        record.lease
    );
    agent.assert_running();
}

#[test]
fn untrusted_server_certificate_is_reported_and_nothing_is_written() {
    let pki = TestPki::generate();
    let stranger = TestPki::generate();
    let etcd = Etcd::start_tls(&pki);
    let env = TestEnv::with_etcd("security_untrusted", etcd);
    let bare = format!("127.0.0.1:{}", env.etcd.client_port());
    env.run_loopback_80();
    assert_eq!(env.expected_now().len(), 1);

    // A valid client certificate, but the CA given is not etcd's.
    let mut args = base_args(&env, &bare);
    for (flag, path) in [
        ("--etcd-cacert", stranger.ca()),
        ("--etcd-cert", pki.client_cert()),
        ("--etcd-key", pki.client_key()),
    ] {
        args.push(flag.into());
        args.push(path_str(&path).into());
    }
    let started = Instant::now();
    let mut agent = spawn(&args, &[]);
    let warned = wait_until(Duration::from_secs(20), || {
        agent.count_log(&["dependency unavailable", "dependency=\"etcd\""]) > 0
    });
    assert!(
        warned,
        "no `dependency unavailable` warning naming etcd within 20 s; stderr:\n{}",
        agent.lines().join("\n")
    );
    eprintln!("warned after {:?}", started.elapsed());
    let warning = agent
        .lines()
        .into_iter()
        .find(|l| l.contains("dependency unavailable"))
        .unwrap();
    assert!(
        warning.contains("certificate"),
        "the warning does not say that etcd's certificate is the problem: {warning}"
    );
    thread::sleep(Duration::from_secs(3).saturating_sub(started.elapsed()));
    agent.assert_running();
    assert!(
        !agent.has_log("agent ready"),
        "ready although etcd cannot be reached"
    );
    let records = get_prefix(&env.endpoint(), "/");
    assert!(records.is_empty(), "something was written: {records:#?}");
    // One warning for the outage, not one per retry.
    assert_eq!(
        agent.count_log(&["dependency unavailable", "dependency=\"etcd\""]),
        1,
        "stderr:\n{}",
        agent.lines().join("\n")
    );
}

// ---------------------------------------------------------------------- auth

/// Users `root` and `agent`; the role `agent` may read and write only
/// `/registered/<HOST_IP>/` and its host lock's candidates
/// (`/docker-etcd-register/agents/registered/<HOST_IP>/`); authentication on. The test's helpers act as
/// root from then on.
fn enable_auth(env: &TestEnv, root_password: &str, agent_password: &str) {
    enable_auth_with(env, root_password, agent_password, true);
}

/// As [`enable_auth`]; without `lock_permission` the role is one set up
/// before the host lock existed: the host prefix only.
fn enable_auth_with(
    env: &TestEnv,
    root_password: &str,
    agent_password: &str,
    lock_permission: bool,
) {
    let ep = env.endpoint();
    let prefix = env.host_prefix();
    etcdctl(&ep, &["user", "add", &format!("root:{root_password}")]);
    etcdctl(&ep, &["user", "add", &format!("agent:{agent_password}")]);
    etcdctl(&ep, &["role", "add", "agent"]);
    let lock_candidates = format!(
        "{}/",
        etcd_faults::election_name("/registered", &env.host_ip)
    );
    let mut granted = vec![prefix.as_str()];
    if lock_permission {
        granted.push(&lock_candidates);
    }
    for prefix in granted {
        let grant = ["role", "grant-permission", "agent", "--prefix=true"];
        etcdctl(&ep, &[&grant[..], &["readwrite", prefix]].concat());
    }
    etcdctl(&ep, &["user", "grant-role", "agent", "agent"]);
    etcdctl(&ep, &["auth", "enable"]);
    let root = root_password.to_string();
    set_client_security(&ep, move |options| options.with_user("root", root.clone()));
    // The root user works, anonymous requests do not.
    let as_root = format!("root:{root_password}");
    etcdctl(&ep, &["--user", &as_root, "get", "--prefix", "/"]);
    let anonymous = std::process::Command::new(rig::etcd::etcdctl_bin())
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &ep, "put", "/probe", "x"])
        .output()
        .expect("run etcdctl");
    assert!(!anonymous.status.success(), "authentication is not enabled");
}

fn password_file(dir: &Path, password: &str) -> PathBuf {
    let path = dir.join("etcd-password");
    std::fs::write(&path, format!("{password}\n")).expect("write password file");
    path
}

#[test]
fn least_privilege_user_registers_repairs_and_deregisters() {
    let env = TestEnv::new("security_auth");
    let ep = env.endpoint();
    let root_password = password("root");
    let agent_password = password("agent");
    enable_auth(&env, &root_password, &agent_password);
    let dir = tempfile::tempdir().unwrap();
    let file = password_file(dir.path(), &agent_password);

    let mut args = base_args(&env, &ep);
    args.extend([
        "--etcd-user".to_string(),
        "agent".to_string(),
        "--etcd-password-file".to_string(),
        path_str(&file).to_string(),
        "--deregister-on-exit".to_string(),
    ]);
    // Debug lines carry the error of every failed request: none may carry
    // the password either.
    let mut agent = spawn(&args, &[("RUST_LOG", "docker_etcd_register=debug")]);
    agent.wait_ready();

    let id = env.run_loopback_80();
    let (key, value) = env.loopback_80_record(&id);
    env.wait_records(REACT, &BTreeMap::from([(key.clone(), value.clone())]));
    let lease = env.records()[&key].lease;
    assert_ne!(lease, 0, "the record rides the agent's lease");

    // A delete by root is noticed through the watch (read permission on the
    // prefix) and repaired.
    assert_eq!(delete(&ep, &key), 1);
    let repaired = env.wait_key(REACT, &key);
    assert_eq!(
        (repaired.value.as_str(), repaired.lease),
        (value.as_str(), lease)
    );

    // `docker rm -f` removes it.
    env.containers.rm_f(&id);
    env.wait_records(REACT, &BTreeMap::new());

    // Two more, then SIGTERM with --deregister-on-exit: the prefix is empty
    // once the agent has exited.
    let a = env.run_loopback_80();
    let b = env.run_loopback_80();
    let expected = BTreeMap::from([env.loopback_80_record(&a), env.loopback_80_record(&b)]);
    env.wait_records(REACT, &expected);
    let sent = Instant::now();
    agent.sigterm();
    let status = agent.wait_exit(Duration::from_secs(5));
    let took = sent.elapsed();
    let left = env.records();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "exit status {status:?}; stderr:\n{}",
        agent.lines().join("\n")
    );
    assert!(took <= Duration::from_secs(2), "took {took:?} to exit");
    assert!(
        left.is_empty(),
        "records left after the agent exited: {left:#?}\nstderr:\n{}",
        agent.lines().join("\n")
    );
    assert!(
        agent.has_log("deregistered this host"),
        "stderr:\n{}",
        agent.lines().join("\n")
    );
    assert!(
        agent.warnings().is_empty(),
        "warnings with a role that allows everything the agent needs:\n{}",
        agent.warnings().join("\n")
    );
    assert!(
        agent.count_log(&["etcd_user=\"agent\""]) + agent.count_log(&["etcd_user=agent"]) >= 1,
        "start-up does not name the etcd user; stderr:\n{}",
        agent.lines().join("\n")
    );
    assert_secret_not_logged(&agent, &agent_password);
}

#[test]
fn wrong_password_keeps_the_agent_running_and_writes_nothing() {
    let env = TestEnv::new("security_wrong_password");
    let ep = env.endpoint();
    let root_password = password("root");
    let agent_password = password("agent");
    enable_auth(&env, &root_password, &agent_password);
    env.run_loopback_80();
    assert_eq!(env.expected_now().len(), 1);
    let dir = tempfile::tempdir().unwrap();

    let wrong_file = password("file");
    let wrong_flag = password("flag");
    let wrong_env = password("env");
    let file = password_file(dir.path(), &wrong_file);
    let args = base_args(&env, &ep);
    let with = |extra: &[&str]| -> Vec<String> {
        let mut all = args.clone();
        all.extend(["--etcd-user", "agent"].iter().map(|s| s.to_string()));
        all.extend(extra.iter().map(|s| s.to_string()));
        all
    };
    let debug = ("RUST_LOG", "docker_etcd_register=debug");
    let mut agents = [
        (
            "--etcd-password-file",
            wrong_file.clone(),
            spawn(&with(&["--etcd-password-file", path_str(&file)]), &[debug]),
        ),
        (
            "--etcd-password",
            wrong_flag.clone(),
            spawn(&with(&["--etcd-password", &wrong_flag]), &[debug]),
        ),
        (
            "ETCD_PASSWORD",
            wrong_env.clone(),
            spawn(&with(&[]), &[debug, ("ETCD_PASSWORD", &wrong_env)]),
        ),
    ];
    let started = Instant::now();

    let mentions_authentication = |l: &String| {
        (l.contains(" WARN ") || l.contains(" ERROR ")) && l.contains("authentication")
    };
    for (form, _, agent) in &mut agents {
        let said = wait_until(Duration::from_secs(20), || {
            agent.lines().iter().any(mentions_authentication)
        });
        assert!(
            said,
            "{form}: no warning or error mentioning authentication within 20 s; stderr:\n{}",
            agent.lines().join("\n")
        );
    }
    thread::sleep(Duration::from_secs(3).saturating_sub(started.elapsed()));
    for (form, secret, agent) in &mut agents {
        agent.assert_running();
        assert!(!agent.has_log("agent ready"), "{form}: ready");
        let line = agent
            .lines()
            .into_iter()
            .find(mentions_authentication)
            .unwrap();
        eprintln!("{form}: {line}");
        assert_secret_not_logged(agent, secret);
        assert_secret_not_logged(agent, &agent_password);
    }
    let records = get_prefix(&ep, "/");
    assert!(records.is_empty(), "something was written: {records:#?}");
}

#[test]
fn a_role_without_the_lock_permission_still_registers() {
    let env = TestEnv::new("security_no_lock");
    let ep = env.endpoint();
    let root_password = password("root");
    let agent_password = password("agent");
    enable_auth_with(&env, &root_password, &agent_password, false);
    let dir = tempfile::tempdir().unwrap();
    let file = password_file(dir.path(), &agent_password);
    let mut args = base_args(&env, &ep);
    args.extend([
        "--etcd-user".to_string(),
        "agent".to_string(),
        "--etcd-password-file".to_string(),
        path_str(&file).to_string(),
    ]);
    let mut agent = spawn(&args, &[]);
    agent.wait_ready();
    let id = env.run_loopback_80();
    let (key, value) = env.loopback_80_record(&id);
    env.wait_records(REACT, &BTreeMap::from([(key, value)]));
    assert!(
        agent.has_log("etcd refuses this agent the host lock; writing without it"),
        "want the missing permission named; stderr:\n{}",
        agent.lines().join("\n")
    );
    agent.assert_running();
}
