//! Listing and sending with end-to-end encryption (issue 11), beside the plaintext baseline.
//!
//! Two mailboxes of the same size on deployments of their own: one preloaded with plaintext
//! mail as stored before protocol version 4 and listed as a version 3 client did (`Inbox`,
//! every title in the server's plaintext), one preloaded with mail sealed as a client seals
//! it (with the users' own keys, in parallel) and listed as this client lists: `List`, then
//! `Headers` for what the header cache lacks, decrypted and verified on this side.
//!
//! - first listing: a new session with no cache file, so every header is fetched, decrypted
//!   and verified (target: at most 1 s for 10,000);
//! - cached listing: a new session whose cache file holds every header (as a second
//!   `forkmail inbox` finds it), so only the metadata travels; the timing includes reading
//!   the cache file (target: at most 1.5x the plaintext listing);
//! - sealing: the client-side cost a send adds, in-process, and sealed sends of 1,000 and
//!   1,000,000 characters end to end within an open session (seal, `SendSealed`, `Sent`).
//!
//! A login is never inside a timing; each listing is checked for its length and for how many
//! headers it fetched.

use std::path::Path;
use std::time::{Duration, Instant};

use forkmail_client::e2e::cache::cache_path;
use forkmail_client::Session;
use forkmail_protocol::Draft;
use forkmail_store::{ImportedMail, SealedContent};

use super::report::{Report, Row, Section, Target, Unit};
use super::sections::thousands;
use super::setup::{ascii_body, connect_options, preload, PEER, USER};
use super::stats::Samples;
use super::stores::Stores;
use super::suite::{start_host, stop, Settings, LOW_ITERATIONS};
use super::BenchError;
use crate::deployment::Deployment;
use crate::sealing::Sealer;

/// A first listing of 10,000 sealed mails takes at most this long (issue 11).
pub const TARGET_FIRST_LISTING_10K_MS: f64 = 1000.0;
/// A cached listing of 10,000 costs at most this many times the plaintext one (issue 11).
pub const TARGET_CACHED_RATIO: f64 = 1.5;

/// Body of each preloaded mail, as the rest of the benchmark preloads.
const BODY_CHARS: usize = 1000;

/// `forkmail-bench --e2e`: this section alone, on its own deployments.
pub fn run(settings: &Settings, progress: &mut dyn FnMut(&str)) -> Result<Report, BenchError> {
    let stores = Stores::start(settings.store)?;
    let scratch = tempfile::Builder::new()
        .prefix("forkmail-bench-")
        .tempdir_in(&settings.work_dir)
        .map_err(BenchError::io(&settings.work_dir))?;
    let section = measure(
        &settings.server_bin,
        &stores,
        LOW_ITERATIONS,
        scratch.path(),
        settings.quick,
        progress,
    )?;
    Ok(Report {
        store: settings.store,
        context: vec![
            format!(
                "forkmail-bench --e2e ({} run)",
                if settings.quick { "quick" } else { "full" }
            ),
            format!("server binary: {}", settings.server_bin.display()),
            stores.describe(),
            format!(
                "RSA-{} keys; preloaded mail bodies of {} ASCII characters",
                super::setup::BITS,
                thousands(BODY_CHARS)
            ),
        ],
        sections: vec![section],
    })
}

