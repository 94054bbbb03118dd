//! The parent's judgement of a child from its heartbeat ([`crate::heartbeat`]): whether it is
//! stuck, and when it would become so. Pure functions of what was read and when, so the rules
//! are tested without forking.
//!
//! Two rules, each ending in SIGKILL (which stops even a stopped process; the slot is freed
//! when the child is reaped):
//! - **Silent**: no beat for `idle_timeout` + [`Limits::grace`]. A healthy child beats every
//!   250 ms while it waits for a request, between the 1 s slices of a frame read, around every
//!   store call and after every reply, so its longest silence is one blocking step: a store call
//!   (at most the busy timeout, 10 s, waiting for the write lock) or one blocked write to the
//!   client (at most `write_timeout`). The grace exceeds both by [`STUCK_MARGIN`].
//! - **Holding the write lock**: for longer than [`WRITE_LOCK_LIMIT`], well below the 10 s every
//!   other writer (every login) waits before it fails. A write transaction takes milliseconds;
//!   one held for seconds belongs to a stopped or wedged process. Killing it rolls it back
//!   (nothing half-done stays) and the waiting login proceeds.
//!
//! Times are the parent's: a beat counts from when the parent read it, which is never earlier
//! than when it was sent, so a late read can only delay a kill, never cause one.

use std::fmt;
use std::time::{Duration, Instant};

use crate::config::ServerConfig;
use crate::heartbeat::{LOCK_RELEASED, LOCK_TAKEN};

/// Added to the longest legitimate silent step to make the grace.
pub(super) const STUCK_MARGIN: Duration = Duration::from_secs(5);
/// Longest a child may hold the database's write lock.
pub(super) const WRITE_LOCK_LIMIT: Duration = Duration::from_secs(4);

/// How long a child may stay silent, and hold the write lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Limits {
    pub(super) idle_timeout: Duration,
    pub(super) grace: Duration,
    pub(super) write_lock: Duration,
}

impl Limits {
    pub(super) fn new(config: &ServerConfig) -> Self {
        Self {
            idle_timeout: config.idle_timeout,
            grace: Self::grace(config.write_timeout),
            write_lock: WRITE_LOCK_LIMIT,
        }
    }

    /// The longest legitimate silent step (a blocked write, or a store call waiting out the
    /// busy timeout) plus [`STUCK_MARGIN`].
    pub(super) fn grace(write_timeout: Duration) -> Duration {
        write_timeout.max(forkmail_store::sqlite::BUSY_TIMEOUT) + STUCK_MARGIN
    }

    /// Longest silence before a child is killed.
    pub(super) fn silence(&self) -> Duration {
        self.idle_timeout + self.grace
    }
}

/// Why a child is being killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stuck {
    Silent { for_: Duration, limit: Duration },
    HoldingWriteLock { for_: Duration, limit: Duration },
}

impl fmt::Display for Stuck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Silent { for_, limit } => write!(
                f,
                "made no progress for {:.1} s (limit {} s: the idle timeout plus a grace); \
                 stopped or wedged",
                for_.as_secs_f64(),
                limit.as_secs()
            ),
            Self::HoldingWriteLock { for_, limit } => write!(
                f,
                "has held the database's write lock for {:.1} s (limit {} s), keeping every \
                 login waiting; its transaction is rolled back",
                for_.as_secs_f64(),
                limit.as_secs()
            ),
        }
    }
}

/// What the parent knows of one child's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Liveness {
    last_progress: Instant,
    /// Since when the child holds the write lock, as far as its beats say.
    write_lock_since: Option<Instant>,
}

impl Liveness {
    /// A child just forked counts as having made progress now.
    pub(super) fn new(now: Instant) -> Self {
        Self {
            last_progress: now,
            write_lock_since: None,
        }
    }

    /// Takes in the beats read at `now`, in the order sent.
    pub(super) fn observe(&mut self, beats: &[u8], now: Instant) {
        if beats.is_empty() {
            return;
        }
        self.last_progress = now;
        for &beat in beats {
            match beat {
                LOCK_TAKEN => self.write_lock_since = Some(now),
                LOCK_RELEASED => self.write_lock_since = None,
                _ => {}
            }
        }
    }

    /// When this child becomes stuck if nothing more is heard from it.
    pub(super) fn deadline(&self, limits: &Limits) -> Instant {
        let silent = self.last_progress + limits.silence();
        match self.write_lock_since {
            Some(since) => silent.min(since + limits.write_lock),
            None => silent,
        }
    }

