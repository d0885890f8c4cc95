//! `list`'s flags and their validation.

use std::net::IpAddr;

use clap::Args;

use super::{flag_error, ConfigError, EtcdTarget};
use crate::listing::Filter;
use crate::record::HostPrefix;

#[derive(Debug, Args)]
pub(super) struct ListArgs {
    /// Only the records of this host (its --host-ip).
    #[arg(long, value_name = "IP")]
    host: Option<String>,

    /// Only this image, in any familiar form (`busybox`, `docker.io/library/busybox:latest`);
    /// without a tag, every tag of it.
    #[arg(long, value_name = "NAME")]
    image: Option<String>,

    /// Only this service (the `docker-etcd-register.service` label, else the image's key segment);
    /// repeat it for several.
    #[arg(long, value_name = "NAME")]
    service: Vec<String>,

    /// One JSON array (one object per published port) instead of a table.
    #[arg(long)]
    json: bool,

    /// Keep running and print the whole list again whenever it changes.
    #[arg(long)]
    watch: bool,
}

/// The validated configuration of `list`.
#[derive(Debug, Clone)]
pub struct ListConfig {
    pub etcd: EtcdTarget,
    /// The root of all keys, with a trailing `/` (`/registered/`).
    pub root: String,
    /// What to read: one host's prefix when filtered by host (so
    /// `10.0.0.1` never reads `10.0.0.10`), else the whole root.
    pub read_prefix: String,
    pub filter: Filter,
    pub json: bool,
    pub watch: bool,
}

/// The names given, without blank ones (an unset variable in a unit file).
pub(super) fn nonblank(names: Vec<String>) -> Vec<String> {
    names.into_iter().filter(|s| !s.trim().is_empty()).collect()
}

impl ListArgs {
    /// The validated configuration, reading under `root` (with its trailing
    /// `/`) from `etcd`.
    pub(super) fn into_config(
        self,
        etcd: EtcdTarget,
        root: String,
    ) -> Result<ListConfig, ConfigError> {
        let host = self
            .host
            .as_deref()
            .map(|text| {
                text.trim()
                    .parse::<IpAddr>()
                    .map_err(|_| flag_error("--host", format!("{text:?} is not an IP address")))
            })
            .transpose()?;
        let read_prefix = host.map_or_else(
            || root.clone(),
            |ip| HostPrefix::new(&root, ip).as_str().to_owned(),
        );
        Ok(ListConfig {
            etcd,
            root,
            read_prefix,
            filter: Filter {
                host,
                image: self.image.filter(|i| !i.trim().is_empty()),
                services: nonblank(self.service),
            },
            json: self.json,
            watch: self.watch,
        })
    }
}
