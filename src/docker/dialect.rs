//! Which engine speaks behind the Docker API, and the words its event
//! stream uses. Podman's Docker-compatible API (Podman 4.3's
//! `pkg/api/handlers/compat/events.go`) answers like dockerd in most things,
//! but its event filters match Podman's own event names: `die` is `died`
//! there (renamed to `die` only on the way out) and a removed container's
//! event is `remove`, never Docker's `destroy`. Subscribing with Docker's
//! names would never see a container stop.

use std::fmt;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The engine behind the Docker API, as its version answer names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    /// dockerd (or anything that does not say it is Podman).
    #[default]
    Docker,
    /// Podman's `podman system service`.
    Podman,
}

impl Dialect {
    /// Podman lists a component named `Podman Engine` in `GET /version`;
    /// dockerd's is `Engine`.
    pub fn from_component_names<'a>(mut names: impl Iterator<Item = &'a str>) -> Self {
        if names.any(|name| name.starts_with("Podman")) {
            Dialect::Podman
        } else {
            Dialect::Docker
        }
    }

    /// The `event` filter values that select what the agent follows:
    /// container start, exit, removal, pause, unpause, network connect and
    /// disconnect and, with `health`, health checks, each in the engine's
    /// own words.
    pub fn subscribed_actions(self, health: bool) -> Vec<&'static str> {
        let (died, removed) = match self {
            Dialect::Docker => ("die", "destroy"),
            // libpod/events/config.go: `Exited Status = "died"`, `Remove`.
            Dialect::Podman => ("died", "remove"),
        };
        let mut actions = vec![
            "start",
            died,
            removed,
            "pause",
            "unpause",
            "connect",
            "disconnect",
        ];
        if self == Dialect::Docker {
            // dockerd names the signal of a `kill` (also the one `docker stop`
            // sends first): a stop signal drains the record. Podman 4.3's
            // `kill` carries no signal, and its `stop` sends none at all
            // (libpod/container_internal.go `stop`), so there is nothing to
            // drain on: its records go when the container dies.
            actions.push("kill");
        }
        if health {
            // dockerd matches this against `health_status: <status>`;
            // Podman's action is exactly `health_status`.
            actions.push("health_status");
        }
        actions
    }

    /// Whether a network event's actor is the container itself: Podman's
    /// network events (libpod/events.go, `newNetworkEvent`) carry the
    /// container's id and name and no network at all, where dockerd's actor
    /// is the network and the container an attribute.
    pub fn network_event_actor_is_container(self) -> bool {
        self == Dialect::Podman
    }

    /// Whether a `health_status` event may come before the health check it
    /// is about has a result: Podman writes it when the check's command
    /// starts (libpod/container_exec.go, `execStartAndAttach`) and stores
    /// the verdict only after the command ended (libpod/healthcheck.go,
    /// `runHealthCheck`), so an inspect on the event sees the verdict before.
    /// dockerd sends it after the verdict changed.
    pub fn health_event_precedes_verdict(self) -> bool {
        self == Dialect::Podman
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dialect::Docker => "docker",
            Dialect::Podman => "podman",
        })
    }
}

/// Whether a health check that ended at `end` (an RFC 3339 time, as in
/// `State.Health.Log[].End`) ended after the event stamped `event_nanos`
/// (nanoseconds since the epoch): then the check that event announced has
/// its result stored. An unreadable time counts as not yet.
pub fn ended_after(end: &str, event_nanos: i64) -> bool {
    OffsetDateTime::parse(end, &Rfc3339)
        .is_ok_and(|end| end.unix_timestamp_nanos() >= i128::from(event_nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn podman_is_told_by_its_version_component() {
        let podman = ["Podman Engine", "Conmon", "OCI Runtime (runc)"];
        assert_eq!(
            Dialect::from_component_names(podman.into_iter()),
            Dialect::Podman
        );
        let docker = ["Engine", "containerd", "runc", "docker-init"];
        assert_eq!(
            Dialect::from_component_names(docker.into_iter()),
            Dialect::Docker
        );
        assert_eq!(
            Dialect::from_component_names(std::iter::empty()),
            Dialect::Docker
        );
    }

    #[test]
    fn each_engine_is_asked_in_its_own_words() {
        let docker = Dialect::Docker.subscribed_actions(false);
        assert!(docker.contains(&"die") && docker.contains(&"destroy"));
        assert!(docker.contains(&"kill"));
        let podman = Dialect::Podman.subscribed_actions(true);
        assert!(podman.contains(&"died") && podman.contains(&"remove"));
        assert!(!podman.contains(&"die") && !podman.contains(&"destroy"));
        assert!(!podman.contains(&"kill"), "Podman's kill names no signal");
        assert!(podman.contains(&"health_status"));
        assert!(!Dialect::Podman
            .subscribed_actions(false)
            .contains(&"health_status"));
    }

    #[test]
    fn a_check_result_counts_once_it_ended_after_the_event() {
        // Podman's event for a check that started at 11:01:47.9 (UTC);
        // its result ended at 11:01:48.00079048.
        let event_nanos = 1_795_690_907_900_000_000;
        assert!(ended_after("2026-11-26T11:01:48.00079048Z", event_nanos));
        assert!(!ended_after("2026-11-26T11:01:47.833049994Z", event_nanos));
        assert!(!ended_after("not a time", event_nanos));
        assert!(!ended_after("", event_nanos));
    }
}
