//! `forkmail-peers`: times forkmail beside the Dovecot and sshd that `bench/peers/run.sh`
//! started on 127.0.0.1, and prints forkmail / peer ratios (docs/BENCHMARKS.md). `--fill-maildir`
//! is the script's other use of it: writing the preloaded mailboxes before Dovecot starts.
//!
//! Exit 0 when the run completed, 1 when it could not run, 2 for a usage error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use forkmail_testkit::bench::peers::{self, Peers, BODY_CHARS};

#[derive(Parser)]
#[command(
    name = "forkmail-peers",
    version,
    about = "forkmail against Dovecot and OpenSSH on 127.0.0.1, as same-run ratios (run bench/peers/run.sh)"
)]
struct Cli {
    /// Only write COUNT messages of BODY characters into the maildir DIR, then exit.
    #[arg(long, num_args = 3, value_names = ["DIR", "COUNT", "BODY"])]
    fill_maildir: Option<Vec<String>>,
    #[arg(long, default_value_t = 0)]
    imap_port: u16,
    /// The password of every IMAP user.
    #[arg(long, default_value = "")]
    imap_password: String,
    #[arg(long, default_value_t = 0)]
    ssh_port: u16,
    #[arg(long, value_name = "FILE")]
    ssh_key: Option<PathBuf>,
    #[arg(long, default_value = "root")]
    ssh_user: String,
    #[arg(long, value_name = "FILE")]
    ssh_known_hosts: Option<PathBuf>,
    /// The forkmail-server to run [default: the one next to this program].
    #[arg(long, value_name = "PATH")]
    server_bin: Option<PathBuf>,
    /// Where the forkmail deployments go (a temporary directory inside it, removed at the end).
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Interleaved rounds of each timed pair.
    #[arg(long, default_value_t = 30)]
    rounds: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let started = Instant::now();
    let result = match &cli.fill_maildir {
        Some(args) => fill(args),
        None => run(&cli, started),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("forkmail-peers: {err}");
            ExitCode::FAILURE
        }
    }
}

fn fill(args: &[String]) -> Result<(), String> {
    let [dir, count, body] = args else {
        return Err("--fill-maildir takes DIR COUNT BODY".into());
    };
    let number = |s: &str| {
        s.parse::<usize>()
            .map_err(|_| format!("{s:?} is not a number"))
    };
    let body = if body.is_empty() {
        BODY_CHARS
    } else {
        number(body)?
    };
    peers::fill_maildir(dir.as_ref(), number(count)?, body).map_err(|e| e.to_string())
}

fn run(cli: &Cli, started: Instant) -> Result<(), String> {
    let server_bin = match &cli.server_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("forkmail-server"),
    };
    if !server_bin.is_file() {
        return Err(format!(
            "{} not found; build it with `cargo build --release --bins`",
            server_bin.display()
        ));
    }
    let peers = Peers {
        imap_port: cli.imap_port,
        imap_password: cli.imap_password.clone(),
        ssh_port: cli.ssh_port,
        ssh_key: cli.ssh_key.clone().unwrap_or_default(),
        ssh_user: cli.ssh_user.clone(),
        ssh_known_hosts: cli.ssh_known_hosts.clone().unwrap_or_default(),
        server_bin,
        work_dir: cli.work_dir.clone().unwrap_or_else(std::env::temp_dir),
        rounds: cli.rounds.max(1),
    };
    let table = peers::run(&peers, &mut |step| {
        eprintln!(
            "forkmail-peers: [{:5.1} s] {step}",
            started.elapsed().as_secs_f64()
        )
    })
    .map_err(|e| e.to_string())?;
    print!("{table}");
    Ok(())
}
