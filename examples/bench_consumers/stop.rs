//! Ctrl-C and SIGTERM: noted, so that every wait of the benchmark ends and
//! everything it started is removed on the way out (etcd and its data, the
//! render daemon, temporary files), instead of the process dying at once.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Result};
use tokio::signal::unix::{signal, SignalKind};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Notes SIGINT and SIGTERM from now on, on `rt`.
pub fn install(rt: &tokio::runtime::Runtime) -> Result<()> {
    let _guard = rt.enter();
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    rt.spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        crate::progress("interrupted: cleaning up");
        INTERRUPTED.store(true, Ordering::SeqCst);
    });
    Ok(())
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// An error once interrupted.
pub fn check() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}
