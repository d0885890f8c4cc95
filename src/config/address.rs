//! Addresses of etcd, Docker and the metrics endpoint, checked and
//! normalised at start-up.
//!
//! Whatever the operator typed is only echoed through [`shown`], which
//! replaces anything that could be a user name or password by `***` and drops
//! query strings: error lines go to the journal, which is no place for a
//! secret (README "Configuration").

use std::net::SocketAddr;

const DEFAULT_ETCD_PORT: u16 = 2379;
/// Docker's own default for `tcp://` hosts without a port (`dockerd -H`).
const DEFAULT_DOCKER_PORT: u16 = 2375;

/// Where etcd's credentials go instead of the endpoint.
const ETCD_CREDENTIALS_HINT: &str = "give the user with --etcd-user (env ETCD_USER) and the \
     password with --etcd-password-file (env ETCD_PASSWORD_FILE)";

/// `text` safe to print: everything between the scheme and the last `@` (a
/// user name, a password, even one containing `,`, `/` or `@`) becomes
/// `***`, and a query or fragment (tokens) becomes `?…`.
pub fn shown(text: &str) -> String {
    let redacted = match text.rfind('@') {
        Some(at) => {
            let keep = scheme_len(text).filter(|&len| len <= at).unwrap_or(0);
            format!("{}***{}", &text[..keep], &text[at..])
        }
        None => text.to_owned(),
    };
    match redacted.find(['?', '#']) {
        Some(cut) => format!("{}?…", &redacted[..cut]),
        None => redacted,
    }
}

/// Length of a leading `scheme://` (RFC 3986 scheme characters only, so
/// that a `://` inside a password is not mistaken for one).
fn scheme_len(text: &str) -> Option<usize> {
    let (scheme, _) = text.split_once("://")?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(scheme.len() + "://".len())
}

/// Comma-separated etcd endpoints, each normalised to `http(s)://host:port`.
/// With `tls`, endpoints without a scheme are `https://`, and `http://` is
/// refused: half-encrypted clusters are a mistake, not a configuration.
pub fn parse_endpoints(list: &str, tls: bool) -> Result<Vec<String>, String> {
    // Checked on the whole list before splitting it: a password may contain
    // a comma, and half of it must not be echoed as an endpoint of its own.
    if list.contains('@') {
        return Err(format!(
            "{:?}: credentials do not belong in an endpoint; {ETCD_CREDENTIALS_HINT}",
            shown(list.trim())
        ));
    }
    let endpoints: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| parse_endpoint(e, tls))
        .collect::<Result<_, _>>()?;
    if endpoints.is_empty() {
        return Err("no endpoint given".into());
    }
    Ok(endpoints)
}

/// Normalises one endpoint (without `@`) to `http(s)://host:port`.
fn parse_endpoint(text: &str, tls: bool) -> Result<String, String> {
    let wanted = if tls { "https" } else { "http" };
    let with_scheme = if text.contains("://") {
        text.to_owned()
    } else {
        format!("{wanted}://{text}")
    };
    let text = shown(text);
    let uri: http::Uri = with_scheme
        .parse()
        .map_err(|_| format!("{text:?} is not host:port or {wanted}://host:port"))?;
    match (uri.scheme_str(), tls) {
        (Some("http"), false) | (Some("https"), true) => {}
        (Some("https"), false) => {
            return Err(format!(
                "{text:?} is https: give --etcd-cacert (env ETCD_CACERT) to use TLS"
            ))
        }
        (Some("http"), true) => {
            return Err(format!("{text:?} is plain http, but TLS is configured"))
        }
        _ => return Err(format!("{text:?}: the scheme must be {wanted}")),
    }
    let (host, port) =
        host_and_port(&uri, DEFAULT_ETCD_PORT).map_err(|p| format!("{text:?} {p}"))?;
    Ok(format!("{wanted}://{host}:{port}"))
}

/// The host and port of a `scheme://host[:port][/]` URI; anything more (a
/// path, a query) is refused, since the clients would silently drop it.
fn host_and_port(uri: &http::Uri, default_port: u16) -> Result<(String, u16), &'static str> {
    let host = uri.host().filter(|h| !h.is_empty()).ok_or("has no host")?;
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err("has a path or query: give scheme://host:port only");
    }
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    // `http::Uri` accepts `host:` and `host:99999`; no client connects there.
    let port = match authority.rsplit_once(':') {
        Some((before, port)) if !before.ends_with(':') || before.starts_with('[') => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or("has no valid port (1 to 65535)")?,
        _ => default_port,
    };
    Ok((host.to_owned(), port))
}

/// `unix:///path`, or `tcp://host[:port]` / `http://host[:port]` normalised
/// with Docker's default port 2375.
pub fn parse_docker_host(text: &str) -> Result<String, String> {
    let text = text.trim();
    let expected = "must be unix:///path/to/docker.sock, tcp://host:port or http://host:port";
    if let Some(path) = text.strip_prefix("unix://") {
        // A socket path has no user info: an `@` in it is just a character.
        return if path.is_empty() {
            Err(format!("{text:?} {expected}"))
        } else {
            Ok(text.to_owned())
        };
    }
    let Some(scheme) = ["tcp://", "http://"]
        .into_iter()
        .find(|scheme| text.starts_with(scheme))
    else {
        return Err(format!("{:?} {expected}", shown(text)));
    };
    if text.contains('@') {
        return Err(format!(
            "{:?}: credentials do not belong in the Docker host (the Docker API takes none there)",
            shown(text)
        ));
    }
    let uri: http::Uri = format!("http://{}", &text[scheme.len()..])
        .parse()
        .map_err(|_| format!("{:?} {expected}", shown(text)))?;
    let (host, port) =
        host_and_port(&uri, DEFAULT_DOCKER_PORT).map_err(|p| format!("{:?} {p}", shown(text)))?;
    Ok(format!("{scheme}{host}:{port}"))
}