/// Listing figures and sealing costs, as one section.
pub fn measure(
    bin: &Path,
    stores: &Stores,
    kdf_iterations: u32,
    dir: &Path,
    quick: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<Section, BenchError> {
    let (size, listings) = if quick { (1_000, 3) } else { (10_000, 7) };
    let base = &stores.create(&dir.join("e2e"), kdf_iterations)?;
    progress(&format!(
        "preloading {} plaintext and {} sealed mails",
        thousands(size),
        thousands(size)
    ));
    let plain = stores.copy(base, &dir.join("plain-listing"))?;
    preload(&plain, USER, size, BODY_CHARS)?;
    let sealed = stores.copy(base, &dir.join("sealed-listing"))?;
    preload_sealed(&sealed, size)?;

    progress(&format!(
        "{listings} plaintext listings of {}",
        thousands(size)
    ));
    let (plaintext_new, plaintext) = {
        let server = start_host(bin, &plain, "server", &[])?;
        let options = connect_options(&plain, USER, &server.addr.to_string())?;
        // As a one-shot `forkmail inbox` lists: the first listing of a new session (login
        // untimed), which is what the cached sealed listing below is timed as too.
        let plaintext_new = warmed_samples(listings, || {
            let mut session =
                Session::connect(&options).map_err(BenchError::client("logging in"))?;
            let elapsed = timed_plaintext_listing(&mut session, size)?;
            session.quit().map_err(BenchError::client("logging out"))?;
            Ok(elapsed)
        })?;
        let mut session = Session::connect(&options).map_err(BenchError::client("logging in"))?;
        let samples = warmed_samples(listings, || timed_plaintext_listing(&mut session, size))?;
        session.quit().map_err(BenchError::client("logging out"))?;
        stop(server);
        (plaintext_new, samples)
    };

    progress(&format!(
        "{listings} first and {listings} cached listings of {} sealed mails",
        thousands(size)
    ));
    let (first, cached, in_session, sends) = {
        let server = start_host(bin, &sealed, "server", &[])?;
        let options = connect_options(&sealed, USER, &server.addr.to_string())?;
        let cache = cache_path(&sealed.profile(USER));
        let mut first = Samples::with_capacity(listings);
        let mut cached = Samples::with_capacity(listings);
        // One untimed round first: the server's page cache, the key record's fetch and pin.
        for round in 0..=listings {
            let _ = std::fs::remove_file(&cache);
            let (elapsed, fetched) = timed_listing(&options, size)?;
            if fetched != size as u64 {
                return Err(BenchError::Check(format!(
                    "a first listing fetched {fetched} headers of {size}"
                )));
            }
            if round > 0 {
                first.push(elapsed);
            }
            let (elapsed, fetched) = timed_listing(&options, size)?;
            if fetched != 0 {
                return Err(BenchError::Check(format!(
                    "a cached listing fetched {fetched} headers"
                )));
            }
            if round > 0 {
                cached.push(elapsed);
            }
        }
        let mut session = Session::connect(&options).map_err(BenchError::client("logging in"))?;
        let in_session = warmed_samples(listings, || {
            let started = Instant::now();
            let listed = session
                .inbox()
                .map_err(BenchError::client("listing the inbox"))?
                .len();
            let elapsed = started.elapsed();
            check(listed, size, "sealed")?;
            Ok(elapsed)
        })?;
        let mut sends = Vec::new();
        for (chars, count) in [(1_000, 50), (1_000_000, 10)] {
            let draft = Draft {
                to: vec![PEER.to_owned()],
                title: "A sealed send".into(),
                body: ascii_body(chars, chars),
            };
            let samples = warmed_samples(count, || {
                let started = Instant::now();
                session
                    .send(&draft)
                    .map_err(BenchError::client("sending sealed mail"))?;
                Ok(started.elapsed())
            })?;
            sends.push((chars, samples));
        }
        session.quit().map_err(BenchError::client("logging out"))?;
        stop(server);
        (first, cached, in_session, sends)
    };

    progress("sealing costs in-process");
    let sealer = Sealer::new(&sealed, USER, &[PEER]);
    let mut seal_rows = Vec::new();
    for (chars, count) in [(1_000, 50), (1_000_000, 10)] {
        let draft = Draft {
            to: vec![PEER.to_owned()],
            title: "A sealed mail".into(),
            body: ascii_body(chars, chars),
        };
        let mut samples = Samples::with_capacity(count);
        for i in 0..count {
            let started = Instant::now();
            let sealed = sealer.seal(&draft, send_id(i));
            samples.push(started.elapsed());
            std::hint::black_box(sealed);
        }
        seal_rows.push(
            Row::new(
                format!("seal a mail of {} characters: p50", thousands(chars)),
                samples.p50(),
                Unit::Ms,
            )
            .note(format!(
                "sign (RSA-PSS, {} bits) + age to 2; n={count}",
                super::setup::BITS
            )),
        );
    }

    let n = |s: &Samples| format!("p99 {:.1} ms, n={}", s.p99(), s.len());
    // Like with like: both the first listing of a new session, as a one-shot command lists.
    let ratio = cached.p50() / plaintext_new.p50();
    let label = thousands(size);
    let mut first_row = Row::new(
        format!("first listing of {label} sealed (no cache): p50"),
        first.p50(),
        Unit::Ms,
    )
    .note(format!(
        "{}; every header fetched, decrypted, verified",
        n(&first)
    ));
    let mut ratio_row = Row::new(
        format!("cached listing of {label} / plaintext listing"),
        ratio,
        Unit::Ratio,
    )
    .note(format!(
        "{:.1} ms / {:.1} ms, each the first listing of a new session",
        cached.p50(),
        plaintext_new.p50()
    ));
    if size == 10_000 {
        first_row = first_row.target(Target::AtMost(TARGET_FIRST_LISTING_10K_MS));
        ratio_row = ratio_row.target(Target::AtMost(TARGET_CACHED_RATIO));
    }
    let mut rows = vec![
        Row::new(
            format!("plaintext listing of {label} (protocol 3 Inbox), new session: p50"),
            plaintext_new.p50(),
            Unit::Ms,
        )
        .note(format!("{}; login untimed", n(&plaintext_new))),
        Row::new(
            format!("plaintext listing of {label} (protocol 3 Inbox) again in one session: p50"),
            plaintext.p50(),
            Unit::Ms,
        )
        .note(n(&plaintext)),
        first_row,
        Row::new(
            format!("cached listing of {label} sealed (new session, cache file): p50"),
            cached.p50(),
            Unit::Ms,
        )
        .note(format!("{}; no header fetched", n(&cached))),
        ratio_row,
        Row::new(
            format!("listing of {label} sealed again in one session: p50"),
            in_session.p50(),
            Unit::Ms,
        )
        .note(format!(
            "{}; {:.2}x the plaintext listing again in one session",
            n(&in_session),
            in_session.p50() / plaintext.p50()
        )),
    ];
    rows.extend(seal_rows);
    for (chars, samples) in &sends {
        rows.push(
            Row::new(
                format!(
                    "send a sealed mail of {} characters: p50",
                    thousands(*chars)
                ),
                samples.p50(),
                Unit::Ms,
            )
            .note(format!(
                "{}; sealed, key record cached, SendSealed to Sent",
                n(samples)
            )),
        );
    }
    Ok(Section {
        title: "End-to-end encryption: listing and sealing (issue 11)".into(),
        rows,
    })
}

/// One untimed round (warming the server's caches), then `rounds` timed ones.
fn warmed_samples(
    rounds: usize,
    mut round: impl FnMut() -> Result<Duration, BenchError>,
) -> Result<Samples, BenchError> {
    round()?;
    let mut samples = Samples::with_capacity(rounds);
    for _ in 0..rounds {
        samples.push(round()?);
    }
    Ok(samples)
}

/// One timed plaintext listing (protocol 3 `Inbox`) on `session`, checked for its length.
fn timed_plaintext_listing(session: &mut Session, size: usize) -> Result<Duration, BenchError> {
    let started = Instant::now();
    let listed = session
        .inbox_plaintext()
        .map_err(BenchError::client("listing the inbox"))?
        .len();
    let elapsed = started.elapsed();
    check(listed, size, "plaintext")?;
    Ok(elapsed)
}

/// A new session (login untimed) and one timed listing; returns the time and the headers it
/// fetched.
fn timed_listing(
    options: &forkmail_client::ConnectOptions,
    size: usize,
) -> Result<(Duration, u64), BenchError> {
    let mut session = Session::connect(options).map_err(BenchError::client("logging in"))?;
    let started = Instant::now();
    let listed = session
        .inbox()
        .map_err(BenchError::client("listing the inbox"))?
        .len();
    let elapsed = started.elapsed();
    check(listed, size, "sealed")?;
    let fetched = session.headers_fetched();
    session.quit().map_err(BenchError::client("logging out"))?;
    Ok((elapsed, fetched))
}

fn check(listed: usize, size: usize, what: &str) -> Result<(), BenchError> {
    if listed != size {
        return Err(BenchError::Check(format!(
            "a {what} listing has {listed} mails, {size} were preloaded"
        )));
    }
    Ok(())
}

fn send_id(i: usize) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&(i as u64).to_le_bytes());
    id
}

