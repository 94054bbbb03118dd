//! The report's sections: each measurement turned into rows, and each row held to its target
//! from the performance issue. Kept apart from [`super::suite`] so that what is measured and
//! how it is judged can be read (and changed) separately.

use super::report::{Row, Section, Target, Unit};
use super::scenarios::Throughput;
use super::stats::Samples;
use super::suite::{LOW_ITERATIONS, PACE, PRODUCTION_ITERATIONS, SESSION_INBOX};
use crate::procfs::Memory;

/// Targets from the performance issue.
const TARGET_SESSION_MS: f64 = 5.0;
const TARGET_SESSIONS_PER_SECOND_AT_5: f64 = 200.0;
const TARGET_SEND_1M_MS: f64 = 10.0;
const TARGET_INBOX_10K_MS: f64 = 15.0;
const TARGET_READ_RATIO: f64 = 1.5;
const TARGET_CHILD_MIB: f64 = 10.0;

/// Listing, reading and child memory for one preloaded mailbox.
pub(super) struct Mailbox {
    pub size: usize,
    pub listing: Samples,
    pub child: Memory,
    /// Every mail id in the inbox, in listing order.
    pub ids: Vec<u64>,
    /// First reads (the mail is unread, so the server also marks it read).
    pub reads: Samples,
    /// The same mails read again: nothing to write, so only the lookup and transfer.
    pub rereads: Samples,
}

pub(super) fn session_section(production: &Samples, (low, paced): &(Samples, Samples)) -> Section {
    let n = |s: &Samples| format!("n={}", s.len());
    let production_label = format!(
        "production cost (PBKDF2 {})",
        thousands(PRODUCTION_ITERATIONS as usize)
    );
    let low_label = format!(
        "low cost (PBKDF2 {}): protocol only",
        thousands(LOW_ITERATIONS as usize)
    );
    Section {
        title: format!(
            "Session latency: connect, handshake, log in, list an inbox of {SESSION_INBOX}, \
             quit; one at a time"
        ),
        rows: vec![
            Row::new(
                format!("p50, {production_label}"),
                production.p50(),
                Unit::Ms,
            )
            .note(n(production)),
            Row::new(
                format!("p99, {production_label}"),
                production.p99(),
                Unit::Ms,
            )
            .note(n(production)),
            Row::new(format!("p50, {low_label}"), low.p50(), Unit::Ms)
                .target(Target::AtMost(TARGET_SESSION_MS))
                .note(n(low)),
            Row::new(format!("p99, {low_label}"), low.p99(), Unit::Ms).note(n(low)),
            Row::new(
                format!("p50, low cost, {} ms apart", PACE.as_millis()),
                paced.p50(),
                Unit::Ms,
            )
            .note(format!(
                "{}, p99 {:.2} ms; no overlap with the previous session's exit",
                n(paced),
                paced.p99()
            )),
        ],
    }
}

pub(super) fn throughput_section(rates: &[Throughput]) -> Section {
    let rows = rates
        .iter()
        .map(|t| {
            let mut row = Row::new(
                format!("concurrency {}", t.concurrency),
                t.per_second(),
                Unit::PerSecond,
            )
            .note(format!(
                "{} sessions in {:.1} s, latency p50 {:.1} ms p99 {:.1} ms{}",
                t.completed,
                t.elapsed.as_secs_f64(),
                t.latency.p50(),
                t.latency.p99(),
                match (&t.first_failure, t.failures) {
                    (Some(why), n) => format!(", {n} failed: {why}"),
                    (None, _) => String::new(),
                }
            ));
            if t.concurrency == 5 {
                row = row.target(Target::AtLeast(TARGET_SESSIONS_PER_SECOND_AT_5));
            }
            row
        })
        .collect();
    Section {
        title: "Sessions per second (low cost; threads running sessions back to back; server \
                serves 5 at once)"
            .into(),
        rows,
    }
}

/// Send latencies per body size, and reads of the largest mail sent.
pub(super) struct Sends {
    pub sends: Vec<(usize, Samples)>,
    pub largest_chars: usize,
    pub fetches: Samples,
}

