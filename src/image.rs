//! Image naming: the `{image}` segment of a key (docs/records.md: "What is written").
//!
//! Docker keeps in `Config.Image` exactly what the user typed. We turn it into
//! Docker's familiar form (`docker.io/library/busybox` → `busybox:latest`) and
//! replace `/` by `::` so that a key always has four levels below the prefix.
//! A container started by image id is keyed by the full id of its image.
//!
//! The reference grammar is Docker's own (`name[:tag][@digest]`, the first
//! path component a registry when it has a `.` or `:` or is `localhost`),
//! parsed by hand: the regex-based parsers of the ecosystem compile a
//! Unicode-aware automaton that costs more memory than the whole agent.

const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
const OFFICIAL_NAMESPACE: &str = "library/";
const DEFAULT_TAG: &str = "latest";
const ID_ALGORITHM: &str = "sha256:";
/// Docker's limit on the length of a tag.
const MAX_TAG_LEN: usize = 128;

/// The `{image}` key segment of a container.
///
/// `configured` is `Config.Image` (what was typed), `image_id` is the
/// container's `Image` field (`sha256:<64 hex>`).
pub fn key_segment(configured: &str, image_id: &str) -> String {
    if refers_to_image_id(configured, image_id) {
        return image_id.replace('/', "::");
    }
    match Reference::parse(configured) {
        Some(reference) => reference.familiar().replace('/', "::"),
        // Docker accepted it, so it names something; keep it recognisable
        // rather than refusing to register the container.
        None if !configured.is_empty() => configured.replace('/', "::"),
        None => image_id.replace('/', "::"),
    }
}

/// True when `configured` is the image id, full or short, with or without
/// `sha256:`, of `image_id`.
fn refers_to_image_id(configured: &str, image_id: &str) -> bool {
    let typed = configured.strip_prefix(ID_ALGORITHM).unwrap_or(configured);
    let Some(full) = image_id.strip_prefix(ID_ALGORITHM) else {
        return false;
    };
    !typed.is_empty()
        && typed
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        && full.starts_with(typed)
}

/// An image reference split into its parts, the registry made explicit.
#[derive(Debug, PartialEq, Eq)]
struct Reference<'a> {
    registry: &'a str,
    /// The path below the registry, `library/` added for official images.
    repository: String,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
}