/// Puts `count` mails from [`PEER`] into [`USER`]'s inbox, each sealed as [`PEER`]'s client
/// would seal it (signed with PEER's key, encrypted to USER and PEER), through the store's
/// `import`; sealed on every core. Only while no server runs on this deployment.
fn preload_sealed(deployment: &Deployment, count: usize) -> Result<(), BenchError> {
    let sealer = Sealer::new(deployment, PEER, &[USER]);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = count.div_ceil(threads);
    let first_ms = forkmail_protocol::now_millis().saturating_sub(60_000 * (count as u64 + 1));
    let mut sealed: Vec<(usize, SealedContent)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let sealer = &sealer;
                scope.spawn(move || {
                    (t * chunk..((t + 1) * chunk).min(count))
                        .map(|i| {
                            let draft = Draft {
                                to: vec![USER.to_owned()],
                                title: format!("Preloaded mail number {i} for the benchmark"),
                                body: ascii_body(BODY_CHARS, i),
                            };
                            let s = sealer.seal(&draft, send_id(i));
                            (
                                i,
                                SealedContent {
                                    header: s.header,
                                    body: s.body,
                                },
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a sealing thread panicked"))
            .collect()
    });
    sealed.sort_by_key(|(i, _)| *i);
    let mut store = forkmail_store::open(&deployment.store())
        .map_err(|e| BenchError::Check(format!("opening the store: {e}")))?;
    let mut mails = sealed.into_iter().map(|(i, content)| ImportedMail {
        from: PEER.to_owned(),
        sent_ms: first_ms + 60_000 * i as u64,
        draft: Draft {
            to: vec![USER.to_owned()],
            title: String::new(),
            body: String::new(),
        },
        sealed: Some(content),
    });
    store
        .import(&mut mails)
        .map_err(|e| BenchError::Check(format!("preloading sealed mail: {e}")))?;
    Ok(())
}
