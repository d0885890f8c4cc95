//! What the agent knows of a container: the facts the Docker adapter extracts
//! from an inspect, and the label rules that decide whether it is registered.

use std::collections::BTreeMap;

/// The facts of one container that decide its record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Container {
    /// Full 64-hex container id.
    pub id: String,
    /// `Config.Image`: the reference exactly as it was typed.
    pub configured_image: String,
    /// `Image`: the `sha256:<hex>` id of the container's image.
    pub image_id: String,
    pub labels: BTreeMap<String, String>,
    pub running: bool,
    pub bindings: Vec<PortBinding>,
}

/// One published port binding, as Docker reports it in `NetworkSettings.Ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortBinding {
    pub private_port: String,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// Empty, a wildcard (`0.0.0.0`, `::`) or a concrete address.
    pub host_ip: String,
    pub host_port: String,
}

/// `--require-label KEY[=VALUE]`: the container must carry `KEY`, with exactly
/// `VALUE` when one is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelRequirement {
    pub key: String,
    pub value: Option<String>,
}

impl LabelRequirement {
    /// Parses `KEY` or `KEY=VALUE`; `None` when the key is empty.
    pub fn parse(text: &str) -> Option<Self> {
        let (key, value) = match text.split_once('=') {
            Some((key, value)) => (key, Some(value.to_owned())),
            None => (text, None),
        };
        let key = key.trim();
        (!key.is_empty()).then(|| Self {
            key: key.to_owned(),
            value,
        })
    }

    fn is_met_by(&self, labels: &BTreeMap<String, String>) -> bool {
        match (labels.get(&self.key), &self.value) {
            (Some(actual), Some(wanted)) => actual == wanted,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

impl Container {
    /// Whether the container is one this agent registers at all (running and
    /// carrying every required label); whether it publishes anything is the
    /// record builder's question.
    pub fn qualifies(&self, required: &[LabelRequirement]) -> bool {
        self.running && required.iter().all(|r| r.is_met_by(&self.labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labelled(pairs: &[(&str, &str)]) -> Container {
        Container {
            running: true,
            labels: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Container::default()
        }
    }

    fn require(texts: &[&str]) -> Vec<LabelRequirement> {
        texts
            .iter()
            .map(|t| LabelRequirement::parse(t).unwrap())
            .collect()
    }

    #[test]
    fn parses_key_and_key_value() {
        assert_eq!(
            LabelRequirement::parse("svc"),
            Some(LabelRequirement {
                key: "svc".into(),
                value: None
            })
        );
        assert_eq!(
            LabelRequirement::parse("svc=web=1"),
            Some(LabelRequirement {
                key: "svc".into(),
                value: Some("web=1".into())
            })
        );
        assert_eq!(
            LabelRequirement::parse("svc="),
            Some(LabelRequirement {
                key: "svc".into(),
                value: Some(String::new())
            })
        );
        assert_eq!(LabelRequirement::parse(""), None);
        assert_eq!(LabelRequirement::parse("=x"), None);
    }

    #[test]
    fn no_requirement_admits_every_running_container() {
        assert!(labelled(&[]).qualifies(&[]));
    }

    #[test]
    fn stopped_containers_never_qualify() {
        let stopped = Container {
            running: false,
            ..labelled(&[("a", "1")])
        };
        assert!(!stopped.qualifies(&require(&["a"])));
        assert!(!stopped.qualifies(&[]));
    }

    #[test]
    fn every_requirement_must_hold() {
        let c = labelled(&[("a", "1"), ("b", "2")]);
        assert!(c.qualifies(&require(&["a"])));
        assert!(c.qualifies(&require(&["a=1", "b"])));
        assert!(!c.qualifies(&require(&["a=2"])));
        assert!(!c.qualifies(&require(&["a", "c"])));
    }
}
