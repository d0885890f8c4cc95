//! Who owns a host (docs/host-lock.md: One agent per host), as a pure rule: given the
//! lock's holder, what this agent does about the lock.
//!
//! An agent is the engine it follows (`engine::EngineIdentity`) plus its
//! host IP and prefix (the lock's name). Two agents of one engine are runs
//! of one agent: a new run takes over at once (a crash, an upgrade, a
//! restart elsewhere), unless the holder is seen alive on this machine (a
//! second agent started beside it, which stands by). Two agents of
//! different engines claiming one host IP are a conflict: never a hand-over,
//! which would delete the records of the other engine's live containers.

use crate::engine::EngineIdentity;
use crate::store::{Holder, HolderRun};

/// Whether this run may take the host from a holder of its own engine whose
/// process it cannot see (a new run of it in another container, on a machine
/// renamed): a new run takes over at once; a run that such a run took the
/// host from stands by, so that two live runs never take it in turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Succession {
    TakesOver,
    StandsBy,
}

/// Which engine this run follows, as far as it knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineSeen {
    /// The engine has not answered yet.
    NotYet,
    /// It has not answered, but the host's holder is a previous run of ours
    /// on this machine (same `--docker-host`) that is gone: its engine is
    /// taken for ours, so that the host is taken over and the records on
    /// its lease kept alive meanwhile.
    Assumed(EngineIdentity),
    /// The engine said so.
    Answered(EngineIdentity),
}

impl EngineSeen {
    pub fn identity(&self) -> Option<&EngineIdentity> {
        match self {
            EngineSeen::NotYet => None,
            EngineSeen::Assumed(identity) | EngineSeen::Answered(identity) => Some(identity),
        }
    }
}

/// What to do about the host lock, given its holder.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// Campaign: win at once if nobody holds it, else wait for the holder.
    Campaign,
    /// The holder is a run of ours that is gone, or a previous run of our
    /// engine: remove its lock key, then campaign (its records move onto our
    /// lease in place).
    TakeOver(Holder),
    /// An agent of another engine holds the host.
    Conflict(Holder),
}

/// The rules of who owns a host (docs/host-lock.md: One agent per host), pure.
/// `docker_host` is ours: a gone run of this machine that followed it is a
/// previous run of ours even if the engine there is another one now (a
/// reinstalled dockerd with a new ID).
pub fn claim(
    holder: Option<Holder>,
    ours: &EngineIdentity,
    docker_host: &str,
    run: HolderRun,
    succession: Succession,
) -> Claim {
    let Some(holder) = holder else {
        return Claim::Campaign;
    };
    let our_socket = !holder.docker_host.is_empty() && holder.docker_host == docker_host;
    match (&holder.engine, run) {
        (Some(_), HolderRun::Gone) if our_socket => Claim::TakeOver(holder),
        (Some(engine), _) if engine != ours => Claim::Conflict(holder),
        (_, HolderRun::Gone) => Claim::TakeOver(holder),
        (_, HolderRun::AliveHere) => Claim::Campaign,
        (Some(_), HolderRun::Unknown) if succession == Succession::TakesOver => {
            Claim::TakeOver(holder)
        }
        // An older agent, whose engine is not known, or one we gave way to.
        (_, HolderRun::Unknown) => Claim::Campaign,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(engine: Option<&str>) -> Holder {
        Holder {
            key: "/docker-etcd-register/agents/registered/10.0.0.5/1".into(),
            lease: 1,
            hostname: "h".into(),
            pid: 7,
            boot_id: "b".into(),
            started: 9,
            pid_ns: "pid:[4026531836]".into(),
            docker_host: "unix:///var/run/docker.sock".into(),
            engine: engine.map(|e| EngineIdentity::parse(e).unwrap()),
        }
    }

    const OURS: &str = "docker:AAAA";

    fn decide(holder: Option<Holder>, run: HolderRun, succession: Succession) -> Claim {
        claim(
            holder,
            &EngineIdentity::parse(OURS).unwrap(),
            "unix:///run/podman/podman.sock",
            run,
            succession,
        )
    }

    #[test]
    fn a_gone_run_on_our_socket_is_ours_whatever_engine_it_named() {
        let reinstalled = holder(Some("docker:BBBB"));
        let ours = EngineIdentity::parse(OURS).unwrap();
        let socket = reinstalled.docker_host.clone();
        assert_eq!(
            claim(
                Some(reinstalled.clone()),
                &ours,
                &socket,
                HolderRun::Gone,
                Succession::TakesOver
            ),
            Claim::TakeOver(reinstalled.clone())
        );
        for run in [HolderRun::AliveHere, HolderRun::Unknown] {
            assert_eq!(
                claim(
                    Some(reinstalled.clone()),
                    &ours,
                    &socket,
                    run,
                    Succession::TakesOver
                ),
                Claim::Conflict(reinstalled.clone()),
                "{run:?}: alive, or not to be seen, it is another engine's"
            );
        }
    }

    #[test]
    fn nobody_holding_is_a_campaign() {
        for run in [HolderRun::Gone, HolderRun::AliveHere, HolderRun::Unknown] {
            assert_eq!(decide(None, run, Succession::TakesOver), Claim::Campaign);
        }
    }

    #[test]
    fn another_engine_is_a_conflict_whatever_its_process() {
        for run in [HolderRun::Gone, HolderRun::AliveHere, HolderRun::Unknown] {
            for succession in [Succession::TakesOver, Succession::StandsBy] {
                let other = holder(Some("podman:m:/var/lib/containers"));
                assert_eq!(
                    decide(Some(other.clone()), run, succession),
                    Claim::Conflict(other)
                );
            }
        }
    }

    #[test]
    fn our_engine_is_taken_over_unless_seen_alive_here_or_we_gave_way() {
        let ours = holder(Some(OURS));
        let take = Claim::TakeOver(ours.clone());
        assert_eq!(
            decide(Some(ours.clone()), HolderRun::Gone, Succession::TakesOver),
            take
        );
        assert_eq!(
            decide(Some(ours.clone()), HolderRun::Gone, Succession::StandsBy),
            take
        );
        assert_eq!(
            decide(
                Some(ours.clone()),
                HolderRun::Unknown,
                Succession::TakesOver
            ),
            take
        );
        assert_eq!(
            decide(Some(ours.clone()), HolderRun::Unknown, Succession::StandsBy),
            Claim::Campaign
        );
        assert_eq!(
            decide(Some(ours), HolderRun::AliveHere, Succession::TakesOver),
            Claim::Campaign
        );
    }

    #[test]
    fn an_older_agent_that_names_no_engine_is_taken_over_only_when_gone() {
        let legacy = holder(None);
        assert_eq!(
            decide(Some(legacy.clone()), HolderRun::Gone, Succession::StandsBy),
            Claim::TakeOver(legacy.clone())
        );
        for run in [HolderRun::AliveHere, HolderRun::Unknown] {
            assert_eq!(
                decide(Some(legacy.clone()), run, Succession::TakesOver),
                Claim::Campaign
            );
        }
    }
}
