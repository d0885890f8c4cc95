//! The static configuration of Envoy and Traefik for a test or a benchmark:
//! the shipped example (`examples/envoy/bootstrap.yaml`,
//! `examples/traefik/traefik.yaml`) with only the run's own directory,
//! addresses and ports put in, so that what runs is what an operator copies.
//! A shipped file that no longer has what is replaced is a panic, not a run
//! on the wrong configuration.

use std::path::{Path, PathBuf};

/// The shipped file `relative` under `examples/`.
pub fn shipped(relative: &str) -> String {
    let path = examples().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The project's `examples/` directory.
pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// `text` (of the shipped `file`) with `from` replaced by `to`.
fn replaced(text: &str, from: &str, to: &str, file: &str) -> String {
    assert!(
        text.contains(from),
        "examples/{file} no longer has {from:?}: update rig/src/proxies.rs"
    );
    text.replace(from, to)
}

/// The shipped bootstrap with `dir` for /etc/envoy (where `render` writes
/// cds.yaml and lds.yaml) and its admin interface on loopback port `admin`
/// instead of its Unix socket, for the run's HTTP client.
pub fn envoy_bootstrap(dir: &Path, admin: u16) -> String {
    let file = "envoy/bootstrap.yaml";
    let text = replaced(&shipped(file), "/etc/envoy", &dir.to_string_lossy(), file);
    let tcp = format!("{{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}");
    replaced(
        &text,
        "{pipe: {path: /run/envoy/admin.sock, mode: 384}}",
        &tcp,
        file,
    )
}

/// The shipped static configuration with `dynamic` for its dynamic file,
/// and its top-level `entryPoints` replaced by `entry_points` (name,
/// address), then `extra` (more top-level sections) appended. Traefik takes
/// its static configuration from a file or from flags, never both.
pub fn traefik_static(dynamic: &Path, entry_points: &[(String, String)], extra: &str) -> String {
    let file = "traefik/traefik.yaml";
    let text = replaced(
        &shipped(file),
        "/etc/traefik/dynamic.yaml",
        &dynamic.to_string_lossy(),
        file,
    );
    let mut section = String::from("entryPoints:\n");
    for (name, address) in entry_points {
        section += &format!("  {name}:\n    address: \"{address}\"\n");
    }
    replace_section(&text, "entryPoints:", &section, file) + extra
}

/// `yaml` with the top-level section `header` (its line and the indented
/// or blank lines after it) replaced by `section`.
fn replace_section(yaml: &str, header: &str, section: &str, file: &str) -> String {
    let mut out = String::new();
    let mut lines = yaml.lines().peekable();
    let mut found = false;
    while let Some(line) = lines.next() {
        if line != header {
            out += line;
            out.push('\n');
            continue;
        }
        found = true;
        out += section;
        while lines
            .peek()
            .is_some_and(|l| l.is_empty() || l.starts_with(' '))
        {
            lines.next();
        }
    }
    assert!(
        found,
        "examples/{file} no longer has a top-level {header:?}: update rig/src/proxies.rs"
    );
    out
}