/// `IP:PORT` with a real port: port 0 would listen on one chosen at random,
/// which no scraper could find.
pub fn parse_metrics_addr(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text
        .parse()
        .map_err(|_| format!("{:?} is not IP:PORT, e.g. 127.0.0.1:9731", shown(text)))?;
    if addr.port() == 0 {
        return Err(format!(
            "{text:?}: port 0 would pick a random port; give a port from 1 to 65535"
        ));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_redacts_every_form_of_user_info() {
        let cases = [
            (
                "http://user:secret@127.0.0.1:2379",
                "http://***@127.0.0.1:2379",
            ),
            ("user:secret@127.0.0.1:2379", "***@127.0.0.1:2379"),
            ("tcp://user:secret@host:2375", "tcp://***@host:2375"),
            ("http://u:p@a:1,http://u:q@b:2", "http://***@b:2"),
            ("http://user:se,cret@h:1", "http://***@h:1"),
            ("http://user:se/c@ret@h:1", "http://***@h:1"),
            ("user:a://secret@h:1", "***@h:1"),
            ("http://h:1/?token=secret", "http://h:1/?…"),
            ("http://h:1#secret", "http://h:1?…"),
            ("http://h:1", "http://h:1"),
        ];
        for (typed, expected) in cases {
            assert_eq!(shown(typed), expected, "{typed}");
        }
    }

    #[test]
    fn endpoint_with_credentials_is_refused_without_echoing_them() {
        for (list, tls) in [
            ("http://user:secret@127.0.0.1:2379", false),
            ("https://user:secret@127.0.0.1:2379", false),
            ("https://user:secret@127.0.0.1:2379", true),
            ("user:secret@127.0.0.1:2379", false),
            ("http://user:se,cret@127.0.0.1:2379", false),
            ("http://user:sec ret@127.0.0.1:2379", false),
            ("127.0.0.1:2379,ftp://user:secret@x", false),
        ] {
            let problem = parse_endpoints(list, tls).unwrap_err();
            assert!(
                !problem.contains("secret") && !problem.contains("se,"),
                "{problem}"
            );
            assert!(!problem.contains("cret"), "{problem}");
            assert!(problem.contains("***@"), "{problem}");
            assert!(problem.contains("--etcd-password-file"), "{problem}");
        }
    }

    #[test]
    fn endpoint_query_is_not_echoed() {
        let problem = parse_endpoints("http://h:2379/?token=secret", false).unwrap_err();
        assert!(!problem.contains("secret"), "{problem}");
    }

    #[test]
    fn endpoint_ports_are_one_to_65535() {
        assert_eq!(parse_endpoints("h:1", false).unwrap(), ["http://h:1"]);
        assert_eq!(
            parse_endpoints("h:65535", false).unwrap(),
            ["http://h:65535"]
        );
        for bad in ["h:0", "h:65536", "h:", "h:-1"] {
            assert!(parse_endpoints(bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn docker_host_is_normalised_with_docker_default_port() {
        let cases = [
            ("unix:///var/run/docker.sock", "unix:///var/run/docker.sock"),
            ("unix:///run/a@b/docker.sock", "unix:///run/a@b/docker.sock"),
            ("tcp://10.0.0.1", "tcp://10.0.0.1:2375"),
            ("tcp://10.0.0.1:1", "tcp://10.0.0.1:1"),
            ("http://[::1]:65535/", "http://[::1]:65535"),
        ];
        for (typed, expected) in cases {
            assert_eq!(parse_docker_host(typed).as_deref(), Ok(expected), "{typed}");
        }
    }

    #[test]
    fn docker_host_refuses_bad_ports_paths_and_credentials() {
        for bad in [
            "unix://",
            "/var/run/docker.sock",
            "tcp://",
            "tcp://h:0",
            "tcp://h:65536",
            "tcp://h:99999",
            "tcp://h:2375/v1.41",
            "tcp://h:2375?secret",
        ] {
            let problem = parse_docker_host(bad).unwrap_err();
            assert!(!problem.contains("secret"), "{problem}");
        }
        for with_credentials in [
            "tcp://user:secret@host:2375",
            "http://user:secret@host",
            "ftp://user:secret@host",
            "tcp://user:sec ret@host:2375",
        ] {
            let problem = parse_docker_host(with_credentials).unwrap_err();
            assert!(!problem.contains("secret"), "{problem}");
            assert!(!problem.contains("ret@"), "{problem}");
            assert!(problem.contains("***@host"), "{problem}");
        }
    }

    #[test]
    fn metrics_port_is_one_to_65535() {
        assert!(parse_metrics_addr("127.0.0.1:1").is_ok());
        assert!(parse_metrics_addr("[::1]:65535").is_ok());
        for bad in [
            "127.0.0.1:0",
            "127.0.0.1:65536",
            "127.0.0.1",
            "localhost:9731",
        ] {
            assert!(parse_metrics_addr(bad).is_err(), "{bad}");
        }
    }
}
