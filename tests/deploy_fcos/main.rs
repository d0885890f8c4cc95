//! Fedora CoreOS deployment (`deploy/fcos/`): the Butane config is YAML of
//! the `fcos` variant, uses only fields of Butane's fcos 1.5.0 spec and
//! installs the quadlet byte for byte; the service unit Podman's quadlet
//! generator would make of the quadlet (translated here by quadlet.go's
//! rules: Podman 4.3 has no generator) passes `systemd-analyze verify`; and
//! its `podman run` command, with systemd's `${...}` taken from an Afterburn
//! attribute file, runs the agent's image under rootful Podman: it gets
//! ready, answers /healthz, runs confined, registers a Podman container under
//! the Afterburn address and stops on the unit's ExecStop.

#[path = "../common/mod.rs"]
mod common;
mod quadlet;
mod yaml;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use quadlet::{expand, generate, lookup_all, parse_unit};
use yaml::Yaml;

use common::{
    http_get, metrics_addr, require_docker, wait_until, Containers, Engine, TestEnv, AGENT_BIN,
    REACT, SLOW,
};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const QUADLET: &str = "deploy/fcos/docker-etcd-register.container";
const BUTANE: &str = "deploy/fcos/docker-etcd-register.bu";
/// Where the Butane config puts the quadlet: the generator's admin directory.
const QUADLET_PATH: &str = "/etc/containers/systemd/docker-etcd-register.container";
/// The podman the generator names in its commands (its build-time `_binDir`).
const PODMAN_BIN: &str = "/usr/bin/podman";
/// The host directory of the agent's settings, which the quadlet mounts.
const SETTINGS_DIR: &str = "/etc/docker-etcd-register";
/// Afterburn's IPv4 attributes of an instance (coreos/afterburn,
/// docs/usage/attributes.md): the variables the quadlet's Exec= may name.
const AFTERBURN_IPV4: &str = "AFTERBURN_AKAMAI_PRIVATE_IPV4_0 AFTERBURN_ALIYUN_IPV4_PRIVATE
    AFTERBURN_AWS_IPV4_LOCAL AFTERBURN_AZURE_IPV4_DYNAMIC AFTERBURN_CLOUDSTACK_IPV4_LOCAL
    AFTERBURN_CUSTOM_PRIVATE_IPV4 AFTERBURN_DIGITALOCEAN_IPV4_PRIVATE_0
    AFTERBURN_EXOSCALE_LOCAL_IPV4 AFTERBURN_GCP_IP_LOCAL_0 AFTERBURN_HETZNER_PRIVATE_IPV4_0
    AFTERBURN_KUBEVIRT_IPV4 AFTERBURN_OPENSTACK_IPV4_LOCAL AFTERBURN_PACKET_IPV4_PRIVATE_0
    AFTERBURN_PROXMOXVE_IPV4 AFTERBURN_SCALEWAY_PRIVATE_IPV4";
/// Afterburn's own unit (coreos/afterburn, systemd/afterburn.service), which
/// Fedora CoreOS ships: `systemd-analyze verify` loads the units a unit
/// requires, and this machine has none by that name.
const AFTERBURN_UNIT: &str = "[Unit]\nDescription=Afterburn (Metadata)\n\n[Service]
Type=oneshot\nEnvironment=AFTERBURN_OPT_PROVIDER=--cmdline
ExecStart=/usr/bin/afterburn ${AFTERBURN_OPT_PROVIDER} --attributes=/run/metadata/afterburn
RemainAfterExit=yes\n\n[Install]\nRequiredBy=metadata.target\n";

