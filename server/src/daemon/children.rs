//! The session processes the parent has forked: how many hold a slot, signalling them, reading
//! their heartbeats and killing the stuck ones ([`super::liveness`] decides), and reaping them.
//! Never blocks unless asked to.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tracing::{debug, warn};

use super::liveness::{Limits, Liveness};
use crate::heartbeat::Monitor;

use crate::logging;

/// One forked session process.
pub(super) struct Child {
    pub(super) started: Instant,
    /// The client it serves, for the operator when it has to be killed.
    pub(super) peer: SocketAddr,
    /// Whose session it is (the hello's signature verified): counted against
    /// `--max-sessions-per-user`.
    pub(super) user: String,
    /// The read end of its heartbeat pipe.
    pub(super) heartbeat: Monitor,
    pub(super) liveness: Liveness,
    /// SIGKILL sent because it was stuck: not judged again; its slot is freed once reaped.
    pub(super) killed: bool,
}

impl Child {
    pub(super) fn new(peer: SocketAddr, user: String, heartbeat: Monitor) -> Self {
        let now = Instant::now();
        Self {
            started: now,
            peer,
            user,
            heartbeat,
            liveness: Liveness::new(now),
            killed: false,
        }
    }
}

/// Every session process still alive (or not yet reaped). Each one holds a slot.
#[derive(Default)]
pub(super) struct Children {
    by_pid: HashMap<Pid, Child>,
    /// The WAL keeper ([`crate::keeper`]), which holds no slot; `None` once it has exited.
    keeper: Option<Pid>,
}

impl Children {
    pub(super) fn len(&self) -> usize {
        self.by_pid.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.by_pid.is_empty()
    }

    /// How many sessions `user` holds.
    pub(super) fn sessions_of(&self, user: &str) -> usize {
        self.by_pid.values().filter(|c| c.user == user).count()
    }

    pub(super) fn insert(&mut self, pid: Pid, child: Child) {
        self.by_pid.insert(pid, child);
    }

    /// In a freshly forked child: the siblings are not ours to track.
    pub(super) fn clear(&mut self) {
        self.by_pid.clear();
        self.keeper = None;
    }

    pub(super) fn keeper(&self) -> Option<Pid> {
        self.keeper
    }

    pub(super) fn set_keeper(&mut self, pid: Option<Pid>) {
        self.keeper = pid;
    }

    pub(super) fn signal_all(&self, signal: Signal) {
        for pid in self.by_pid.keys() {
            let _ = kill(*pid, signal);
        }
    }

    /// Reads every child's heartbeat, then kills those that are stuck at `now`.
    pub(super) fn check(&mut self, now: Instant, limits: &Limits) {
        for (pid, child) in &mut self.by_pid {
            if child.killed {
                continue;
            }
            let beats = child.heartbeat.drain();
            child.liveness.observe(&beats, now);
            if let Some(stuck) = child.liveness.verdict(now, limits) {
                warn!(
                    pid = pid.as_raw(),
                    peer = %child.peer,
                    user = %child.user,
                    "killing session process {pid} (user {}, client {}): it {stuck}; its slot is \
                     freed once it has exited",
                    child.user,
                    child.peer
                );
                let _ = kill(*pid, Signal::SIGKILL);
                child.killed = true;
            }
        }
    }

    /// When the next child becomes stuck if none of them beats again.
    pub(super) fn next_check(&self, limits: &Limits) -> Option<Instant> {
        self.by_pid
            .values()
            .filter(|child| !child.killed)
            .map(|child| child.liveness.deadline(limits))
            .min()
    }

    /// Collects every child that has exited. Never blocks.
    pub(super) fn reap(&mut self) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => self.forget(status),
            }
        }
    }

    /// Waits for one child to exit.
    pub(super) fn reap_blocking(&mut self) {
        match waitpid(None, None) {
            Ok(status) => self.forget(status),
            Err(_) => self.by_pid.clear(),
        }
    }

    /// A pid that is not a session's is the logger's, or nobody's (the store check and the
    /// start-up key load are reaped where they are forked; a later key loader's end is read
    /// from its pipe): [`logging::reaped`] decides.
    fn forget(&mut self, status: WaitStatus) {
        if let Some(pid) = status.pid() {
            match self.by_pid.remove(&pid) {
                Some(child) => debug!(
                    pid = pid.as_raw(),
                    secs = child.started.elapsed().as_secs_f32(),
                    "session process {}",
                    logging::exit_words(&status)
                ),
                None if Some(pid) == self.keeper => {
                    self.keeper = None;
                    warn!(
                        pid = pid.as_raw(),
                        "the WAL keeper process {pid} {}; starting a new one",
                        logging::exit_words(&status)
                    );
                }
                None => {
                    logging::reaped(pid, &status);
                }
            }
        }
    }
}
