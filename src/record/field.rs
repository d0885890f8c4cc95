//! The fields of a record besides its names, as types that hold only what an
//! agent writes (docs/security.md "Trust boundary"): a record read back from etcd is
//! anyone's text until it is parsed into these, and a consumer that holds
//! one cannot print a port of `0`, a protocol of `icmp` or an id that ends a
//! line.

use std::fmt;
use std::num::NonZeroU16;
use std::sync::Arc;

use serde::{Serialize, Serializer};

/// A full container id: 64 lowercase hex digits, as both engines give it.
/// Shared, not copied: a consumer's index holds it once per record, however
/// many backends of a rendering name it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContainerId(Arc<str>);

/// Length of a short container id, as `docker ps` shows it.
pub const SHORT_ID: usize = 12;

impl ContainerId {
    pub fn parse(text: &str) -> Option<Self> {
        let hex = |b: u8| matches!(b, b'0'..=b'9' | b'a'..=b'f');
        (text.len() == 64 && text.bytes().all(hex)).then(|| Self(Arc::from(text)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first [`SHORT_ID`] digits.
    pub fn short(&self) -> &str {
        // ASCII by construction, and longer than SHORT_ID.
        &self.0[..SHORT_ID]
    }
}

/// The protocol of a published port; ordered as its text is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Sctp,
    Tcp,
    Udp,
}

impl Protocol {
    /// `tcp`, `udp` or `sctp`, exactly as the engines and records write it.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "tcp" => Some(Self::Tcp),
            "udp" => Some(Self::Udp),
            "sctp" => Some(Self::Sctp),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }
}

/// A port, 1-65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortNumber(NonZeroU16);

impl PortNumber {
    /// A port as the engine and records write it: a decimal number 1-65535,
    /// with no sign, blank or leading zero (so one port has one spelling).
    pub fn parse(text: &str) -> Option<Self> {
        if text.starts_with('0') || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        text.parse().ok().map(Self)
    }

    pub fn get(self) -> u16 {
        self.0.get()
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for PortNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Every field serializes as the text the record holds: `list --json` and
/// the templates see strings, as the records have them.
macro_rules! serialize_as_text {
    ($($field:ty),*) => {$(
        impl Serialize for $field {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
    )*};
}

serialize_as_text!(ContainerId, Protocol, PortNumber, super::Name);

/// An address as text, for `#[serde(serialize_with)]`: the same for every
/// serializer (serde's own form of an address depends on the serializer).
pub fn address_as_text<S: Serializer>(ip: &std::net::IpAddr, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_protocols_and_ports() {
        let id = "0123456789abcdef".repeat(4);
        assert_eq!(ContainerId::parse(&id).unwrap().short(), "0123456789ab");
        for bad in [
            "0123456789ABCDEF".repeat(4),
            "0".repeat(63),
            "0".repeat(65),
            format!("{}\n", "0".repeat(63)),
            format!("{}é", "0".repeat(62)),
        ] {
            assert_eq!(ContainerId::parse(&bad), None, "{bad:?}");
        }
        for protocol in ["tcp", "udp", "sctp"] {
            assert_eq!(Protocol::parse(protocol).unwrap().as_str(), protocol);
        }
        for bad in ["TCP", "tcp ", "", "icmp"] {
            assert_eq!(Protocol::parse(bad), None);
        }
        assert_eq!(PortNumber::parse("80").map(PortNumber::get), Some(80));
        assert_eq!(PortNumber::parse("65535").unwrap().to_string(), "65535");
        for bad in ["0", "080", "65536", "-1", "+80", " 80", "80\n", "", "8e1"] {
            assert_eq!(PortNumber::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn fields_serialize_as_the_text_of_the_record() {
        let port = PortNumber::parse("8080").unwrap();
        assert_eq!(serde_json::to_string(&port).unwrap(), r#""8080""#);
        assert_eq!(serde_json::to_string(&Protocol::Udp).unwrap(), r#""udp""#);
    }
}