pub(super) fn send_section(sends: &Sends) -> Section {
    let mut rows = Vec::new();
    for (chars, samples) in &sends.sends {
        let p50 = samples.p50();
        let mut latency = Row::new(
            format!("send {} characters: p50", thousands(*chars)),
            p50,
            Unit::Ms,
        )
        .note(format!("p99 {:.2} ms, n={}", samples.p99(), samples.len()));
        if *chars == 1_000_000 {
            latency = latency.target(Target::AtMost(TARGET_SEND_1M_MS));
        }
        rows.push(latency);
        rows.push(
            Row::new(
                format!("send {} characters: body rate", thousands(*chars)),
                *chars as f64 / 1e6 / (p50 / 1000.0),
                Unit::MegabytesPerSecond,
            )
            .note("body bytes / p50"),
        );
        rows.push(
            Row::new(
                format!("send {} characters: sends per second", thousands(*chars)),
                1000.0 / samples.mean(),
                Unit::PerSecond,
            )
            .note("one client, one after another: 1 / mean"),
        );
    }
    let fetches = &sends.fetches;
    rows.push(
        Row::new(
            format!(
                "read one {}-character mail: p50",
                thousands(sends.largest_chars)
            ),
            fetches.p50(),
            Unit::Ms,
        )
        .note(format!(
            "p99 {:.2} ms, n={}, includes marking it read",
            fetches.p99(),
            fetches.len()
        )),
    );
    Section {
        title: "Send (one open session, to one recipient; ends when the server acknowledges \
                the durable commit) and fetch"
            .into(),
        rows,
    }
}

pub(super) fn inbox_section(mailboxes: &[Mailbox]) -> Section {
    let rows = mailboxes
        .iter()
        .map(|m| {
            let row = Row::new(
                format!("list an inbox of {}: p50", thousands(m.size)),
                m.listing.p50(),
                Unit::Ms,
            )
            .note(format!(
                "p99 {:.2} ms, n={}",
                m.listing.p99(),
                m.listing.len()
            ));
            if m.size == 10_000 {
                row.target(Target::AtMost(TARGET_INBOX_10K_MS))
            } else {
                row
            }
        })
        .collect();
    Section {
        title: "Inbox listing (within an open session; every page received and decoded)".into(),
        rows,
    }
}

pub(super) fn read_section(mailboxes: &[Mailbox]) -> Section {
    let smallest = mailboxes.iter().min_by_key(|m| m.size);
    let largest = mailboxes.iter().max_by_key(|m| m.size);
    let mut rows = Vec::new();
    for again in [false, true] {
        fn samples(m: &Mailbox, again: bool) -> &Samples {
            if again {
                &m.rereads
            } else {
                &m.reads
            }
        }
        let what = if again {
            "read again (no write)"
        } else {
            "read unread"
        };
        for m in mailboxes {
            let s = samples(m, again);
            rows.push(
                Row::new(
                    format!("{what}, inbox of {}: p50", thousands(m.size)),
                    s.p50(),
                    Unit::Ms,
                )
                .note(format!("p99 {:.2} ms, n={}", s.p99(), s.len())),
            );
        }
        if let (Some(small), Some(large)) = (smallest, largest) {
            let ratio = Row::new(
                format!(
                    "{what}: {} / {}",
                    thousands(large.size),
                    thousands(small.size)
                ),
                samples(large, again).p50() / samples(small, again).p50(),
                Unit::Ratio,
            )
            .note("ratio of p50s");
            rows.push(if again {
                ratio
            } else {
                ratio.target(Target::AtMost(TARGET_READ_RATIO))
            });
        }
    }
    Section {
        title: "Read one mail (within an open session; the mailboxes are read in turn so drift \
                hits all sizes alike; a first read also marks the mail read, durably)"
            .into(),
        rows,
    }
}

pub(super) fn memory_section(parent: Memory, sessions: usize, mailboxes: &[Mailbox]) -> Section {
    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut rows = vec![
        Row::new("server parent VmRSS", mib(parent.rss_kib), Unit::Mebibytes).note(format!(
            "after {} low-cost sessions, the throughput runs, sends and reads; peak {:.1} MiB",
            thousands(sessions),
            mib(parent.peak_kib)
        )),
    ];
    for m in mailboxes {
        rows.push(
            Row::new(
                format!(
                    "session child VmRSS, idle after listing {}",
                    thousands(m.size)
                ),
                mib(m.child.rss_kib),
                Unit::Mebibytes,
            )
            .target(Target::AtMost(TARGET_CHILD_MIB))
            .note(format!("peak (VmHWM) {:.1} MiB", mib(m.child.peak_kib))),
        );
    }
    Section {
        title: "Resident memory (from /proc; shared pages counted in full)".into(),
        rows,
    }
}

/// `100000` as `100,000`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }
}
