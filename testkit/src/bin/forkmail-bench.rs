//! `forkmail-bench`: measures the real forked server on throw-away deployments and prints each
//! figure beside its target (docs/BENCHMARKS.md).
//!
//! Progress goes to stderr, the table (or `--json`) to stdout. Exit 0 when the run completed,
//! whatever the figures; 1 when it could not run; 2 for a usage error.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use forkmail_testkit::bench::stores::StoreKind;
use forkmail_testkit::bench::suite::{self, Settings};
use forkmail_testkit::bench::{flood, scaling, sealed};

#[derive(Parser)]
#[command(
    name = "forkmail-bench",
    version,
    about = "Benchmark forkmail-server on throw-away deployments and compare with the targets",
    after_help = "Build the server first: cargo build --release --bin forkmail-server"
)]
struct Cli {
    /// A short run (about 15 s): fewer repetitions, noisier figures.
    #[arg(long)]
    quick: bool,
    /// The forkmail-server to measure [default: forkmail-server next to this program].
    #[arg(long, value_name = "PATH")]
    server_bin: Option<PathBuf>,
    /// Where to make the deployments (a temporary directory inside it, removed at the end).
    /// Its file system decides what a durable commit costs. [default: the system temp dir]
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Where every deployment's store is: `sqlite` (mail.db in each deployment) or `postgres`
    /// (a database each in a throw-away PostgreSQL 15 cluster the run starts and removes).
    #[arg(long, value_enum, default_value_t = StoreKind::Sqlite)]
    store: StoreKind,
    /// Instead of the suite, sessions/s and sends/s at concurrency 10 on SQLite and PostgreSQL,
    /// one host and two, direct and through HAProxy (docs/SCALING.md). About 70 s, or 35 s
    /// with --quick. Needs PostgreSQL 15 and HAProxy.
    #[arg(long, conflicts_with = "store")]
    scaling: bool,
    /// Instead of the suite, complete but bogus hellos (unknown users, forged signatures) from
    /// 4 threads at 100, 300, 1,000, 3,000, 6,000 and 10,000 a second, 8 s each (3 s with
    /// --quick), while a real user logs in: the rate absorbed, the logins' latency and the
    /// parent's CPU per bogus hello (docs/SECURITY.md).
    #[arg(long, conflicts_with = "scaling")]
    hello_flood: bool,
    /// Instead of the suite, only the end-to-end encryption figures: plaintext vs first and
    /// cached listings of 10,000 sealed mails, and the cost of sealing (about 2 min; 1,000
    /// mails with --quick).
    #[arg(long, conflicts_with_all = ["scaling", "hello_flood"])]
    e2e: bool,
    /// Print the figures as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("forkmail-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let server_bin = match cli.server_bin {
        Some(path) => path,
        None => default_server_bin()?,
    };
    anyhow::ensure!(
        server_bin.is_file(),
        "{} not found; build it with `cargo build --release --bin forkmail-server` or pass \
         --server-bin PATH",
        server_bin.display()
    );
    let settings = Settings {
        server_bin,
        work_dir: cli.work_dir.unwrap_or_else(std::env::temp_dir),
        quick: cli.quick,
        store: cli.store,
    };
    let started = Instant::now();
    let mut progress = |step: &str| {
        eprintln!(
            "forkmail-bench: [{:5.1} s] {step}",
            started.elapsed().as_secs_f64()
        )
    };
    let text = if cli.e2e {
        let report = sealed::run(&settings, &mut progress)?;
        progress("done");
        if cli.json {
            serde_json::to_string_pretty(&report).context("encoding the report")? + "\n"
        } else {
            report.to_table()
        }
    } else if cli.hello_flood {
        let report = flood::run(&settings, &mut progress)?;
        progress("done");
        if cli.json {
            serde_json::to_string_pretty(&report).context("encoding the report")? + "\n"
        } else {
            report.to_table()
        }
    } else if cli.scaling {
        let report = scaling::run(&settings, &mut progress)?;
        progress("done");
        if cli.json {
            serde_json::to_string_pretty(&report).context("encoding the report")? + "\n"
        } else {
            report.to_table()
        }
    } else {
        let report = suite::run(&settings, &mut progress)?;
        progress("done");
        if cli.json {
            serde_json::to_string_pretty(&report).context("encoding the report")? + "\n"
        } else {
            report.to_table()
        }
    };
    match io::stdout().lock().write_all(text.as_bytes()) {
        Err(err) if err.kind() != io::ErrorKind::BrokenPipe => Err(err.into()),
        _ => Ok(()),
    }
}

/// `forkmail-server` in the directory of this executable (`target/release/` under cargo).
fn default_server_bin() -> anyhow::Result<PathBuf> {
    let dir = forkmail_testkit::bin_dir().context("cannot find this program's own directory")?;
    Ok(dir.join("forkmail-server"))
}
