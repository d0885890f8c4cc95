//! One test body, every engine: `on_each_engine!(body_a, body_b);` turns
//! each `fn body_a(engine: Engine)` of the test file into two tests,
//! `docker::body_a` and `podman::body_a`, run in parallel like any others.
//! The Podman ones fail, never skip, when Podman or its API service is
//! missing (`Engine::require`).

/// See the module documentation.
// Only the files whose tests run on each engine use it.
#[allow(unused_macros)]
macro_rules! on_each_engine {
    ($($body:ident),+ $(,)?) => {
        /// The bodies against Docker (`/var/run/docker.sock`, `docker` CLI).
        mod docker {
            $(
                #[test]
                fn $body() {
                    super::$body($crate::common::Engine::Docker)
                }
            )+
        }
        /// The bodies against Podman (`/run/podman/podman.sock`, `podman` CLI).
        mod podman {
            $(
                #[test]
                fn $body() {
                    super::$body($crate::common::Engine::Podman)
                }
            )+
        }
    };
}

pub(crate) use on_each_engine;
