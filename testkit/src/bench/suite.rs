//! The whole benchmark run: which deployments, which server, which measurement in which order,
//! and the targets each figure is held to.
//!
//! Order matters only for isolation: every deployment a later step needs is made (and its
//! mailbox preloaded) before any server runs, and each server runs alone, so no step competes
//! with another for the machine's cores or its disk.

use std::path::{Path, PathBuf};
use std::time::Duration;

use forkmail_client::Session;
use forkmail_keygen::password::DEFAULT_SHA512_ITERATIONS;

use super::costs::{self, Rounds};
use super::report::{Report, Section};
use super::scenarios;
use super::sealed;
use super::sections::{
    inbox_section, memory_section, read_section, send_section, session_section, thousands,
    throughput_section, Mailbox, Sends,
};
use super::setup::{self, connect_options, BITS, PEER, USER};
use super::stats::Samples;
use super::stores::{StoreKind, Stores};
use super::targets::{self, CliHome, CliRuns};
use super::BenchError;
use crate::deployment::Deployment;
use crate::procfs::{self, Memory};
use crate::server::{Server, ServerConfig};

/// PBKDF2-HMAC-SHA512 iterations of the production deployment: the default.
pub const PRODUCTION_ITERATIONS: u32 = DEFAULT_SHA512_ITERATIONS;
/// Iterations of the low-cost deployment, whose sessions show the protocol's own cost.
pub const LOW_ITERATIONS: u32 = 1000;
/// Body length of every preloaded mail: a short mail, stored inline in its row.
pub const PRELOAD_BODY_CHARS: usize = 1000;
/// Mails in the inbox that each timed session lists.
pub const SESSION_INBOX: usize = 10;
/// Pause before each paced session: far longer than a session process takes to exit.
pub const PACE: Duration = Duration::from_millis(100);
/// Threads running sessions in a loop, each level in turn.
pub const CONCURRENCY: [usize; 3] = [1, 5, 20];
/// How long a stopped server gets to finish its sessions (its own grace is 10 s).
const STOP_GRACE: Duration = Duration::from_secs(15);

/// What the caller chooses.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server_bin: PathBuf,
    /// Parent of the temporary directory holding the deployments.
    pub work_dir: PathBuf,
    pub quick: bool,
    /// Where every deployment's store is.
    pub store: StoreKind,
}

/// Repetitions of each measurement.
struct Plan {
    warmup: usize,
    production_sessions: usize,
    low_sessions: usize,
    paced_sessions: usize,
    throughput_for: Duration,
    /// (body characters, timed sends)
    sends: [(usize, usize); 3],
    /// (mails in the inbox, timed listings)
    inboxes: [(usize, usize); 3],
    reads: usize,
    /// Reads of the largest mail sent.
    large_reads: usize,
    rounds: Rounds,
    /// Timed runs of the `forkmail` program per figure (issue 12's one-shot and listing).
    cli_runs: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                warmup: 2,
                production_sessions: 5,
                low_sessions: 30,
                paced_sessions: 10,
                throughput_for: Duration::from_secs(1),
                sends: [(1_000, 30), (100_000, 10), (1_000_000, 5)],
                inboxes: [(100, 20), (10_000, 5), (100_000, 2)],
                reads: 20,
                large_reads: 3,
                rounds: Rounds { fast: 20, slow: 3 },
                cli_runs: 3,
            }
        } else {
            Self {
                warmup: 3,
                production_sessions: 30,
                low_sessions: 200,
                paced_sessions: 50,
                throughput_for: Duration::from_secs(5),
                sends: [(1_000, 300), (100_000, 100), (1_000_000, 40)],
                inboxes: [(100, 200), (10_000, 50), (100_000, 10)],
                reads: 100,
                large_reads: 20,
                rounds: Rounds {
                    fast: 100,
                    slow: 10,
                },
                cli_runs: 10,
            }
        }
    }
}

