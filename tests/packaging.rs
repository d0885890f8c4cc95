//! Packaging: `scripts/build-image.sh --prebuilt` turns the binary cargo built
//! into an image (Rust stage skipped, runtime base made locally FROM scratch,
//! nothing pulled); the image holds no shell, runs the binary as its
//! entrypoint and, started the way `register.service` starts it (Docker
//! socket mounted, `HOST_IP` and `ETCD_ENDPOINT` in the environment),
//! registers a sibling container and removes it again and stops cleanly on
//! `docker stop`; both systemd units (and the Podman drop-in) pass
//! `systemd-analyze verify`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{
    docker, expected_value, host_port, require_docker, unique_id, wait_until, Containers, TestEnv,
    AGENT_BIN, IMAGE, REACT,
};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
/// The Docker client the build script uses: Debian's, which builds with
/// BuildKit without buildx.
const BUILDKIT_DOCKER: &str = "/usr/bin/docker";
const ENTRYPOINT: &str = "/usr/local/bin/docker-etcd-register";

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An image built for this test run, removed on drop.
struct TestImage(String);

impl TestImage {
    /// Builds the image from the binary cargo built for this test.
    fn build(id: &str) -> TestImage {
        require_docker();
        assert!(
            Path::new(BUILDKIT_DOCKER).exists(),
            "{BUILDKIT_DOCKER} is missing: run `bash scripts/setup.sh` to install docker.io"
        );
        let image = TestImage(format!("docker-etcd-register-test:{id}"));
        let out = Command::new("bash")
            .arg(Path::new(MANIFEST_DIR).join("scripts/build-image.sh"))
            .args(["--prebuilt", AGENT_BIN, "--tag", &image.0])
            .env_remove("DOCKER")
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/build-image.sh");
        assert!(
            out.status.success(),
            "scripts/build-image.sh failed ({}):\n{}",
            out.status,
            output_text(&out)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            image.0,
            "the script prints the tag it built"
        );
        image
    }
}

impl Drop for TestImage {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", &self.0]).output();
    }
}

/// The container's output so far, stdout and stderr.
fn container_logs(id: &str) -> String {
    let out = Command::new("docker")
        .args(["logs", id])
        .stdin(Stdio::null())
        .output()
        .expect("run docker logs");
    output_text(&out)
}

fn docker_output(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run docker {args:?}: {e}"))
}

/// No shell, the binary as exec-form entrypoint, nothing but the binary,
/// its libraries and the CA bundle in it; a configuration error is reported
/// as the binary reports it.
fn check_image_contents(image: &str) {
    let entrypoint = docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Entrypoint}} {{json .Config.Cmd}}",
        image,
    ]);
    assert_eq!(
        entrypoint,
        format!("[\"{ENTRYPOINT}\"] null"),
        "entrypoint and command of {image}"
    );

    for shell in ["/bin/sh", "/bin/bash", "/bin/busybox"] {
        let out = docker_output(&["run", "--rm", "--entrypoint", shell, image, "-c", "true"]);
        assert!(
            !out.status.success(),
            "{image} runs {shell}: {}",
            output_text(&out)
        );
    }

    // Every file in the image: the binary, shared libraries and the CA bundle.
    let created = docker(&["create", image]);
    let export = Command::new("docker")
        .args(["export", &created])
        .stdin(Stdio::null())
        .output()
        .expect("run docker export");
    let _ = docker_output(&["rm", "-f", &created]);
    assert!(export.status.success(), "docker export failed");
    let mut tar = Command::new("tar")
        .args(["-t", "-v", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run tar");
    let mut stdin = tar.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(&export.stdout);
    });
    let listing = tar.wait_with_output().expect("tar output");
    writer.join().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).to_string();
    let files: Vec<&str> = listing
        .lines()
        // regular files and symlinks; `tar -tv` prints the path after the time
        .filter(|l| l.starts_with('-') || l.starts_with('l'))
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    assert!(
        files.contains(&ENTRYPOINT.trim_start_matches('/')),
        "the binary is not in the image:\n{listing}"
    );
    for file in &files {
        let allowed = *file == ENTRYPOINT.trim_start_matches('/')
            || *file == "etc/ssl/certs/ca-certificates.crt"
            || (file.starts_with("lib") && file.contains(".so"))
            // created by Docker in every container
            || [
                ".dockerenv",
                "dev/console",
                "etc/hostname",
                "etc/hosts",
                "etc/mtab",
                "etc/resolv.conf",
            ]
            .contains(file);
        assert!(allowed, "unexpected file {file} in the image:\n{listing}");
    }

    // Without HOST_IP, the agent in the image fails as the binary does.
    let out = docker_output(&["run", "--rm", image]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a missing HOST_IP is a configuration error: {}",
        output_text(&out)
    );
    let text = output_text(&out);
    assert!(
        text.contains("--host-ip") && text.contains("HOST_IP"),
        "the error names the flag and the variable: {text}"
    );
}

