//! The timed loops. Each one drives real [`Session`]s against a running server and returns raw
//! samples; choosing counts and targets is the suite's business.
//!
//! What is inside a timing is stated on each function, because it decides what a figure means:
//! a session includes the TCP connect and everything up to the `Goodbye`; a request timing starts
//! when the request is sealed and ends when the last response frame is opened, so it includes the
//! client's own encoding and decryption but never the login.

use std::sync::{Barrier, OnceLock};
use std::time::{Duration, Instant};

use forkmail_client::{ConnectOptions, Session};
use forkmail_protocol::messages::Draft;

use super::setup::ascii_body;
use super::stats::{repeat, Samples};
use super::BenchError;

/// One whole session: connect, handshake, log in, list the inbox, quit (waiting for Goodbye).
/// Returns the number of inbox entries.
pub fn one_session(options: &ConnectOptions) -> Result<usize, BenchError> {
    let mut session = Session::connect(options).map_err(BenchError::client("logging in"))?;
    let entries = session
        .inbox()
        .map_err(BenchError::client("listing the inbox"))?
        .len();
    session.quit().map_err(BenchError::client("logging out"))?;
    Ok(entries)
}

/// Latency of `count` sessions run one after another, after `warmup` untimed ones, with an
/// untimed `pause` before each. Back to back (`pause` zero), a session may wait for work the
/// server still does for the one before (its child exiting); paced, it meets an idle server, as
/// a lone user would.
pub fn session_latency(
    options: &ConnectOptions,
    warmup: usize,
    count: usize,
    pause: Duration,
) -> Result<Samples, BenchError> {
    for _ in 0..warmup {
        one_session(options)?;
    }
    let mut samples = Samples::with_capacity(count);
    for _ in 0..count {
        std::thread::sleep(pause);
        let started = Instant::now();
        one_session(options)?;
        samples.push(started.elapsed());
    }
    Ok(samples)
}

/// What a closed-loop throughput run achieved.
#[derive(Debug)]
pub struct Throughput {
    pub concurrency: usize,
    /// Operations (sessions, or sends) that completed.
    pub completed: usize,
    pub failures: usize,
    /// The first failure, to explain a non-zero `failures`.
    pub first_failure: Option<String>,
    pub elapsed: Duration,
    /// Latency of every completed operation.
    pub latency: Samples,
}

impl Throughput {
    pub fn per_second(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64()
    }
}

/// `concurrency` threads each run whole sessions ([`one_session`]) back to back until
/// `duration` has passed; the rate is completed sessions over the time until the last thread
/// finished its last session.
pub fn throughput(
    options: &ConnectOptions,
    concurrency: usize,
    duration: Duration,
) -> Result<Throughput, BenchError> {
    closed_loop(
        concurrency,
        duration,
        || Ok(()),
        |()| one_session(options).map(drop),
        |()| Ok(()),
        || (),
    )
}

/// `concurrency` threads each log in once (untimed), then send `body_chars`-character mails to
/// `to` back to back in that session until `duration` has passed, then quit. The clock starts
/// once every thread is logged in; `on_open` runs at that moment (to see where the sessions
/// landed). Each send ends with the durable commit, as in [`send_latency`].
pub fn send_throughput(
    options: &ConnectOptions,
    concurrency: usize,
    duration: Duration,
    to: &str,
    body_chars: usize,
    on_open: impl FnOnce(),
) -> Result<Throughput, BenchError> {
    let draft = Draft {
        to: vec![to.to_owned()],
        title: format!("benchmark body of {body_chars} characters"),
        body: ascii_body(body_chars, 0),
    };
    closed_loop(
        concurrency,
        duration,
        || Session::connect(options).map_err(BenchError::client("logging in")),
        |session: &mut Session| {
            session
                .send(&draft)
                .map(drop)
                .map_err(BenchError::client(format!(
                    "sending {body_chars} characters"
                )))
        },
        |session| session.quit().map_err(BenchError::client("logging out")),
        on_open,
    )
}

