//! The grammar of the names in a record's key and value (docs/security.md "Trust
//! boundary"): a service or image segment is written by the agent from what
//! a container's owner chose (a label, an image reference), and read by
//! every load balancer's template. A [`Name`] can hold nothing but
//! `[A-Za-z0-9._:@-]`, so no name can end a line, a quoted string, a comment
//! or a block of any consumer's configuration.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

/// The longest name: Docker's limit on a repository name.
pub const MAX_NAME_LEN: usize = 255;

/// A key segment (service or image) in the grammar: 1 to [`MAX_NAME_LEN`]
/// characters of `[A-Za-z0-9._:@-]`, the first a letter or digit.
/// Shared, not copied: the consumers keep one copy of each name however
/// many records carry it (see [`Names`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(Arc<str>);

/// Why a text is no [`Name`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("empty")]
    Empty,
    #[error("{0} characters, more than {MAX_NAME_LEN}")]
    TooLong(usize),
    #[error("character {0:?} is not one of A-Z a-z 0-9 . _ : @ -")]
    Character(char),
    #[error("it does not start with a letter or digit")]
    Start,
}

impl Name {
    pub fn parse(text: &str) -> Result<Self, NameError> {
        let first = text.chars().next().ok_or(NameError::Empty)?;
        if let Some(bad) = text.chars().find(|&c| !is_name_char(c)) {
            return Err(NameError::Character(bad));
        }
        if text.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong(text.len()));
        }
        if !first.is_ascii_alphanumeric() {
            return Err(NameError::Start);
        }
        Ok(Self(Arc::from(text)))
    }

    /// The service a `docker-etcd-register.service` label names: its value
    /// trimmed, `/` as `::` (the key has no more levels); `Ok(None)` when
    /// blank (the image is the service then).
    pub fn from_service_label(value: &str) -> Result<Option<Self>, NameError> {
        let value = value.trim();
        if value.is_empty() {
            return Ok(None);
        }
        Self::parse(&value.replace('/', "::")).map(Some)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// The names the records of a cluster share (a service runs on many hosts,
/// an image in many containers), each kept once: the consumers' index holds
/// a hundred thousand records in the memory of a few thousand names.
#[derive(Debug, Default)]
pub struct Names {
    /// Every name handed out and maybe still held by a record.
    shared: HashSet<Name>,
    /// How many were held at the last sweep: the next comes when the set
    /// has doubled, so that sweeping costs O(1) per name handed out.
    held_at_sweep: usize,
}

impl Names {
    /// `name`, or the copy of it already shared.
    pub fn share(&mut self, name: Name) -> Name {
        if let Some(shared) = self.shared.get(name.as_str()) {
            return shared.clone();
        }
        if self.shared.len() >= 2 * self.held_at_sweep + 1024 {
            // Names no record holds any more (old image tags, services
            // gone) would otherwise stay for the life of the process.
            self.shared.retain(|name| Arc::strong_count(&name.0) > 1);
            self.held_at_sweep = self.shared.len();
        }
        self.shared.insert(name.clone());
        name
    }

    /// How many names are kept.
    pub fn len(&self) -> usize {
        self.shared.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shared.is_empty()
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_the_grammar_are_kept_as_they_are() {
        for name in [
            "web",
            "web.v1",
            "busybox:latest",
            "quay.io::coreos::etcd:v3.5",
            "localhost:5000::app@sha256:0123abcd",
            "sha256:0123",
            "a",
            "9-lives_x",
        ] {
            assert_eq!(Name::parse(name).unwrap().as_str(), name);
        }
        assert!(Name::parse(&"a".repeat(MAX_NAME_LEN)).is_ok());
    }

    #[test]
    fn anything_that_could_break_out_of_a_configuration_is_refused() {
        for (text, error) in [
            ("", NameError::Empty),
            (
                "web\n    server evil 203.0.113.66:80",
                NameError::Character('\n'),
            ),
            ("web server", NameError::Character(' ')),
            ("web;", NameError::Character(';')),
            ("web{", NameError::Character('{')),
            ("web}", NameError::Character('}')),
            ("web#", NameError::Character('#')),
            ("web\"", NameError::Character('"')),
            ("web'", NameError::Character('\'')),
            ("web\\", NameError::Character('\\')),
            ("web/x", NameError::Character('/')),
            ("web\u{1b}[31m", NameError::Character('\u{1b}')),
            ("wéb", NameError::Character('é')),
            ("web\0", NameError::Character('\0')),
            ("-web", NameError::Start),
            (".web", NameError::Start),
            (":web", NameError::Start),
        ] {
            assert_eq!(Name::parse(text), Err(error), "{text:?}");
        }
        assert_eq!(
            Name::parse(&"a".repeat(MAX_NAME_LEN + 1)),
            Err(NameError::TooLong(MAX_NAME_LEN + 1))
        );
    }

    #[test]
    fn a_service_label_is_trimmed_and_its_slashes_become_double_colons() {
        let name = |label| Name::from_service_label(label).map(|n| n.map(|n| n.0));
        assert_eq!(name(" web "), Ok(Some("web".into())));
        assert_eq!(name("team/web"), Ok(Some("team::web".into())));
        assert_eq!(name("  "), Ok(None));
        assert_eq!(name(""), Ok(None));
        assert_eq!(name("web\nx"), Err(NameError::Character('\n')));
        assert_eq!(name("/web"), Err(NameError::Start));
    }
}