/// Runs everything and returns the figures. `progress` hears one line per step.
pub fn run(settings: &Settings, progress: &mut dyn FnMut(&str)) -> Result<Report, BenchError> {
    let plan = Plan::new(settings.quick);
    if settings.store == StoreKind::Postgres {
        progress("starting a throw-away PostgreSQL cluster");
    }
    // Declared before the deployments and servers, so dropped after them.
    let stores = Stores::start(settings.store)?;
    let scratch = tempfile::Builder::new()
        .prefix("forkmail-bench-")
        .tempdir_in(&settings.work_dir)
        .map_err(BenchError::io(&settings.work_dir))?;
    let dir = scratch.path();

    progress(&format!(
        "making two deployments with {BITS}-bit keys (PBKDF2 at {LOW_ITERATIONS} and \
         {PRODUCTION_ITERATIONS} iterations) on {}",
        settings.store.name()
    ));
    let low = stores.create(&dir.join("low"), LOW_ITERATIONS)?;
    let production = stores.create(&dir.join("production"), PRODUCTION_ITERATIONS)?;
    let mut inbox_deployments = Vec::new();
    for (size, _) in plan.inboxes {
        progress(&format!("preloading an inbox of {} mails", thousands(size)));
        let copy = stores.copy(&low, &dir.join(format!("inbox-{size}")))?;
        setup::preload(&copy, USER, size, PRELOAD_BODY_CHARS)?;
        inbox_deployments.push(copy);
    }
    setup::preload(&low, USER, SESSION_INBOX, PRELOAD_BODY_CHARS)?;

    progress("timing the building blocks in-process");
    let user_key = connect_options(&low, USER, "unused:0")?.user_key.clone();
    let cost_rows = costs::measure(
        &user_key,
        dir,
        PRODUCTION_ITERATIONS,
        LOW_ITERATIONS,
        plan.rounds,
    )?;
    let floors = targets::measure_floors(&user_key, dir, plan.rounds.fast)?;
    let cli_home = CliHome::new(dir)?;

    let bin = &settings.server_bin;
    let (low_sessions, rates, sends, parent_memory, low_extra) = {
        let server = start_server(bin, &low)?;
        let options = connect_options(&low, USER, &server.addr.to_string())?;
        let listed = scenarios::one_session(&options)?;
        if listed != SESSION_INBOX {
            return Err(BenchError::Check(format!(
                "the session inbox holds {listed} mails, {SESSION_INBOX} were preloaded"
            )));
        }
        progress(&format!("{} low-cost sessions", plan.low_sessions));
        let sessions =
            scenarios::session_latency(&options, plan.warmup, plan.low_sessions, Duration::ZERO)?;
        progress(&format!(
            "{} low-cost sessions {} ms apart",
            plan.paced_sessions,
            PACE.as_millis()
        ));
        let paced = scenarios::session_latency(&options, 0, plan.paced_sessions, PACE)?;
        let mut rates = Vec::new();
        for concurrency in CONCURRENCY {
            progress(&format!(
                "sessions in a loop for {} s at concurrency {concurrency}",
                plan.throughput_for.as_secs()
            ));
            rates.push(scenarios::throughput(
                &options,
                concurrency,
                plan.throughput_for,
            )?);
        }
        let mut session = Session::connect(&options).map_err(BenchError::client("logging in"))?;
        let mut sends = Vec::new();
        let mut largest_ids = Vec::new();
        for (chars, count) in plan.sends {
            progress(&format!("{count} sends of {} characters", thousands(chars)));
            let (samples, ids) =
                scenarios::send_latency(&mut session, PEER, chars, plan.warmup, count)?;
            sends.push((chars, samples));
            largest_ids = ids;
        }
        let round_trips = targets::round_trips(&mut session, plan.reads)?;
        session.quit().map_err(BenchError::client("logging out"))?;
        let (largest_chars, _) = plan.sends[plan.sends.len() - 1];
        let fetch_ids = scenarios::pick_ids(&largest_ids, plan.large_reads);
        progress(&format!(
            "{} reads of a {}-character mail",
            fetch_ids.len(),
            thousands(largest_chars)
        ));
        let peer = connect_options(&low, PEER, &server.addr.to_string())?;
        let mut session = Session::connect(&peer).map_err(BenchError::client("logging in"))?;
        let fetches = scenarios::read_latency(&mut session, &fetch_ids, largest_chars)?;
        session.quit().map_err(BenchError::client("logging out"))?;
        let sends = Sends {
            sends,
            largest_chars,
            fetches,
        };
        let extra = low_server_targets(&plan, &server, &low, &cli_home, progress)?;
        let parent = server.memory()?;
        stop(server);
        (
            (sessions, paced),
            rates,
            sends,
            parent,
            (round_trips, extra),
        )
    };

    let production_sessions = {
        progress(&format!(
            "{} production-cost sessions",
            plan.production_sessions
        ));
        let server = start_server(bin, &production)?;
        let options = connect_options(&production, USER, &server.addr.to_string())?;
        let samples = scenarios::session_latency(
            &options,
            plan.warmup,
            plan.production_sessions,
            Duration::ZERO,
        )?;
        progress(&format!(
            "{} one-shot `forkmail inbox` at production cost",
            plan.cli_runs
        ));
        let one_shot = targets::cli_runs(
            &cli_home,
            &production,
            USER,
            &server.addr.to_string(),
            &["inbox"],
            1,
            plan.cli_runs,
        )?;
        stop(server);
        (samples, one_shot)
    };
    let (production_sessions, one_shot_production) = production_sessions;

    let mut mailboxes = Vec::new();
    let mut cli_listings = Vec::new();
    for (deployment, (size, listings)) in inbox_deployments.iter().zip(plan.inboxes) {
        progress(&format!(
            "inbox of {}: {listings} listings",
            thousands(size)
        ));
        let (mailbox, cli) = measure_mailbox(
            bin,
            deployment,
            size,
            listings,
            plan.warmup,
            (&cli_home, plan.cli_runs.min(5)),
        )?;
        mailboxes.push(mailbox);
        cli_listings.push((size, cli));
    }
    progress(&format!(
        "reading {} mails from each mailbox in turn, twice",
        plan.reads.min(plan.inboxes[0].0)
    ));
    measure_reads(bin, &inbox_deployments, &mut mailboxes, plan.reads)?;
    let e2e_section = sealed::measure(bin, &stores, LOW_ITERATIONS, dir, settings.quick, progress)?;

    let (round_trips, (one_writer, five_writers, one_shot_cheap)) = low_extra;
    let smallest = cli_listings.iter().min_by_key(|(n, _)| *n).cloned();
    let largest = cli_listings.iter().max_by_key(|(n, _)| *n).cloned();
    let (Some(listing_small), Some(listing_large)) = (smallest, largest) else {
        return Err(BenchError::Check("no mailbox was listed".into()));
    };
    let issue12 = targets::section(&targets::Measured {
        floors,
        session: &low_sessions.0,
        large_sends: sends
            .sends
            .iter()
            .find(|(chars, _)| *chars == targets::LARGE_BODY)
            .map(|(_, s)| s)
            .unwrap_or(&sends.fetches),
        large_reads: &sends.fetches,
        round_trips,
        listing_small,
        listing_large,
        one_writer,
        five_writers,
        one_shot_production,
        one_shot_cheap,
    });
    let sections = vec![
        issue12,
        session_section(&production_sessions, &low_sessions),
        throughput_section(&rates),
        send_section(&sends),
        inbox_section(&mailboxes),
        read_section(&mailboxes),
        memory_section(parent_memory, plan.low_sessions, &mailboxes),
        Section {
            title: "Building blocks (in-process, this machine)".into(),
            rows: cost_rows,
        },
        e2e_section,
    ];
    Ok(Report {
        store: settings.store,
        context: context(settings, &stores, dir),
        sections,
    })
}

