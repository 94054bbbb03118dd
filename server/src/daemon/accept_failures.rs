//! What the parent does when `accept` fails (EMFILE, ENFILE, ENOBUFS...): stop polling the
//! listener for [`BACKOFF`] instead of spinning on it, and report at most one line per
//! [`REPORT_EVERY`], saying how many failures it stands for and what to do.
//!
//! Why: below a few hundred open files `accept` fails at once while the listener stays
//! readable, so a loop that retries on every wake-up runs at 100% CPU and writes 70,000+ log
//! lines a second. Backing off leaves the CPU to the sessions already running, whose ending
//! frees the descriptors; pending hellos and children are served meanwhile.

use std::io;
use std::time::{Duration, Instant};

use nix::errno::Errno;

/// How long the listener is left alone after a failed `accept`.
pub(super) const BACKOFF: Duration = Duration::from_millis(250);
/// At most one line about failed accepts per this long.
pub(super) const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Failed accepts: the pause and the rate-limited report.
#[derive(Debug, Default)]
pub(super) struct AcceptFailures {
    /// The listener is not polled before this.
    paused_until: Option<Instant>,
    /// When a line was last written.
    reported_at: Option<Instant>,
    /// Failures not yet in a line, and when the first of them happened.
    unreported: u32,
    unreported_since: Option<Instant>,
    /// Accepts have failed since the last one that worked.
    failing: bool,
}

impl AcceptFailures {
    /// Notes a failure at `now` and pauses the listener; returns the line to log, if one is
    /// due.
    pub(super) fn failed(&mut self, err: &io::Error, now: Instant) -> Option<String> {
        self.paused_until = Some(now + BACKOFF);
        self.failing = true;
        self.unreported += 1;
        let since = *self.unreported_since.get_or_insert(now);
        if !self.report_due(now) {
            return None;
        }
        let line = failure_line(err, self.unreported, now.duration_since(since));
        self.reported(now);
        Some(line)
    }

    /// Notes an accept that worked; returns the line to log when it ends a run of failures
    /// (once a report is due, so flapping cannot flood the log either).
    pub(super) fn succeeded(&mut self, now: Instant) -> Option<String> {
        if !self.failing || !self.report_due(now) {
            return None;
        }
        let line = if self.unreported == 0 {
            "accepting connections again".to_owned()
        } else {
            format!(
                "accepting connections again (after {} more failed accept{})",
                self.unreported,
                if self.unreported == 1 { "" } else { "s" }
            )
        };
        self.failing = false;
        self.reported(now);
        Some(line)
    }

    /// Whether the listener should be left out of `poll` at `now`.
    pub(super) fn paused(&self, now: Instant) -> bool {
        self.paused_until.is_some_and(|until| now < until)
    }

    /// When the pause ends, if one is on.
    pub(super) fn resume_at(&self, now: Instant) -> Option<Instant> {
        self.paused_until.filter(|&until| now < until)
    }

    fn report_due(&self, now: Instant) -> bool {
        self.reported_at
            .is_none_or(|at| now.duration_since(at) >= REPORT_EVERY)
    }

    fn reported(&mut self, now: Instant) {
        self.reported_at = Some(now);
        self.unreported = 0;
        self.unreported_since = None;
    }
}

/// The operator's line: what failed, how often, and what to do.
fn failure_line(err: &io::Error, times: u32, over: Duration) -> String {
    let (what, fix) = match err.raw_os_error().map(Errno::from_raw) {
        Some(Errno::EMFILE) => (
            "too many open files".to_owned(),
            "raise the open-file limit (ulimit -n, or LimitNOFILE= in a systemd unit)",
        ),
        Some(Errno::ENFILE) => (
            "the system's open-file table is full".to_owned(),
            "raise fs.file-max or stop what holds the files",
        ),
        Some(Errno::ENOBUFS | Errno::ENOMEM) => (
            "out of memory for sockets".to_owned(),
            "free memory on the host",
        ),
        _ => (err.to_string(), "the server keeps retrying"),
    };
    let count = if times == 1 {
        "once".to_owned()
    } else {
        format!(
            "{times} times in the last {} s",
            over.as_secs_f64().ceil().max(1.0)
        )
    };
    format!("cannot accept connections: {what} ({count}); {fix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emfile() -> io::Error {
        io::Error::from_raw_os_error(Errno::EMFILE as i32)
    }

    #[test]
    fn a_failure_pauses_the_listener_for_the_backoff() {
        let t0 = Instant::now();
        let mut failures = AcceptFailures::default();
        assert!(!failures.paused(t0));
        assert_eq!(failures.resume_at(t0), None);
        failures.failed(&emfile(), t0);
        assert!(failures.paused(t0 + BACKOFF / 2));
        assert_eq!(failures.resume_at(t0), Some(t0 + BACKOFF));
        assert!(!failures.paused(t0 + BACKOFF));
        assert_eq!(failures.resume_at(t0 + BACKOFF), None);
    }

    #[test]
    fn failures_are_reported_once_per_period_with_how_many_were_folded_in() {
        let t0 = Instant::now();
        let mut failures = AcceptFailures::default();
        assert_eq!(
            failures.failed(&emfile(), t0).as_deref(),
            Some(
                "cannot accept connections: too many open files (once); raise the open-file \
                 limit (ulimit -n, or LimitNOFILE= in a systemd unit)"
            )
        );
        let mut lines = Vec::new();
        // One failure per backoff for 30 s: 120 failures, 3 more lines.
        for i in 1..=120 {
            if let Some(line) = failures.failed(&emfile(), t0 + BACKOFF * i) {
                lines.push(line);
            }
        }
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(
            lines[0].starts_with(
                "cannot accept connections: too many open files (40 times in the last 10 s)"
            ),
            "{}",
            lines[0]
        );
    }

    #[test]
    fn the_end_of_a_run_of_failures_is_said_once_a_report_is_due() {
        let t0 = Instant::now();
        let mut failures = AcceptFailures::default();
        assert_eq!(failures.succeeded(t0), None);
        failures.failed(&emfile(), t0);
        failures.failed(&emfile(), t0 + BACKOFF);
        // Too soon after the first line: kept for later.
        assert_eq!(failures.succeeded(t0 + 2 * BACKOFF), None);
        assert_eq!(
            failures.succeeded(t0 + REPORT_EVERY).as_deref(),
            Some("accepting connections again (after 1 more failed accept)")
        );
        assert_eq!(failures.succeeded(t0 + 3 * REPORT_EVERY), None);
    }

    #[test]
    fn other_errors_are_named_as_they_are() {
        let line = failure_line(
            &io::Error::from_raw_os_error(Errno::ENFILE as i32),
            3,
            Duration::from_millis(2_500),
        );
        assert_eq!(
            line,
            "cannot accept connections: the system's open-file table is full (3 times in the \
             last 3 s); raise fs.file-max or stop what holds the files"
        );
    }
}
