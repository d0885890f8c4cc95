//! Image naming: the `{image}` segment of a key (SPEC §2).
//!
//! Docker keeps in `Config.Image` exactly what the user typed. We turn it into
//! Docker's familiar form (`docker.io/library/busybox` → `busybox:latest`) and
//! replace `/` by `::` so that a key always has four levels below the prefix.
//! A container started by image id is keyed by the full id of its image.

use oci_spec::distribution::Reference;

const DOCKER_HUB: &str = "docker.io";
const OFFICIAL_NAMESPACE: &str = "library/";
const ID_ALGORITHM: &str = "sha256:";

/// The `{image}` key segment of a container.
///
/// `configured` is `Config.Image` (what was typed), `image_id` is the
/// container's `Image` field (`sha256:<64 hex>`).
pub fn key_segment(configured: &str, image_id: &str) -> String {
    if refers_to_image_id(configured, image_id) {
        return image_id.replace('/', "::");
    }
    match Reference::try_from(configured) {
        Ok(reference) => familiar(&reference).replace('/', "::"),
        // Docker accepted it, so it names something; keep it recognisable
        // rather than refusing to register the container.
        Err(_) if !configured.is_empty() => configured.replace('/', "::"),
        Err(_) => image_id.replace('/', "::"),
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

/// Docker's familiar rendering of a parsed reference: no `docker.io/`, no
/// `library/` for official images, `:latest` when neither tag nor digest.
fn familiar(reference: &Reference) -> String {
    let mut name = String::new();
    let repository = reference.repository();
    if reference.registry() == DOCKER_HUB {
        let official = repository
            .strip_prefix(OFFICIAL_NAMESPACE)
            .filter(|rest| !rest.contains('/'));
        name.push_str(official.unwrap_or(repository));
    } else {
        name.push_str(reference.registry());
        name.push('/');
        name.push_str(repository);
    }
    if let Some(tag) = reference.tag() {
        name.push(':');
        name.push_str(tag);
    }
    if let Some(digest) = reference.digest() {
        name.push('@');
        name.push_str(digest);
    }
    name
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
}