impl<'a> Reference<'a> {
    /// Docker's `ParseNormalizedNamed`; `None` when `text` is not a valid
    /// reference.
    fn parse(text: &'a str) -> Option<Self> {
        let (name, digest) = match text.split_once('@') {
            Some((_, digest)) if !is_digest(digest) => return None,
            Some((name, digest)) => (name, Some(digest)),
            None => (text, None),
        };
        // A tag follows the last `:` after the last `/`; an earlier `:` is a
        // registry's port.
        let last_component = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[last_component..].rfind(':') {
            Some(colon) => {
                let (name, tag) = name.split_at(last_component + colon);
                let tag = &tag[1..];
                if !is_tag(tag) {
                    return None;
                }
                (name, Some(tag))
            }
            None => (name, None),
        };
        let (registry, path) = match name.split_once('/') {
            Some((first, rest)) if is_registry(first) => (first, rest),
            _ => (DOCKER_HUB, name),
        };
        let registry = if registry == DOCKER_HUB_LEGACY {
            DOCKER_HUB
        } else {
            registry
        };
        if !path.split('/').all(is_path_component) {
            return None;
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("{OFFICIAL_NAMESPACE}{path}")
        } else {
            path.to_owned()
        };
        Some(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// Docker's familiar rendering: no `docker.io/`, no `library/` for
    /// official images, `:latest` when neither tag nor digest.
    fn familiar(&self) -> String {
        let mut name = String::new();
        if self.registry == DOCKER_HUB {
            let official = self
                .repository
                .strip_prefix(OFFICIAL_NAMESPACE)
                .filter(|rest| !rest.contains('/'));
            name.push_str(official.unwrap_or(&self.repository));
        } else {
            name.push_str(self.registry);
            name.push('/');
            name.push_str(&self.repository);
        }
        match (self.tag, self.digest) {
            (None, None) => {
                name.push(':');
                name.push_str(DEFAULT_TAG);
            }
            (tag, digest) => {
                if let Some(tag) = tag {
                    name.push(':');
                    name.push_str(tag);
                }
                if let Some(digest) = digest {
                    name.push('@');
                    name.push_str(digest);
                }
            }
        }
        name
    }
}

/// Docker's rule: the first component names a registry when it has a `.`
/// or a `:` (a port), or is `localhost`; a lowercase word is a namespace.
fn is_registry(component: &str) -> bool {
    component.contains(['.', ':'])
        || component == "localhost"
        || component.chars().any(|c| c.is_ascii_uppercase())
}

/// `[a-z0-9]+` separated by `.`, `_`, `__` or dashes: lowercase, non-empty.
fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alphanumeric = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    bytes.first().is_some_and(alphanumeric)
        && bytes.last().is_some_and(alphanumeric)
        && bytes
            .iter()
            .all(|b| alphanumeric(b) || matches!(b, b'.' | b'_' | b'-'))
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`
fn is_tag(tag: &str) -> bool {
    let word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    tag.len() <= MAX_TAG_LEN
        && tag.as_bytes().first().is_some_and(word)
        && tag.bytes().all(|b| word(&b) || b == b'.' || b == b'-')
}

/// `algorithm:hex` with at least 32 hex digits.
fn is_digest(digest: &str) -> bool {
    digest.split_once(':').is_some_and(|(algorithm, hex)| {
        !algorithm.is_empty()
            && algorithm
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'.' | b'_' | b'-'))
            && hex.len() >= 32
            && hex.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// Whether the key segment `segment` is the image an operator named with
/// `wanted` (`list --image`): `busybox`, `busybox:latest` and
/// `docker.io/library/busybox:latest` all name `busybox:latest`, and a name
/// without tag or digest names every tag of its repository.
pub fn segment_matches(segment: &str, wanted: &str) -> bool {
    let wanted_segment = key_segment(wanted, "");
    if segment == wanted || segment == wanted_segment {
        return true;
    }
    let last_component = wanted.rsplit('/').next().unwrap_or(wanted);
    let tagless = !last_component.contains(':') && !last_component.contains('@');
    tagless && repository_of(segment) == repository_of(&wanted_segment)
}

/// A key segment without its `:tag` and `@digest`.
fn repository_of(segment: &str) -> &str {
    let undigested = segment.split_once('@').map_or(segment, |(name, _)| name);
    let last_start = undigested.rfind("::").map_or(0, |i| i + 2);
    match undigested[last_start..].rfind(':') {
        Some(colon) => &undigested[..last_start + colon],
        None => undigested,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMAGE_ID: &str =
        "sha256:3f57d9401f8d42f986df300f0c69192fc41da28ccc8d797829467780db3dd741";
    const DIGEST: &str = "sha256:c5b1261d6d3e43071626931fc004f70149baeba2c8ec672bd4f27761f8e1ad6b";

    fn segment(configured: &str) -> String {
        key_segment(configured, IMAGE_ID)
    }

    #[test]
    fn official_images_lose_registry_and_library() {
        assert_eq!(segment("busybox"), "busybox:latest");
        assert_eq!(segment("busybox:latest"), "busybox:latest");
        assert_eq!(segment("library/busybox"), "busybox:latest");
        assert_eq!(segment("docker.io/library/busybox"), "busybox:latest");
        assert_eq!(
            segment("index.docker.io/library/busybox:1.36"),
            "busybox:1.36"
        );
    }

    #[test]
    fn docker_hub_user_images_keep_their_namespace() {
        assert_eq!(
            segment("mimperatore/docker-etcd-register"),
            "mimperatore::docker-etcd-register:latest"
        );
        assert_eq!(segment("docker.io/team/app:v1"), "team::app:v1");
        assert_eq!(
            segment("docker.io/library/team/app"),
            "library::team::app:latest"
        );
    }

    #[test]
    fn other_registries_keep_their_host() {
        assert_eq!(
            segment("quay.io/coreos/etcd:v3.5"),
            "quay.io::coreos::etcd:v3.5"
        );
        assert_eq!(
            segment("localhost:5000/team/app"),
            "localhost:5000::team::app:latest"
        );
        assert_eq!(segment("localhost/app"), "localhost::app:latest");
        assert_eq!(segment("[::1]:5000/app:1"), "[::1]:5000::app:1");
    }

    #[test]
    fn digests_are_kept_and_suppress_latest() {
        assert_eq!(
            segment(&format!("busybox@{DIGEST}")),
            format!("busybox@{DIGEST}")
        );
        assert_eq!(
            segment(&format!("quay.io/coreos/etcd:v3.5@{DIGEST}")),
            format!("quay.io::coreos::etcd:v3.5@{DIGEST}")
        );
    }

    #[test]
    fn image_ids_map_to_the_full_id() {
        let hex = IMAGE_ID.strip_prefix("sha256:").unwrap();
        assert_eq!(segment(IMAGE_ID), IMAGE_ID);
        assert_eq!(segment(hex), IMAGE_ID);
        assert_eq!(segment(&hex[..12]), IMAGE_ID);
        assert_eq!(segment(&format!("sha256:{}", &hex[..12])), IMAGE_ID);
    }

    #[test]
    fn a_hex_name_that_is_not_our_image_is_a_name() {
        assert_eq!(segment("deadbeef"), "deadbeef:latest");
    }

    #[test]
    fn unparsable_references_stay_recognisable_and_flat() {
        assert_eq!(segment("Weird/Name"), "Weird::Name");
        assert_eq!(segment(""), IMAGE_ID);
    }

    #[test]
    fn no_slash_ever_survives() {
        for typed in ["a/b/c/d", "host:1/x/y:z", "UPPER/case/x", "a//b", "/"] {
            assert!(!segment(typed).contains('/'), "{typed}");
        }
    }

    #[test]
    fn list_filter_names_an_image_in_any_familiar_form() {
        for wanted in [
            "busybox",
            "busybox:latest",
            "docker.io/library/busybox",
            "library/busybox:latest",
        ] {
            assert!(segment_matches("busybox:latest", wanted), "{wanted}");
        }
        assert!(
            segment_matches("busybox:1.36", "busybox"),
            "a bare name matches every tag"
        );
        assert!(!segment_matches("busybox:1.36", "busybox:latest"));
        assert!(!segment_matches("busybox:latest", "busybox:1.36"));
        assert!(!segment_matches("busyboxes:latest", "busybox"));
        assert!(!segment_matches("other::busybox:latest", "busybox"));
        assert!(segment_matches(
            "localhost:5000::team::app:v2",
            "localhost:5000/team/app"
        ));
        assert!(segment_matches(
            "localhost:5000::team::app:v2",
            "localhost:5000::team::app:v2"
        ));
        assert!(!segment_matches(
            "localhost:5000::team::app:v2",
            "localhost:5000/team/other"
        ));
        assert!(segment_matches(&format!("busybox@{DIGEST}"), "busybox"));
        assert!(segment_matches(IMAGE_ID, IMAGE_ID));
    }

    #[test]
    fn invalid_parts_make_the_reference_unparsable() {
        assert_eq!(Reference::parse("busybox:"), None, "empty tag");
        assert_eq!(
            Reference::parse("busybox:-x"),
            None,
            "tag must start with a word character"
        );
        assert_eq!(
            Reference::parse(&format!("busybox:{}", "t".repeat(129))),
            None
        );
        assert_eq!(Reference::parse("busybox@sha256:abc"), None, "short digest");
        assert_eq!(Reference::parse("team/-app"), None);
        assert_eq!(Reference::parse("team//app"), None);
        assert_eq!(Reference::parse(""), None);
        assert!(Reference::parse(&format!("busybox:{}", "t".repeat(128))).is_some());
    }

    #[test]
    fn registry_ports_are_not_tags() {
        let reference = Reference::parse("localhost:5000/app").unwrap();
        assert_eq!(reference.registry, "localhost:5000");
        assert_eq!(reference.repository, "app");
        assert_eq!(reference.tag, None);
        assert_eq!(
            segment("registry.local:5000/a/b:c"),
            "registry.local:5000::a::b:c"
        );
    }
}
