//! The documentation holds together: every relative link in README.md,
//! ARCHITECTURE.md and docs/ names a file that exists and, with `#anchor`,
//! a heading of that file; every page in docs/ is reachable from README.md;
//! and README.md stays a front page (under ~10 kB).

mod common;

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use common::markdown::{anchors, links, slug};

/// README.md's ceiling: a front page, the rest in docs/.
const README_MAX_BYTES: usize = 10_240;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The Markdown files checked: README.md, ARCHITECTURE.md, docs/*.md.
fn documents() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md"), root().join("ARCHITECTURE.md")];
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|entry| entry.expect("docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    files.extend(pages);
    files
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Whether `target` leaves the repository (checked by no one here).
fn external(target: &str) -> bool {
    ["http://", "https://", "mailto:"]
        .iter()
        .any(|scheme| target.starts_with(scheme))
}

/// The file a relative `target` of `from` names, and its anchor if any.
fn resolve(from: &Path, target: &str) -> (PathBuf, Option<String>) {
    let (path, anchor) = match target.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor.to_owned())),
        None => (target, None),
    };
    let file = if path.is_empty() {
        from.to_path_buf()
    } else {
        from.parent().expect("a file's directory").join(path)
    };
    (file, anchor)
}

#[test]
fn every_relative_link_resolves_to_a_file_and_a_heading() {
    let mut broken = Vec::new();
    for document in documents() {
        for target in links(&read(&document)) {
            if external(&target) {
                continue;
            }
            let (file, anchor) = resolve(&document, &target);
            let shown = document.strip_prefix(root()).unwrap_or(&document);
            if !file.exists() {
                broken.push(format!("{}: {target}: no such file", shown.display()));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            let is_markdown = file.extension().is_some_and(|e| e == "md");
            if is_markdown && !anchors(&read(&file)).contains(&anchor) {
                broken.push(format!("{}: {target}: no such heading", shown.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_page_in_docs_is_reachable_from_the_readme() {
    let readme = root().join("README.md");
    let mut seen = BTreeSet::from([readme.clone()]);
    let mut queue = VecDeque::from([readme]);
    while let Some(document) = queue.pop_front() {
        for target in links(&read(&document)) {
            if external(&target) {
                continue;
            }
            let (file, _) = resolve(&document, &target);
            let Ok(file) = file.canonicalize() else {
                continue;
            };
            if file.extension().is_some_and(|e| e == "md") && seen.insert(file.clone()) {
                queue.push_back(file);
            }
        }
    }
    let unreachable: Vec<PathBuf> = documents()
        .into_iter()
        .filter(|page| page.starts_with(root().join("docs")))
        .filter(|page| !seen.contains(&page.canonicalize().expect("a page")))
        .collect();
    assert!(
        unreachable.is_empty(),
        "pages no link from README.md leads to: {unreachable:?}"
    );
}

#[test]
fn the_readme_stays_a_front_page() {
    let size = read(&root().join("README.md")).len();
    assert!(
        size <= README_MAX_BYTES,
        "README.md is {size} bytes: move details into docs/ (at most {README_MAX_BYTES})"
    );
}

#[test]
fn slugs_follow_github() {
    assert_eq!(slug("Load balancers: `render`"), "load-balancers-render");
    assert_eq!(slug("With Podman"), "with-podman");
    assert_eq!(slug("DockerEtcdRegisterDown"), "dockeretcdregisterdown");
    assert_eq!(
        links("see [a](b.md#c) and `[x](y)`\n```\n[no](link)\n```\n"),
        ["b.md#c", "y"]
    );
}