fn read(relative: &str) -> String {
    let path = Path::new(MANIFEST_DIR).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

// ---- the Butane config ----

/// The fields of Butane's fcos 1.5.0 spec (coreos/butane,
/// docs/config-fcos-v1_5.md) under the mappings this config has. Butane
/// refuses any other key.
const BUTANE_FIELDS: &str = "
    : variant version ignition storage systemd passwd kernel_arguments boot_device grub
    storage: disks raid filesystems files directories links luks trees
    storage.directories[]: path overwrite mode user group
    storage.files[]: path overwrite contents append mode user group
    storage.files[].contents: compression http_headers source inline local verification
    systemd: units
    systemd.units[]: name enabled mask contents contents_local dropins";

#[test]
fn butane_config_is_fcos_yaml_that_installs_the_quadlet() {
    let bu = Yaml::parse(&read(BUTANE)).unwrap_or_else(|e| panic!("{BUTANE}: {e}"));
    let get = |path: &str| {
        bu.get(path)
            .unwrap_or_else(|| panic!("{BUTANE}: no {path}"))
    };
    assert_eq!(get("variant"), "fcos");
    assert_eq!(get("version"), "1.5.0");
    for path in bu.keys() {
        let mut parent = String::new();
        for key in path.split('.') {
            let (name, list) = key
                .split_once('[')
                .map_or((key, ""), |(name, _)| (name, "[]"));
            let mut fields = BUTANE_FIELDS.lines().map(str::trim);
            let fields = fields.find_map(|l| l.strip_prefix(&*parent)?.strip_prefix(": "));
            let known = fields.is_some_and(|f| f.split(' ').any(|f| f == name));
            assert!(known, "{BUTANE}: {path}: {name} is no Butane field there");
            parent = format!(
                "{parent}{}{name}{list}",
                if parent.is_empty() { "" } else { "." }
            );
        }
    }
    // The item of a list whose `key` is `value`, as a path.
    let item = |list: &str, key: &str, value: &str| {
        let items = (0..).map(|i| format!("{list}[{i}]"));
        let mut items = items.take_while(|p| bu.contains_key(&format!("{p}.{key}")));
        let found = items.find(|p| bu[&format!("{p}.{key}")] == value);
        found.unwrap_or_else(|| panic!("{BUTANE}: no {list} with {key} {value}"))
    };

    let quadlet = item("storage.files", "path", QUADLET_PATH);
    assert_eq!(get(&format!("{quadlet}.mode")), "0644");
    let (inline, file) = (get(&format!("{quadlet}.contents.inline")), read(QUADLET));
    let line = inline.lines().zip(file.lines()).position(|(a, b)| a != b);
    let line = line.map_or(inline.lines().count().min(file.lines().count()), |n| n) + 1;
    assert!(
        inline == &file,
        "the quadlet in {BUTANE} differs from {QUADLET} at its line {line}"
    );
    // The env file the quadlet passes to the container, in the directory it
    // mounts (podman refuses a missing one), readable by root only.
    let env = item("storage.files", "path", &format!("{SETTINGS_DIR}/env"));
    assert_eq!(get(&format!("{env}.mode")), "0600");
    assert!(get(&format!("{env}.contents.inline")).contains("ETCD_ENDPOINT="));
    let dir = item("storage.directories", "path", SETTINGS_DIR);
    assert_eq!(get(&format!("{dir}.mode")), "0700");
    for name in ["podman.socket", "podman-auto-update.timer"] {
        let unit = item("systemd.units", "name", name);
        assert_eq!(get(&format!("{unit}.enabled")), "true", "{name} enabled");
    }
}

/// Keys of the quadlet that the deployment depends on.
const QUADLET_KEYS: &str = "
    Unit Requires=afterburn.service
    Unit After=afterburn.service
    Unit Wants=podman.socket
    Service EnvironmentFile=/run/metadata/afterburn
    Service Restart=always
    Service RestartPreventExitStatus=2
    Container AutoUpdate=registry
    Container Network=host
    Container Volume=/run/podman:/run/podman:ro
    Container Environment=DOCKER_HOST=unix:///run/podman/podman.sock
    Install WantedBy=multi-user.target";

#[test]
fn generated_service_passes_systemd_analyze_verify() {
    let quadlet = parse_unit(&read(QUADLET));
    for line in QUADLET_KEYS
        .lines()
        .filter_map(|l| l.trim().split_once(' '))
    {
        let (section, (key, value)) = (line.0, line.1.split_once('=').unwrap());
        let found = lookup_all(&quadlet, section, key).contains(&value);
        assert!(found, "{QUADLET}: no [{section}] {key}={value}");
    }
    let (service, _) = generate(&quadlet);
    assert!(
        Path::new(PODMAN_BIN).exists(),
        "no {PODMAN_BIN}: run `bash scripts/setup-podman.sh`"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("docker-etcd-register.service");
    std::fs::write(&path, &service).unwrap();
    std::fs::write(dir.path().join("afterburn.service"), AFTERBURN_UNIT).unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output();
    let out =
        verify.unwrap_or_else(|e| panic!("no systemd-analyze ({e}): run `bash scripts/setup.sh`"));
    // It reports unknown keys and bad values as warnings and still exits 0.
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    let quiet = out.status.success() && text.trim().is_empty();
    assert!(
        quiet,
        "systemd-analyze verify ({}):\n{text}\nof:\n{service}",
        out.status
    );
}

// ---- the generated command, run under Podman ----

/// The agent's image, built from the binary cargo built for this test by
/// `scripts/build-image.sh` (with Docker's BuildKit, as packaging.rs does)
/// and loaded into Podman's storage; removed from both on drop.
struct PodmanImage(String);

impl PodmanImage {
    fn build(id: &str) -> PodmanImage {
        require_docker();
        let hint = "run `bash scripts/setup.sh` to install docker.io";
        assert!(
            Path::new("/usr/bin/docker").exists(),
            "no /usr/bin/docker: {hint}"
        );
        let image = PodmanImage(format!("docker-etcd-register-fcos:{id}"));
        let script = format!("{MANIFEST_DIR}/scripts/build-image.sh");
        let mut build = Command::new("bash");
        build
            .args([&script, "--prebuilt", AGENT_BIN, "--tag", &image.0])
            .stdin(Stdio::null());
        let out = build
            .env_remove("DOCKER")
            .output()
            .expect("run scripts/build-image.sh");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "scripts/build-image.sh: {stderr}");
        let pipe = "docker save \"$0\" | podman load";
        let mut load = Command::new("bash");
        let out = load
            .args(["-o", "pipefail", "-c", pipe, &image.0])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "docker save | podman load: {stderr}");
        image
    }

    /// What Podman calls an image it loaded without a registry.
    fn podman_name(&self) -> String {
        format!("localhost/{}", self.0)
    }
}

