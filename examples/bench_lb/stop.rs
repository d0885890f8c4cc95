//! Ctrl-C and SIGTERM: noted, so that every wait of the benchmark ends and
//! everything it started is removed on the way out. The proxies run in
//! process groups of their own (so that a reload's new workers are killed
//! with the old ones), which Ctrl-C at the terminal does not reach: dying at
//! once would leave them listening.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Result};
use tokio::signal::unix::{signal, SignalKind};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Notes SIGINT and SIGTERM from now on, on the rig's runtime.
pub fn install() -> Result<()> {
    let runtime = rig::runtime();
    let _guard = runtime.enter();
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    runtime.spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        crate::progress("interrupted: cleaning up");
        INTERRUPTED.store(true, Ordering::SeqCst);
    });
    Ok(())
}

/// An error once interrupted.
pub fn check() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}