/// The closed loop under [`throughput`] and [`send_throughput`]: `concurrency` threads each
/// `open` a state (untimed), wait for one another, then run `step` on it back to back until
/// `duration` has passed since they all were ready, and `close` it (untimed). A failed step is
/// counted and its state opened afresh, as a client would log in again. The rate is completed
/// steps over the time from the start to the last thread's last step.
fn closed_loop<S>(
    concurrency: usize,
    duration: Duration,
    open: impl Fn() -> Result<S, BenchError> + Sync,
    step: impl Fn(&mut S) -> Result<(), BenchError> + Sync,
    close: impl Fn(S) -> Result<(), BenchError> + Sync,
    on_open: impl FnOnce(),
) -> Result<Throughput, BenchError> {
    struct Worker {
        latency: Samples,
        failures: usize,
        first_failure: Option<String>,
        /// When its last step ended.
        done: Instant,
    }
    let ready = Barrier::new(concurrency + 1);
    let start: OnceLock<Instant> = OnceLock::new();
    let (open, step, close, ready, start) = (&open, &step, &close, &ready, &start);
    let (per_thread, started) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                scope.spawn(move || -> Result<Worker, BenchError> {
                    let opened = open();
                    // Everyone waits, even a thread whose open failed, or the rest would hang.
                    ready.wait();
                    let mut state = opened?;
                    let deadline = *start.get_or_init(Instant::now) + duration;
                    let mut worker = Worker {
                        latency: Samples::default(),
                        failures: 0,
                        first_failure: None,
                        done: Instant::now(),
                    };
                    while Instant::now() < deadline {
                        let begun = Instant::now();
                        let outcome = step(&mut state);
                        worker.done = Instant::now();
                        match outcome {
                            Ok(()) => worker.latency.push(worker.done - begun),
                            Err(err) => {
                                worker.failures += 1;
                                worker.first_failure.get_or_insert_with(|| err.to_string());
                                state = open()?;
                            }
                        }
                    }
                    close(state)?;
                    Ok(worker)
                })
            })
            .collect();
        ready.wait();
        let started = *start.get_or_init(Instant::now);
        on_open();
        let results: Vec<_> = workers
            .into_iter()
            .map(|w| w.join().expect("a benchmark thread panicked"))
            .collect();
        (results, started)
    });
    let mut result = Throughput {
        concurrency,
        completed: 0,
        failures: 0,
        first_failure: None,
        elapsed: Duration::ZERO,
        latency: Samples::default(),
    };
    for worker in per_thread {
        let worker = worker?;
        result.elapsed = result
            .elapsed
            .max(worker.done.saturating_duration_since(started));
        result.completed += worker.latency.len();
        result.failures += worker.failures;
        if result.first_failure.is_none() {
            result.first_failure = worker.first_failure;
        }
        result.latency.extend(worker.latency);
    }
    if result.completed == 0 {
        return Err(BenchError::Check(format!(
            "nothing completed at concurrency {concurrency}: {}",
            result
                .first_failure
                .as_deref()
                .unwrap_or("no attempt was made")
        )));
    }
    Ok(result)
}

/// Latency of `count` sends of a `body_chars`-character ASCII body to `to` in an open session,
/// after `warmup` untimed ones; returns the samples and the ids of the timed mails. Each timing
/// ends when the server's `Sent` arrives, which it sends only once the transaction is committed
/// and the WAL fsynced (group commit).
pub fn send_latency(
    session: &mut Session,
    to: &str,
    body_chars: usize,
    warmup: usize,
    count: usize,
) -> Result<(Samples, Vec<u64>), BenchError> {
    let draft = Draft {
        to: vec![to.to_owned()],
        title: format!("benchmark body of {body_chars} characters"),
        body: ascii_body(body_chars, 0),
    };
    let mut send = |_| {
        session.send(&draft).map_err(BenchError::client(format!(
            "sending {body_chars} characters"
        )))
    };
    for i in 0..warmup {
        send(i)?;
    }
    let mut ids = Vec::with_capacity(count);
    let samples = repeat(count, |i| send(i).map(|id| ids.push(id)))?;
    Ok((samples, ids))
}