impl Drop for PodmanImage {
    fn drop(&mut self) {
        let _ = Engine::Podman.try_cli(&["rmi", "-f", &self.podman_name()]);
        let _ = Engine::Docker.try_cli(&["rmi", &self.0]);
    }
}

#[test]
fn generated_podman_run_gets_the_agent_ready_with_the_afterburn_address() {
    let env = TestEnv::on(Engine::Podman, "deploy_fcos");
    let image = PodmanImage::build(&env.id);
    // The agent's container, under a label of its own (its agent follows the
    // test's label only), removed on drop.
    let agents = Containers::on(Engine::Podman, &format!("{}-agent", env.id));
    let quadlet = parse_unit(&read(QUADLET));
    let (_, generated) = generate(&quadlet);

    // What Afterburn writes on the instance: each variable of Exec= the
    // test's host IP, beside an attribute that the quadlet does not use.
    let names = generated.iter().flat_map(|w| w.split("${").skip(1));
    let names: Vec<&str> = names.map(|n| n.split('}').next().unwrap()).collect();
    assert!(!names.is_empty(), "Exec= takes no Afterburn attribute");
    for name in &names {
        let known = AFTERBURN_IPV4.split_whitespace().any(|a| a == *name);
        assert!(known, "{name} is no IPv4 attribute of Afterburn");
    }
    let mut attributes: BTreeMap<&str, String> =
        names.iter().map(|n| (*n, env.host_ip.clone())).collect();
    attributes.insert("AFTERBURN_AWS_HOSTNAME", "ip-10-0-0-5.ec2.internal".into());
    // The settings the Butane config writes, for this test's etcd.
    let settings = tempfile::tempdir().expect("temp dir");
    let (metrics, etcd, label) = (metrics_addr(), env.endpoint(), env.label());
    let values = format!("ETCD_ENDPOINT={etcd}\nREGISTER_METRICS_ADDR={metrics}");
    let values = format!("{values}\nREGISTER_REQUIRE_LABELS={label}\n");
    std::fs::write(settings.path().join("env"), values).unwrap();

    // The command as systemd runs it, changed only where this machine is no
    // Fedora CoreOS host: no `--cgroups=split` (it puts the container in the
    // cgroup of the unit that runs podman, which exists only under systemd),
    // and the test's label, container name, image and settings directory.
    assert!(
        generated.iter().any(|w| w == "--cgroups=split"),
        "{generated:?}"
    );
    let name = format!("docker-etcd-register-{}", env.id);
    let image_word = lookup_all(&quadlet, "Container", "Image").pop().unwrap();
    let settings_dir = settings.path().to_string_lossy();
    let mut words = generated.iter().map(|w| expand(w, &attributes));
    assert_eq!(words.next().as_deref(), Some(PODMAN_BIN));
    let mut args: Vec<String> = Vec::new();
    while let Some(word) = words.next() {
        match word.as_str() {
            "run" => args.extend(["run", "--label", agents.label()].map(String::from)),
            "--cgroups=split" => {}
            "--name" => {
                // The quadlet's name gives way to the test's own.
                words.next();
                args.extend(["--name".into(), name.clone()]);
            }
            w if w == image_word => args.push(image.podman_name()),
            w => args.push(w.replacen(SETTINGS_DIR, &settings_dir, 1)),
        }
    }
    let host_ip = args
        .iter()
        .position(|a| a == "--host-ip")
        .map(|i| &args[i + 1]);
    assert_eq!(host_ip, Some(&env.host_ip), "Exec= expanded: {args:?}");

    let id = Engine::Podman.cli_out(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let logs = || {
        let out = Command::new("podman")
            .args(["logs", &id])
            .output()
            .expect("podman logs");
        (String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr)).into_owned()
    };
    assert!(
        wait_until(SLOW, || logs().contains("agent ready")),
        "not ready:\n{}",
        logs()
    );
    assert!(
        logs().contains("engine=podman"),
        "not following Podman:\n{}",
        logs()
    );
    let healthy = || matches!(http_get(&metrics, "/healthz"), Ok((200, _)));
    assert!(
        wait_until(REACT, healthy),
        "/healthz: {:?}",
        http_get(&metrics, "/healthz")
    );

    // Confined as the quadlet asks: no capability, no privilege to gain, a
    // seccomp filter, a read-only root, the host's network, auto-updated.
    let inspect = |format: &str| Engine::Podman.cli_out(&["inspect", "--format", format, &id]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", inspect("{{.State.Pid}}")));
    let status = status.expect("the agent's /proc/PID/status");
    for line in ["CapEff:\t0000000000000000", "NoNewPrivs:\t1", "Seccomp:\t2"] {
        assert!(
            status.lines().any(|l| l == line),
            "no {line:?} in:\n{status}"
        );
    }
    assert_eq!(inspect("{{.HostConfig.ReadonlyRootfs}}"), "true");
    assert_eq!(inspect("{{.HostConfig.NetworkMode}}"), "host");
    assert_eq!(
        inspect("{{index .Config.Labels \"io.containers.autoupdate\"}}"),
        "registry"
    );

    // A Podman container of the test is registered under the Afterburn address.
    let sibling = env.run_loopback_80();
    let (key, value) = env.loopback_80_record(&sibling);
    env.wait_records(REACT, &BTreeMap::from([(key, value)]));
    env.containers.rm_f(&sibling);
    env.wait_records(REACT, &BTreeMap::new());

    // ExecStop: the image's stop signal, SIGTERM, on which the agent exits
    // at once, well before Podman's SIGKILL 10 s later.
    let started = Instant::now();
    Engine::Podman.cli_out(&["rm", "-v", "-f", "-i", &name]);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "ExecStop took {took:?}; logs:\n{}",
        logs()
    );
    let gone = Engine::Podman
        .try_cli(&["container", "exists", &id])
        .is_err();
    assert!(gone, "the container is still there after ExecStop");
}
