//! Signal handling without threads, so the parent may fork safely.
//!
//! The parent: SIGCHLD, SIGTERM, SIGINT and SIGHUP each write a byte to a self-pipe that `poll`
//! watches (signal-hook's `pipe` action); SIGTERM/SIGINT also set the termination flag and
//! SIGHUP its own, so SIGHUP never stops the server (its default action would). A child:
//! SIGINT and SIGHUP are ignored (a Ctrl-C at the terminal, or the terminal closing, reaches the
//! whole process group; the parent decides what happens to sessions), SIGTERM sets the child's
//! shutdown flag, checked between requests, and the parent's registrations are removed.

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nix::sys::signal::{signal, SigHandler, Signal};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
use signal_hook::SigId;

pub struct ParentSignals {
    wake: UnixStream,
    terminate: Arc<AtomicBool>,
    hangup: Arc<AtomicBool>,
    ids: Vec<SigId>,
}

impl ParentSignals {
    pub fn install() -> io::Result<Self> {
        let (wake, notify) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        notify.set_nonblocking(true)?;
        let terminate = Arc::new(AtomicBool::new(false));
        let mut ids = Vec::new();
        for sig in [SIGTERM, SIGINT] {
            ids.push(signal_hook::flag::register(sig, Arc::clone(&terminate))?);
        }
        let hangup = Arc::new(AtomicBool::new(false));
        ids.push(signal_hook::flag::register(SIGHUP, Arc::clone(&hangup))?);
        for sig in [SIGCHLD, SIGTERM, SIGINT, SIGHUP] {
            ids.push(signal_hook::low_level::pipe::register(
                sig,
                notify.try_clone()?,
            )?);
        }
        Ok(Self {
            wake,
            terminate,
            hangup,
            ids,
        })
    }

    /// The descriptor `poll` watches for signals.
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Empties the self-pipe after a wake-up.
    pub fn drain(&self) {
        let mut buf = [0u8; 64];
        while matches!((&self.wake).read(&mut buf), Ok(n) if n > 0) {}
    }

    /// Whether SIGTERM or SIGINT arrived since the last call.
    pub fn take_termination(&self) -> bool {
        self.terminate.swap(false, Ordering::Relaxed)
    }

    /// Whether SIGHUP arrived since the last call (an operator asking for a reload).
    pub fn take_hangup(&self) -> bool {
        self.hangup.swap(false, Ordering::Relaxed)
    }
}

/// Replaces the parent's signal set-up in a freshly forked child.
pub fn install_child(parent: &ParentSignals, shutdown: Arc<AtomicBool>) -> io::Result<()> {
    for id in &parent.ids {
        signal_hook::low_level::unregister(*id);
    }
    // SAFETY: setting a disposition to SIG_IGN/SIG_DFL installs no handler code.
    unsafe {
        signal(Signal::SIGINT, SigHandler::SigIgn).map_err(io::Error::from)?;
        signal(Signal::SIGHUP, SigHandler::SigIgn).map_err(io::Error::from)?;
        signal(Signal::SIGCHLD, SigHandler::SigDfl).map_err(io::Error::from)?;
    }
    signal_hook::flag::register(SIGTERM, shutdown)?;
    Ok(())
}