/// Latency of `count` inbox listings in an open session (every page read and decoded), after
/// `warmup` untimed ones. Returns the samples and the ids of the inbox, after checking that it
/// holds `expected` entries.
pub fn inbox_latency(
    session: &mut Session,
    expected: usize,
    warmup: usize,
    count: usize,
) -> Result<(Samples, Vec<u64>), BenchError> {
    let mut ids = Vec::new();
    let mut list = |_| -> Result<(), BenchError> {
        let entries = session
            .inbox()
            .map_err(BenchError::client("listing the inbox"))?;
        if entries.len() != expected {
            return Err(BenchError::Check(format!(
                "the inbox holds {} entries, {expected} were preloaded",
                entries.len()
            )));
        }
        ids = entries.iter().map(|e| e.id).collect();
        Ok(())
    };
    for i in 0..warmup.max(1) {
        list(i)?;
    }
    let samples = repeat(count, list)?;
    Ok((samples, ids))
}

/// Latency of reading each of `ids` once in an open session, checking every body has
/// `body_chars` characters. Unread mail is marked read, so each timing includes that durable
/// update as a user's first read of a mail does.
pub fn read_latency(
    session: &mut Session,
    ids: &[u64],
    body_chars: usize,
) -> Result<Samples, BenchError> {
    let mut samples = Samples::with_capacity(ids.len());
    for &id in ids {
        samples.push(timed_read(session, id, body_chars)?);
    }
    Ok(samples)
}

/// Reads one mail in an open session and checks its body length; returns how long it took.
pub fn timed_read(
    session: &mut Session,
    id: u64,
    body_chars: usize,
) -> Result<Duration, BenchError> {
    let started = Instant::now();
    let mail = session
        .read(id)
        .map_err(BenchError::client(format!("reading mail {id}")))?;
    let elapsed = started.elapsed();
    if mail.body.len() != body_chars {
        return Err(BenchError::Check(format!(
            "mail {id} came back with {} body bytes, {body_chars} were stored",
            mail.body.len()
        )));
    }
    Ok(elapsed)
}

/// `count` distinct ids picked evenly at random from `ids` (a fixed-seed xorshift, so runs are
/// comparable), or all of them shuffled if there are fewer.
pub fn pick_ids(ids: &[u64], count: usize) -> Vec<u64> {
    let mut pool = ids.to_vec();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let take = count.min(pool.len());
    for i in 0..take {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let j = i + (state % (pool.len() - i) as u64) as usize;
        pool.swap(i, j);
    }
    pool.truncate(take);
    pool
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_distinct_ids() {
        let ids: Vec<u64> = (1..=1000).collect();
        let mut picked = pick_ids(&ids, 100);
        assert_eq!(picked.len(), 100);
        picked.sort_unstable();
        picked.dedup();
        assert_eq!(picked.len(), 100);
        assert_eq!(pick_ids(&ids[..10], 100).len(), 10);
    }

    #[test]
    fn the_closed_loop_counts_steps_reopens_after_a_failure_and_closes_every_state() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (opened, closed, steps) = (
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
        );
        let mut saw_all_open = false;
        let result = closed_loop(
            3,
            Duration::from_millis(100),
            || Ok(opened.fetch_add(1, Ordering::SeqCst)),
            |_state: &mut usize| {
                std::thread::sleep(Duration::from_millis(1));
                match steps.fetch_add(1, Ordering::SeqCst) {
                    10 => Err(BenchError::Check("the eleventh step fails".into())),
                    _ => Ok(()),
                }
            },
            |_state| {
                closed.fetch_add(1, Ordering::SeqCst);
                Ok(())
            },
            || saw_all_open = opened.load(Ordering::SeqCst) == 3,
        )
        .unwrap();
        assert!(saw_all_open, "on_open runs once every thread has opened");
        assert_eq!(result.failures, 1);
        assert_eq!(
            result.first_failure.as_deref(),
            Some("sanity check failed: the eleventh step fails")
        );
        assert_eq!(result.completed + 1, steps.load(Ordering::SeqCst));
        assert_eq!(
            opened.load(Ordering::SeqCst),
            4,
            "the failed state is opened again"
        );
        assert_eq!(closed.load(Ordering::SeqCst), 3);
        assert!(
            result.elapsed >= Duration::from_millis(100),
            "{:?}",
            result.elapsed
        );
        assert!(result.completed > 30, "{}", result.completed);
    }
}