/// Listing latency and the session child's memory for one mailbox, on a server of its own.
fn measure_mailbox(
    bin: &Path,
    deployment: &Deployment,
    size: usize,
    listings: usize,
    warmup: usize,
    (cli_home, cli_count): (&CliHome, usize),
) -> Result<(Mailbox, CliRuns), BenchError> {
    let server = start_server(bin, deployment)?;
    let options = connect_options(deployment, USER, &server.addr.to_string())?;
    let cli = targets::cli_runs(
        cli_home,
        deployment,
        USER,
        &server.addr.to_string(),
        &["inbox", "--json"],
        1,
        cli_count,
    )?;
    let mut session = Session::connect(&options).map_err(BenchError::client("logging in"))?;
    let (listing, ids) = scenarios::inbox_latency(&mut session, size, warmup, listings)?;
    // Let the child return to its idle wait before looking at it.
    std::thread::sleep(Duration::from_millis(200));
    let child = session_memory(&server)?;
    session.quit().map_err(BenchError::client("logging out"))?;
    stop(server);
    let mailbox = Mailbox {
        size,
        listing,
        child,
        ids,
        reads: Samples::default(),
        rereads: Samples::default(),
    };
    Ok((mailbox, cli))
}

/// Issue 12's figures on the low-cost server: sends per second of one writer and of five
/// (each its own session), and the one-shot `forkmail inbox` at cheap cost.
fn low_server_targets(
    plan: &Plan,
    server: &Server,
    low: &Deployment,
    cli_home: &CliHome,
    progress: &mut dyn FnMut(&str),
) -> Result<(scenarios::Throughput, scenarios::Throughput, CliRuns), BenchError> {
    let options = connect_options(low, USER, &server.addr.to_string())?;
    let mut writers = Vec::new();
    for concurrency in [1, 5] {
        progress(&format!(
            "1,000-character sends for {} s by {concurrency} writer(s), each its own session",
            plan.throughput_for.as_secs()
        ));
        writers.push(scenarios::send_throughput(
            &options,
            concurrency,
            plan.throughput_for,
            PEER,
            1000,
            || (),
        )?);
    }
    progress(&format!(
        "{} one-shot `forkmail inbox` at low cost",
        plan.cli_runs
    ));
    let one_shot = targets::cli_runs(
        cli_home,
        low,
        USER,
        &server.addr.to_string(),
        &["inbox"],
        1,
        plan.cli_runs,
    )?;
    let five = writers.pop();
    let one = writers.pop();
    match (one, five) {
        (Some(one), Some(five)) => Ok((one, five, one_shot)),
        _ => Err(BenchError::Check("the writer runs did not complete".into())),
    }
}

