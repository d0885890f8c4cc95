//! The quadlet and the service unit Podman's generator makes of it, by
//! quadlet.go's rules (Podman 4.3 has no generator), and systemd's `${NAME}`.

use std::collections::BTreeMap;

use crate::{PODMAN_BIN, QUADLET_PATH};

pub type Unit = Vec<(String, Vec<(String, String)>)>;

pub fn parse_unit(text: &str) -> Unit {
    let mut unit: Unit = Vec::new();
    for (n, line) in text.lines().map(str::trim).enumerate() {
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            unit.push((name.to_string(), Vec::new()));
            continue;
        }
        let key_value = line.split_once('=').filter(|(_, v)| !v.ends_with('\\'));
        let (key, value) = key_value.unwrap_or_else(|| panic!("line {}: {line:?}", n + 1));
        let section = &mut unit.last_mut().expect("a key before any section").1;
        section.push((key.trim().to_string(), value.trim().to_string()));
    }
    unit
}

pub fn lookup_all<'a>(unit: &'a Unit, section: &str, key: &str) -> Vec<&'a str> {
    let keys = unit.iter().filter(|(name, _)| name == section);
    let keys = keys.flat_map(|(_, keys)| keys).filter(|(k, _)| k == key);
    keys.map(|(_, v)| v.as_str()).collect()
}

/// Quadlet's split of Exec=, Environment= and the like (systemd's command
/// line rules), for words without quotes or escapes, which the quadlet does
/// not use; `$` passes through untouched, for systemd to expand.
fn words(value: &str) -> Vec<String> {
    assert!(
        !value.contains(['"', '\'', '\\']),
        "{value:?}: quoting is not translated here"
    );
    value.split_whitespace().map(str::to_string).collect()
}

/// The `podman run` arguments ConvertContainer adds for the [Container] keys
/// the quadlet uses, in its order: `{}` is each word of the key's values (of
/// its last value, for a key the generator reads once); a row without `{}`
/// is a yes/no key whose arguments come with yes. `--name` comes first.
const RUN_ARGS: &str = "
    Network: --network {}
    : --sdnotify=conmon -d
    NoNewPrivileges: --security-opt=no-new-privileges
    SecurityLabelDisable: --security-opt label=disable
    DropCapability: --cap-drop {}
    ReadOnly: --read-only
    Volume: -v {}
    AutoUpdate: --label io.containers.autoupdate={}
    Environment: --env {}
    EnvironmentFile: --env-file {}
    Image: {}
    Exec: {}";
/// The keys the generator reads every value of.
const REPEATED: &str = "Network DropCapability Volume Environment EnvironmentFile";

/// What the generator adds to [Service] before ExecStart= (`{stop}`: its
/// `podman rm` of the container).
const SERVICE_KEYS: &str = "Environment=PODMAN_SYSTEMD_UNIT=%n
KillMode=mixed
ExecStop={stop}
ExecStopPost=-{stop}
Delegate=yes
Type=notify
NotifyAccess=all
SyslogIdentifier=%N";

/// What Podman's generator makes of the quadlet (containers/podman,
/// pkg/systemd/quadlet/quadlet.go, ConvertContainer, the same in 5.8 and
/// 6.0): the service unit's text and its `podman run` command. A [Container]
/// key not translated here fails, as an unknown key fails the generator.
pub fn generate(quadlet: &Unit) -> (String, Vec<String>) {
    let rows: Vec<(&str, &str)> = RUN_ARGS
        .lines()
        .filter_map(|l| l.trim().split_once(": "))
        .collect();
    let container = quadlet.iter().filter(|(name, _)| name == "Container");
    for (key, _) in container.flat_map(|(_, keys)| keys) {
        let known = key == "ContainerName" || rows.iter().any(|(k, _)| k == key);
        assert!(known, "[Container] {key}= is not translated here");
    }
    for key in "Type KillMode NotifyAccess SyslogIdentifier User Group".split(' ') {
        let set = !lookup_all(quadlet, "Service", key).is_empty();
        assert!(!set, "[Service] {key}= is the generator's");
    }
    let all = |key| lookup_all(quadlet, "Container", key);
    let name = all("ContainerName").pop().unwrap_or("systemd-%N");
    let mut run = words(&format!(
        "{PODMAN_BIN} run --name {name} --replace --rm --cgroups=split"
    ));
    for (key, template) in rows {
        let mut values = all(key);
        if !REPEATED.split(' ').any(|k| k == key) {
            values = values.pop().into_iter().collect();
        }
        let mut values: Vec<String> = values.into_iter().flat_map(words).collect();
        if !template.contains("{}") {
            let yes = values
                .iter()
                .all(|v| ["1", "yes", "true", "on"].contains(&&**v));
            assert!(yes, "{key}={values:?}: only yes is translated here");
            if key.is_empty() || !values.is_empty() {
                run.extend(words(template));
            }
            continue;
        }
        match key {
            // A map in the generator: in the order of names (the quadlet gives each once).
            "Environment" => values.sort_by_key(|v| v.split('=').next().unwrap().to_string()),
            "DropCapability" => values.iter_mut().for_each(|v| *v = v.to_lowercase()),
            _ => {}
        }
        for value in values {
            run.extend(words(&template.replace("{}", &value)));
        }
    }

    let mounts: Vec<&str> = all("Volume")
        .iter()
        .map(|v| v.split(':').next().unwrap())
        .collect();
    assert!(
        mounts.iter().all(|m| m.starts_with('/')),
        "only host paths are translated"
    );
    let stop = format!("{PODMAN_BIN} rm -v -f -i {name}");
    let mut text = String::from("# Automatically generated by tests/deploy_fcos.rs\n");
    for (section, keys) in quadlet {
        let mut keys: Vec<String> = keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if section == "Unit" {
            let mounts = ["%t/containers"].into_iter().chain(mounts.iter().copied());
            let wait = "Wants=network-online.target\nAfter=network-online.target";
            keys.insert(0, wait.to_string());
            keys.push(format!("SourcePath={QUADLET_PATH}"));
            keys.extend(mounts.map(|m| format!("RequiresMountsFor={m}")));
        } else if section == "Service" {
            keys.push(SERVICE_KEYS.replace("{stop}", &stop));
            keys.push(format!("ExecStart={}", run.join(" ")));
        }
        let x = if section == "Container" { "X-" } else { "" };
        text += &format!("\n[{x}{section}]\n{}\n", keys.join("\n"));
    }
    (text, run)
}

/// systemd's `${NAME}` in a word of a command line: the variable's value from
/// the unit's environment files, or nothing when they have none.
pub fn expand(word: &str, env: &BTreeMap<&str, String>) -> String {
    let (mut out, mut rest) = (String::new(), word);
    while let Some((before, after)) = rest.split_once("${") {
        let (name, after) = after.split_once('}').expect("a closing brace");
        out += before;
        out += env.get(name).map_or("", String::as_str);
        rest = after;
    }
    assert!(
        !rest.contains('$'),
        "{word:?}: only ${{NAME}} is expanded here"
    );
    out + rest
}
