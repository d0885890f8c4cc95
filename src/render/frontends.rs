//! Which container ports may become a load balancer's frontends (`render
//! --frontend-port`, docs/security.md "Trust boundary"). A frontend is a socket the
//! load balancer binds: a container's owner who could pick it could pick a
//! port the load balancer's host already uses (its sshd, its etcd), which
//! makes every reload fail, or a thousand of them, more than nginx's
//! connections allow. The operator names the ports instead.

use std::fmt;
use std::ops::RangeInclusive;

use crate::record::PortNumber;

/// The container ports that may be frontends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum FrontendPorts {
    /// Any port (no `--frontend-port`): for clusters whose container owners
    /// are trusted with the load balancer's ports.
    #[default]
    Any,
    /// Only these, each `first..=last`; never empty.
    Only(Vec<RangeInclusive<u16>>),
}

/// A `--frontend-port` that is no port or range of ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontendPortError(String);

impl fmt::Display for FrontendPortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a port (1-65535) or a range of them (8000-8999)",
            self.0
        )
    }
}

impl FrontendPorts {
    /// From the flag's values: each a port (`80`) or a range (`8000-8999`),
    /// also several separated by commas; none means [`FrontendPorts::Any`].
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Self, FrontendPortError> {
        let mut ranges = Vec::new();
        for item in values.iter().flat_map(|v| v.as_ref().split(',')) {
            let item = item.trim();
            let bad = || FrontendPortError(item.to_owned());
            let (first, last) = item.split_once('-').unwrap_or((item, item));
            let port = |text: &str| PortNumber::parse(text.trim()).map(PortNumber::get);
            let (first, last) = (port(first).ok_or_else(bad)?, port(last).ok_or_else(bad)?);
            if first > last {
                return Err(bad());
            }
            ranges.push(first..=last);
        }
        Ok(if ranges.is_empty() {
            Self::Any
        } else {
            Self::Only(ranges)
        })
    }

    pub fn admits(&self, port: PortNumber) -> bool {
        match self {
            Self::Any => true,
            Self::Only(ranges) => ranges.iter().any(|r| r.contains(&port.get())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(n: &str) -> PortNumber {
        PortNumber::parse(n).unwrap()
    }

    #[test]
    fn ports_and_ranges() {
        let only = FrontendPorts::parse(&["80", "8000-8999, 443"]).unwrap();
        for admitted in ["80", "443", "8000", "8500", "8999"] {
            assert!(only.admits(port(admitted)), "{admitted}");
        }
        for refused in ["22", "81", "7999", "9000", "2379"] {
            assert!(!only.admits(port(refused)), "{refused}");
        }
        let none: [&str; 0] = [];
        assert_eq!(FrontendPorts::parse(&none), Ok(FrontendPorts::Any));
        assert!(FrontendPorts::Any.admits(port("22")));
    }

    #[test]
    fn anything_else_is_a_configuration_error() {
        for bad in [
            "", "0", "65536", "http", "90-80", "80-", "-80", "1-2-3", "+80",
        ] {
            assert!(FrontendPorts::parse(&[bad]).is_err(), "{bad:?}");
        }
        assert!(FrontendPorts::parse(&["80,"]).is_err());
    }
}