/// Reads `reads` mails (at most as many as the smallest mailbox holds) from every mailbox, one
/// mailbox after the other in each round, so that any drift in disk or CPU speed during the run
/// hits all sizes alike and the ratio between them stays fair. Then reads the same mails again:
/// they are read by now, so the server writes nothing and only the lookup is timed.
fn measure_reads(
    bin: &Path,
    deployments: &[Deployment],
    mailboxes: &mut [Mailbox],
    reads: usize,
) -> Result<(), BenchError> {
    let rounds = mailboxes
        .iter()
        .map(|m| m.ids.len())
        .min()
        .unwrap_or(0)
        .min(reads);
    let mut servers = Vec::new();
    let mut sessions = Vec::new();
    for deployment in deployments {
        let server = start_server(bin, deployment)?;
        let options = connect_options(deployment, USER, &server.addr.to_string())?;
        sessions.push(Session::connect(&options).map_err(BenchError::client("logging in"))?);
        servers.push(server);
    }
    let picked: Vec<Vec<u64>> = mailboxes
        .iter()
        .map(|m| scenarios::pick_ids(&m.ids, rounds))
        .collect();
    // Each round starts with a different mailbox, so no size always goes first.
    let count = sessions.len();
    let schedule: Vec<(usize, u64)> = (0..rounds)
        .flat_map(|round| {
            (0..count)
                .map(move |j| (j + round) % count)
                .map(move |k| (k, round))
        })
        .map(|(k, round)| (k, picked[k][round]))
        .collect();
    for again in [false, true] {
        for &(k, id) in &schedule {
            let elapsed = scenarios::timed_read(&mut sessions[k], id, PRELOAD_BODY_CHARS)?;
            let mailbox = &mut mailboxes[k];
            if again {
                mailbox.rereads.push(elapsed);
            } else {
                mailbox.reads.push(elapsed);
            }
        }
    }
    for session in sessions {
        session.quit().map_err(BenchError::client("logging out"))?;
    }
    for server in servers {
        stop(server);
    }
    for deployment in deployments {
        // Up to ~130 MB each; nothing later needs them.
        std::fs::remove_dir_all(deployment.root()).map_err(BenchError::io(deployment.root()))?;
    }
    Ok(())
}