    /// Whether the child is stuck at `now`, and why.
    pub(super) fn verdict(&self, now: Instant, limits: &Limits) -> Option<Stuck> {
        if let Some(since) = self.write_lock_since {
            let held = now.saturating_duration_since(since);
            if held >= limits.write_lock {
                return Some(Stuck::HoldingWriteLock {
                    for_: held,
                    limit: limits.write_lock,
                });
            }
        }
        let silent = now.saturating_duration_since(self.last_progress);
        (silent >= limits.silence()).then_some(Stuck::Silent {
            for_: silent,
            limit: limits.silence(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heartbeat::PROGRESS;

    const SECOND: Duration = Duration::from_secs(1);

    fn limits() -> Limits {
        Limits {
            idle_timeout: 2 * SECOND,
            grace: Limits::grace(SECOND),
            write_lock: WRITE_LOCK_LIMIT,
        }
    }

    #[test]
    fn the_grace_exceeds_the_busy_timeout_and_the_write_timeout() {
        assert_eq!(Limits::grace(SECOND), 15 * SECOND);
        assert_eq!(Limits::grace(30 * SECOND), 35 * SECOND);
        assert_eq!(limits().silence(), 17 * SECOND);
    }

    #[test]
    fn a_silent_child_is_stuck_after_the_idle_timeout_plus_the_grace() {
        let t0 = Instant::now();
        let mut child = Liveness::new(t0);
        let limits = limits();
        assert_eq!(child.verdict(t0 + 16 * SECOND, &limits), None);
        assert_eq!(child.deadline(&limits), t0 + 17 * SECOND);
        assert!(matches!(
            child.verdict(t0 + 17 * SECOND, &limits),
            Some(Stuck::Silent { .. })
        ));
        // Any beat puts it off again.
        child.observe(&[PROGRESS], t0 + 16 * SECOND);
        assert_eq!(child.verdict(t0 + 30 * SECOND, &limits), None);
        assert_eq!(child.deadline(&limits), t0 + 33 * SECOND);
        child.observe(&[], t0 + 32 * SECOND);
        assert_eq!(child.deadline(&limits), t0 + 33 * SECOND);
    }

    #[test]
    fn holding_the_write_lock_is_judged_by_its_own_shorter_limit() {
        let t0 = Instant::now();
        let limits = limits();
        let mut child = Liveness::new(t0);
        child.observe(&[PROGRESS, LOCK_TAKEN], t0 + SECOND);
        assert_eq!(child.deadline(&limits), t0 + 5 * SECOND);
        assert_eq!(child.verdict(t0 + 4 * SECOND, &limits), None);
        assert_eq!(
            child.verdict(t0 + 5 * SECOND, &limits),
            Some(Stuck::HoldingWriteLock {
                for_: 4 * SECOND,
                limit: WRITE_LOCK_LIMIT
            })
        );
        // Still beating does not help: the lock is what the others wait for.
        child.observe(&[PROGRESS], t0 + 4 * SECOND);
        assert!(child.verdict(t0 + 5 * SECOND, &limits).is_some());
    }

    #[test]
    fn a_lock_taken_and_released_between_two_reads_is_not_held() {
        let t0 = Instant::now();
        let limits = limits();
        let mut child = Liveness::new(t0);
        child.observe(&[LOCK_TAKEN, LOCK_RELEASED, PROGRESS], t0 + SECOND);
        assert_eq!(child.verdict(t0 + 10 * SECOND, &limits), None);
        assert_eq!(child.deadline(&limits), t0 + 18 * SECOND);
        // Released, then taken again: held since that read.
        child.observe(&[LOCK_RELEASED, LOCK_TAKEN], t0 + 2 * SECOND);
        assert_eq!(child.deadline(&limits), t0 + 6 * SECOND);
        child.observe(&[LOCK_RELEASED], t0 + 3 * SECOND);
        assert_eq!(child.verdict(t0 + 10 * SECOND, &limits), None);
    }

    #[test]
    fn the_reasons_are_words() {
        let silent = Stuck::Silent {
            for_: Duration::from_millis(17_300),
            limit: 17 * SECOND,
        };
        assert_eq!(
            silent.to_string(),
            "made no progress for 17.3 s (limit 17 s: the idle timeout plus a grace); stopped \
             or wedged"
        );
        let lock = Stuck::HoldingWriteLock {
            for_: Duration::from_millis(4_100),
            limit: 4 * SECOND,
        };
        assert!(lock.to_string().starts_with(
            "has held the database's write lock for 4.1 s (limit 4 s), keeping every login"
        ));
    }
}