#[test]
fn image_runs_as_the_fleet_unit_runs_it_and_holds_no_shell() {
    let id = unique_id("packaging");
    let image = TestImage::build(&id);
    check_image_contents(&image.0);

    let env = TestEnv::new("packaging");
    // The agent's container carries a label of its own, so that the agent
    // (which requires the test's label) never sees itself; dropping the guard
    // removes it.
    let agents = Containers::new(&format!("{}-agent", env.id));
    let etcd_port = env.etcd.client_port();
    // As in register.service: socket mounted, configuration in the
    // environment, a `host:port` endpoint without a scheme. Host networking
    // lets the agent reach the test's etcd on 127.0.0.1.
    let agent = agents.run(&[
        "--name",
        &format!("docker-etcd-register-{id}"),
        "--network",
        "host",
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        "-e",
        &format!("HOST_IP={}", env.host_ip),
        "-e",
        &format!("ETCD_ENDPOINT=127.0.0.1:{etcd_port}"),
        "-e",
        &format!("REGISTER_REQUIRE_LABELS={}", env.label()),
        &image.0,
    ]);
    let ready = wait_until(Duration::from_secs(30), || {
        container_logs(&agent).contains("agent ready")
    });
    assert!(
        ready,
        "the agent in the image did not get ready; state {}; logs:\n{}",
        docker(&["inspect", "--format", "{{json .State}}", &agent]),
        container_logs(&agent)
    );

    // A sibling publishing a wildcard port: its record carries HOST_IP.
    let sibling = env.containers.run(&["-p", "80", IMAGE, "sleep", "1000"]);
    let public = host_port(&sibling, "80/tcp", "0.0.0.0");
    let key = env.key(IMAGE, &sibling);
    let value = expected_value(&sibling, IMAGE, &[(&env.host_ip, &public, "80", "tcp")]);
    env.wait_records(REACT, &BTreeMap::from([(key.clone(), value)]));

    env.containers.rm_f(&sibling);
    env.wait_gone(REACT, &key);
    env.wait_records(REACT, &BTreeMap::new());

    // ExecStop: `docker stop` sends SIGTERM to the binary (PID 1 in the
    // container), which exits 0 well within the unit's stop timeout.
    let started = Instant::now();
    docker(&["stop", "-t", "10", &agent]);
    let elapsed = started.elapsed();
    let exit_code = docker(&["inspect", "--format", "{{.State.ExitCode}}", &agent]);
    assert_eq!(
        exit_code,
        "0",
        "exit code after docker stop; logs:\n{}",
        container_logs(&agent)
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "docker stop took {elapsed:?}; logs:\n{}",
        container_logs(&agent)
    );
    agents.cleanup();
}

/// `systemd-analyze verify UNIT` must pass without a word: it reports unknown
/// keys and unparsable values as warnings but still exits 0.
fn verify_unit(path: &Path) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("systemd-analyze is not usable ({e}): run `bash scripts/setup.sh` to install systemd")
        });
    let text = output_text(&out);
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify {} ({}):\n{text}",
        path.display(),
        out.status
    );
}

fn read_unit(relative: &str) -> String {
    let path = Path::new(MANIFEST_DIR).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn unit_files_pass_systemd_analyze_verify() {
    // Verification checks that ExecStart binaries exist, so each unit is
    // verified as a copy (under its own name) whose paths point at binaries
    // present here: /usr/bin/docker (docker.io) and the agent cargo built.
    let dir = tempfile::tempdir().expect("temp dir");

    let fleet = read_unit("register.service");
    for needle in [
        "[X-Fleet]\nGlobal=true",
        "Requires=docker.service",
        "After=docker.service etcd2.service",
        "Restart=always",
        "ExecStartPre=-/usr/bin/docker kill docker-etcd-register",
        "ExecStartPre=-/usr/bin/docker rm docker-etcd-register",
        "ExecStart=/usr/bin/docker run --rm --name docker-etcd-register",
        "-e HOST_IP=${COREOS_PRIVATE_IPV4}",
        "-e ETCD_ENDPOINT=${COREOS_PRIVATE_IPV4}:2379",
        "-v /var/run/docker.sock:/var/run/docker.sock",
        "ExecStop=/usr/bin/docker stop docker-etcd-register",
    ] {
        assert!(fleet.contains(needle), "register.service lacks {needle:?}");
    }
    assert!(
        Path::new("/usr/bin/docker").exists(),
        "/usr/bin/docker is missing: run `bash scripts/setup.sh` to install docker.io"
    );
    let fleet_copy = dir.path().join("register.service");
    std::fs::write(&fleet_copy, &fleet).unwrap();
    verify_unit(&fleet_copy);

    let direct = read_unit("deploy/docker-etcd-register.service");
    for needle in [
        "ExecStart=/usr/local/bin/docker-etcd-register\n",
        "EnvironmentFile=-/etc/default/docker-etcd-register",
        "Restart=always",
        "KillSignal=SIGTERM",
        "ProtectSystem=strict",
    ] {
        assert!(
            direct.contains(needle),
            "deploy/docker-etcd-register.service lacks {needle:?}"
        );
    }
    let direct_copy = dir.path().join("docker-etcd-register.service");
    std::fs::write(
        &direct_copy,
        direct.replace("/usr/local/bin/docker-etcd-register", AGENT_BIN),
    )
    .unwrap();
    verify_unit(&direct_copy);

    // The Podman drop-in, verified beside the unit as systemd loads it.
    let podman = read_unit("deploy/podman.conf");
    for needle in [
        "Environment=DOCKER_HOST=unix:///run/podman/podman.sock",
        "Wants=podman.socket",
    ] {
        assert!(
            podman.contains(needle),
            "deploy/podman.conf lacks {needle:?}"
        );
    }
    let drop_ins = dir.path().join("docker-etcd-register.service.d");
    std::fs::create_dir(&drop_ins).unwrap();
    std::fs::write(drop_ins.join("podman.conf"), &podman).unwrap();
    verify_unit(&direct_copy);
}