/// The server on `deployment` as the benchmark runs it: at `RUST_LOG=warn`, so logging costs
/// nothing in the figures, into `server.log` in the deployment, so a failure can be diagnosed.
fn start_server(bin: &Path, deployment: &Deployment) -> Result<Server, BenchError> {
    start_host(bin, deployment, "server", &[])
}

/// [`start_server`] with `extra` arguments and its log in `NAME.log`, so that several hosts
/// can serve one deployment. The benchmark times one user's sessions at up to five at once, so
/// the per-user cap (`--max-sessions-per-user`, 2 by default) is lifted.
pub(super) fn start_host(
    bin: &Path,
    deployment: &Deployment,
    name: &str,
    extra: &[&str],
) -> Result<Server, BenchError> {
    // The loads send far more than one user may in a minute, into mailboxes that outgrow the
    // default quota: with no rate and no quota, what is measured is the store's throughput,
    // with the usage counting every send does (the limits' own cost: BENCHMARKS.md).
    let mut args = vec![
        "--max-sends-per-minute",
        "0",
        "--quota-mb",
        "0",
        "--max-sessions-per-user",
        "0",
    ];
    args.extend_from_slice(extra);
    let config = ServerConfig {
        rust_log: "warn".into(),
        log_file: Some(deployment.root().join(format!("{name}.log"))),
        extra_args: args.iter().map(|&arg| arg.to_owned()).collect(),
        ..ServerConfig::new(bin, &deployment.server_dir())
    };
    Ok(Server::launch(&config)?)
}

/// SIGTERM, then waits for the server (and so its sessions) to exit; SIGKILL if it takes longer
/// than [`STOP_GRACE`].
pub(super) fn stop(server: Server) {
    // A server that had to be killed has still stopped; nothing later depends on how.
    let _ = server.terminate(STOP_GRACE);
}

/// Memory of the one session process that should be running now.
fn session_memory(server: &Server) -> Result<Memory, BenchError> {
    let server_pid = server.pid().as_raw();
    match server.children().as_slice() {
        [child] => Ok(procfs::memory(child.pid)?),
        [] => Err(BenchError::NoSessionProcess { server_pid }),
        many => Err(BenchError::Check(format!(
            "expected one session process of server {server_pid}, found {}",
            many.len()
        ))),
    }
}

fn context(settings: &Settings, stores: &Stores, dir: &Path) -> Vec<String> {
    vec![
        format!(
            "forkmail-bench ({} run)",
            if settings.quick { "quick" } else { "full" }
        ),
        format!("server binary: {}", settings.server_bin.display()),
        stores.describe(),
        format!(
            "deployments in {} (its file system decides what a durable commit costs)",
            dir.display()
        ),
        format!(
            "RSA-{BITS} keys; PBKDF2-SHA512 at {} (production) or {} (low cost) iterations; \
             preloaded mail bodies of {} ASCII characters",
            thousands(PRODUCTION_ITERATIONS as usize),
            thousands(LOW_ITERATIONS as usize),
            thousands(PRELOAD_BODY_CHARS)
        ),
    ]
}
