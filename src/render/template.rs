//! Pure apart from reading the file once: the template (minijinja), its
//! settings and what it gets besides the context — the `ident` filter and
//! the `env` function (docs/render.md "Load balancers: render").

use std::path::{Path, PathBuf};
use std::sync::Arc;

use minijinja::{Environment, UndefinedBehavior};

use super::view;

use super::context::{Catalog, Context};
use crate::listing::Row;
use crate::record::{ContainerId, Name, PortNumber, Protocol};
use std::net::IpAddr;

/// The one name the template is registered under.
const NAME: &str = "template";

/// Why a template cannot be used: said at start, with line and column.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read the template {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("template {path}{place}: {detail}")]
    Invalid {
        path: PathBuf,
        /// ` line L, column C`, or less when minijinja does not know.
        place: String,
        detail: String,
    },
}

/// A compiled template, checked by rendering it once at load.
pub struct Template {
    /// Holds the one template and its filters and functions.
    environment: Environment<'static>,
    /// For error messages.
    path: PathBuf,
}

impl Template {
    /// Reads and compiles `path`, then renders it once with no services and
    /// once with an example service, so that a mistake (a syntax error, an
    /// unknown variable) is found at start, not at the first change.
    pub fn load(path: &Path) -> Result<Self, TemplateError> {
        let source = std::fs::read_to_string(path).map_err(|source| TemplateError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_source(path, source)
    }

    /// Like `load`, from text already read.
    pub fn from_source(path: &Path, source: String) -> Result<Self, TemplateError> {
        let mut environment = Environment::new();
        environment.set_debug(true);
        // A misspelt field is an error, not an empty string in a config.
        environment.set_undefined_behavior(UndefinedBehavior::Strict);
        // Configuration files: block tags take their whole line, the last
        // newline is kept.
        environment.set_trim_blocks(true);
        environment.set_lstrip_blocks(true);
        environment.set_keep_trailing_newline(true);
        environment.add_filter("ident", ident);
        environment.add_function("env", env);
        environment
            .add_template_owned(NAME, source)
            .map_err(|error| invalid(path, &error))?;
        let template = Self {
            environment,
            path: path.to_owned(),
        };
        template.render(Catalog::default().context([]))?;
        template.render(example())?;
        Ok(template)
    }

    /// The text for `context`, which several templates may share (one
    /// rendering, several files).
    pub fn render(&self, context: impl Into<Arc<Context>>) -> Result<String, TemplateError> {
        self.environment
            .get_template(NAME)
            .and_then(|template| template.render(view::root(context.into())))
            .map_err(|error| invalid(&self.path, &error))
    }
}

fn invalid(path: &Path, error: &minijinja::Error) -> TemplateError {
    let column = error
        .range()
        .zip(error.template_source())
        .and_then(|(range, source)| source.get(..range.start))
        .map(|before| {
            before
                .rsplit('\n')
                .next()
                .unwrap_or_default()
                .chars()
                .count()
                + 1
        });
    let place = match (error.line(), column) {
        (Some(line), Some(column)) => format!(" line {line}, column {column}"),
        (Some(line), None) => format!(" line {line}"),
        _ => String::new(),
    };
    let detail = match error.detail() {
        Some(detail) => format!("{}: {detail}", error.kind()),
        None => error.kind().to_string(),
    };
    TemplateError::Invalid {
        path: path.to_owned(),
        place,
        detail,
    }
}

/// The templates in `examples/`, by name, for the tests that hold every
/// one of them to the same rules.
#[cfg(test)]
pub(super) const SHIPPED: &[(&str, &str)] = &[
    (
        "haproxy",
        include_str!("../../examples/haproxy/haproxy.cfg.j2"),
    ),
    ("nginx", include_str!("../../examples/nginx/nginx.conf.j2")),
    (
        "envoy-cds",
        include_str!("../../examples/envoy/cds.yaml.j2"),
    ),
    (
        "envoy-lds",
        include_str!("../../examples/envoy/lds.yaml.j2"),
    ),
    (
        "traefik",
        include_str!("../../examples/traefik/dynamic.yaml.j2"),
    ),
];

/// The service used to try a template at load.
fn example() -> Context {
    let container = "0".repeat(64);
    let name = Name::parse("example:latest").expect("a name");
    let host = IpAddr::from([192, 0, 2, 1]);
    let key = format!("/registered/{host}/example:latest/{container}");
    let container = ContainerId::parse(&container).expect("an id");
    Catalog::default().context([Row {
        host,
        service: &name,
        image: &name,
        key: &key,
        container: &container,
        ip: host,
        public_port: PortNumber::parse("32768").expect("a port"),
        private_port: PortNumber::parse("80").expect("a port"),
        port_type: Protocol::Tcp,
    }])
}

/// `{{ name | ident }}`: a name made of `[A-Za-z0-9_]` only, usable as an
/// haproxy proxy or server name and an nginx upstream name, and different
/// for different names (docs/security.md "Trust boundary": two services must never
/// share one section). Letters and digits are kept; every other byte
/// becomes `_` and its two hex digits (`web.v1` → `web_2ev1`, `a_b` →
/// `a_5fb`), so a `_` always starts an escape and no two names meet. The
/// empty name is `_`, which no other name gives.
pub fn ident(name: &str) -> String {
    let mut ident = String::with_capacity(name.len() + 8);
    write_ident(&mut ident, name);
    ident
}

/// Writes `ident(name)` into `out`, without a copy of its own: a rendering
/// writes one per backend.
pub fn write_ident(out: &mut impl std::fmt::Write, name: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    if name.is_empty() {
        let _ = out.write_char('_');
        return;
    }
    for byte in name.bytes() {
        let _ = if byte.is_ascii_alphanumeric() {
            out.write_char(char::from(byte))
        } else {
            let high = char::from(HEX[usize::from(byte >> 4)]);
            let low = char::from(HEX[usize::from(byte & 0xf)]);
            out.write_char('_')
                .and_then(|()| out.write_char(high))
                .and_then(|()| out.write_char(low))
        };
    }
}

/// `{{ env("NAME", "default") }}`: an environment variable of `render`'s
/// process (fixed for its run), e.g. the address a load balancer binds.
fn env(name: &str, default: Option<&str>) -> Result<String, minijinja::Error> {
    match (std::env::var(name), default) {
        (Ok(value), _) => Ok(value),
        (Err(_), Some(default)) => Ok(default.to_owned()),
        (Err(_), None) => Err(minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("environment variable {name} is not set and has no default"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(source: &str) -> Result<Template, TemplateError> {
        Template::from_source(Path::new("t.j2"), source.to_owned())
    }

    #[test]
    fn renders_services_with_trimmed_blocks_and_the_last_newline() {
        let t = template(
            "{% for s in services %}\n{{ s.name | ident }}:\n  {% for b in s.backends %}\n {{ b.ip }}:{{ b.public_port }}\n  {% endfor %}\n{% endfor %}\n",
        )
        .unwrap();
        assert_eq!(
            t.render(example()).unwrap(),
            "example_3alatest:\n 192.0.2.1:32768\n"
        );
        // The same context, the same bytes.
        assert_eq!(t.render(example()).unwrap(), t.render(example()).unwrap());
    }

    /// What templates do with the context beyond loops: filters, tests,
    /// indexing, a backend's fields in order; every field is the record's
    /// text.
    #[test]
    fn the_context_answers_filters_as_plain_values_would() {
        let cases = [
            ("{{ services | length }}", "1"),
            ("{{ services[0].name }}", "example:latest"),
            ("{{ (services | first).ports[0].private_port }}", "80"),
            (
                "{{ services[0].backends | map(attribute='address') | join(',') }}",
                "192.0.2.1:32768",
            ),
            (
                "{{ services | selectattr('name', 'equalto', 'example:latest') | list | length }}",
                "1",
            ),
            ("{{ services[0].ports[0].private_port == '80' }}", "True"),
            ("{{ services[0].ports[0].backends[0].port_type }}", "tcp"),
            (
                "{% for k, v in services[0].backends[0] | items %}{{ k }}={{ v }} {% endfor %}",
                concat!(
                    "name=000000000000_192_2e0_2e2_2e1_32768 host=192.0.2.1 ip=192.0.2.1 ",
                    "public_port=32768 address=192.0.2.1:32768 private_port=80 port_type=tcp ",
                    "container=0000000000000000000000000000000000000000000000000000000000000000 ",
                    "image=example:latest "
                ),
            ),
            (
                "{% for key, value in services[0].ports[0] | items %}{{ key }} {% endfor %}",
                "private_port port_type backends ",
            ),
            ("{{ services[1] is defined }}", "False"),
        ];
        for (source, expected) in cases {
            // Guarded: a template is also rendered with no services at load.
            let t = template(&format!("{{% if services %}}{source}{{% endif %}}")).unwrap();
            assert_eq!(t.render(example()).unwrap(), expected, "{source}");
        }
        let misspelt = template("{% for s in services %}{{ s.backends[0].adress }}{% endfor %}");
        assert!(misspelt.is_err(), "an unknown field is an error");
    }

    #[test]
    fn a_syntax_error_names_line_and_column() {
        let Err(error) =
            template("global\n  {% for s in services %}\n  {{ s.name }\n{% endfor %}\n")
        else {
            panic!("accepted")
        };
        let text = error.to_string();
        assert!(text.starts_with("template t.j2 line 3, column"), "{text}");
    }

    #[test]
    fn an_unknown_field_is_an_error_at_load() {
        let Err(error) = template("{% for s in services %}{{ s.nmae }}{% endfor %}") else {
            panic!("accepted")
        };
        assert!(error.to_string().contains("line 1, column 27"), "{error}");
    }

    #[test]
    fn ident_keeps_letters_and_digits_and_escapes_the_rest() {
        assert_eq!(ident("web1"), "web1");
        assert_eq!(ident("web.v1"), "web_2ev1");
        assert_eq!(ident("web_v1"), "web_5fv1");
        assert_eq!(ident("quay.io::a:v1"), "quay_2eio_3a_3aa_3av1");
        assert_eq!(ident(""), "_");
        assert_eq!(ident("a\nb"), "a_0ab");
    }

    proptest::proptest! {
        /// Two names never give one identifier, and an identifier is made
        /// of `[A-Za-z0-9_]` only.
        #[test]
        fn ident_is_injective(a in "\\PC{0,12}", b in "\\PC{0,12}") {
            let (x, y) = (ident(&a), ident(&b));
            proptest::prop_assert!(x.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_'));
            proptest::prop_assert_eq!(a == b, x == y, "{:?} {:?} → {} {}", a, b, x, y);
        }

        /// Names that differ in one punctuation or underscore (the
        /// collisions of a lossy mapping) stay apart.
        #[test]
        fn ident_keeps_near_names_apart(stem in "[a-z]{1,6}", sep in "[.:@-]", tail in "[a-z0-9]{0,6}") {
            let punctuated = format!("{stem}{sep}{tail}");
            let underscored = format!("{stem}_{tail}");
            let escaped_look_alike = ident(&punctuated);
            proptest::prop_assert_ne!(ident(&punctuated), ident(&underscored));
            proptest::prop_assert_ne!(ident(&escaped_look_alike), escaped_look_alike.clone());
        }
    }

    #[test]
    fn the_shipped_examples_render_identical_bytes_for_one_context() {
        for &(name, source) in SHIPPED {
            let t = template(source).unwrap_or_else(|e| panic!("{name}: {e}"));
            let text = t.render(example()).unwrap();
            // Envoy's listeners name no backend, its clusters spell an
            // address as two fields; Traefik names an entry point.
            let needles: &[&str] = match name {
                "envoy-lds" => &["port_value: 80}"],
                "envoy-cds" => &["\"192.0.2.1\", port_value: 32768}"],
                "traefik" => &["[\"tcp-80\"]", "\"192.0.2.1:32768\""],
                _ => &[":80", "192.0.2.1:32768"],
            };
            for needle in needles {
                assert!(text.contains(needle), "{name}: no {needle:?} in\n{text}");
            }
            assert_eq!(t.render(example()).unwrap(), text, "{name}");
        }
    }

    #[test]
    fn tcp_ports_counts_the_tcp_frontends_of_every_service() {
        let t = template("{{ tcp_ports }}").unwrap();
        assert_eq!(t.render(example()).unwrap(), "1");
        let nothing = Catalog::default().context(std::iter::empty());
        assert_eq!(t.render(nothing).unwrap(), "0");
    }

    #[test]
    fn env_has_a_default() {
        let t = template("{{ env(\"DOCKER_ETCD_REGISTER_SURELY_UNSET\", \"0.0.0.0\") }}").unwrap();
        assert_eq!(t.render(example()).unwrap(), "0.0.0.0");
    }
}
