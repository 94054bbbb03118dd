//! `forkmail-server`: the forking mail daemon.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::Shell;
use forkmail_keygen::deploy::Settings;
use forkmail_keygen::keyfile;
use forkmail_keygen::layout::ServerDir;
use forkmail_keygen::password::PasswordHash;
use forkmail_keygen::safety::{self, UnsafeFile};
use forkmail_protocol::replay::DEFAULT_WINDOW_MS;
use forkmail_server::auth::{Decoy, ThrottlePolicy};
use forkmail_server::config::ServerConfig;
use forkmail_server::daemon::{Daemon, Shared};
use forkmail_server::demo;
use forkmail_server::instance::InstanceLock;
use forkmail_server::keys;
use forkmail_server::logging;
use forkmail_server::preflight;
use forkmail_store::{SendLimits, StoreLocation};

// `completions` and `man` are subcommands, like the client's and keygen's. The daemon itself takes
// no subcommand: a subcommand negates `--dir`'s requirement and conflicts with every flag, so
// each existing invocation (flags only) parses as before.
#[derive(Parser)]
#[command(
    name = "forkmail-server",
    version,
    about = "The forkmail daemon: one forked process per session",
    max_term_width = 80,
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The deployment's server directory (DIR/server from forkmail-keygen init).
    #[arg(long, required_unless_present = "demo")]
    dir: Option<PathBuf>,
    /// Address to listen on; 127.0.0.1:0 picks a free port. Default: the deployment's address.
    #[arg(long, value_name = "IP:PORT")]
    listen: Option<String>,
    /// Sessions served at once; further connections wait in arrival order.
    #[arg(long, default_value_t = ServerConfig::DEFAULT_MAX_SESSIONS, value_parser = parse_max_sessions)]
    max_sessions: usize,
    /// Sessions one user may hold at once (running or waiting); a login over it is refused at
    /// once. 0: no cap.
    #[arg(long, value_name = "N", default_value_t = ServerConfig::DEFAULT_MAX_SESSIONS_PER_USER)]
    max_sessions_per_user: usize,
    /// Seconds a connection may wait for a free session before it is told the server is busy.
    #[arg(long, value_name = "SECS", default_value_t = ServerConfig::DEFAULT_QUEUE_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    queue_timeout: u64,
    /// Seconds a connection has to send its hello, and then (holding a slot) to log in.
    #[arg(long, value_name = "SECS", default_value_t = ServerConfig::DEFAULT_HANDSHAKE_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    handshake_timeout: u64,
    /// Seconds an authenticated session may sit idle before it is closed.
    #[arg(long, value_name = "SECS", default_value_t = ServerConfig::DEFAULT_IDLE_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout: u64,
    /// Seconds a blocked write to a client may take before the session ends.
    #[arg(long, value_name = "SECS", default_value_t = ServerConfig::DEFAULT_WRITE_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    write_timeout: u64,
    /// Seconds sessions get to finish after SIGTERM/SIGINT.
    #[arg(long, value_name = "SECS", default_value_t = ServerConfig::DEFAULT_SHUTDOWN_GRACE_SECS)]
    shutdown_grace: u64,
    /// Accepted clock difference for handshake and frame timestamps, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_WINDOW_MS / 1000, value_parser = clap::value_parser!(u64).range(1..=3600))]
    freshness_window: u64,
    /// Consecutive wrong passwords (with a valid user key) before the account is locked.
    #[arg(long, value_name = "N", default_value_t = ServerConfig::DEFAULT_LOCKOUT_AFTER, value_parser = clap::value_parser!(u32).range(1..))]
    lockout_after: u32,
    /// Seconds an account stays locked after --lockout-after failures.
    #[arg(long, value_name = "SECS", default_value_t = ServerConfig::DEFAULT_LOCKOUT_SECS)]
    lockout_secs: u64,
    /// Seconds a login ticket stays valid: after a password login the client is given one, and
    /// presents it with the user key instead of the password until then (or `forkmail logout`,
    /// a lock-out, a password change). 0: no tickets.
    #[arg(long, value_name = "SECS", default_value_t = ServerConfig::DEFAULT_TICKET_LIFETIME_SECS)]
    ticket_lifetime: u64,
    /// The mail store, overriding deployment.toml: postgresql://user@host:port/dbname (password
    /// from PGPASSWORD or a passfile). Default: the deployment's store (DIR/server/mail.db
    /// unless init was given --store).
    #[arg(long, value_name = "URL", value_parser = parse_store)]
    store: Option<StoreLocation>,
    /// Proxies (comma-separated IP addresses; may be repeated) whose connections must start with
    /// a PROXY protocol v2 header (HAProxy send-proxy-v2) naming the real client. A PROXY header
    /// from any other address is refused.
    #[arg(long, value_name = "ADDR[,ADDR...]", value_delimiter = ',', value_parser = parse_proxy_ip)]
    proxy_protocol_from: Vec<IpAddr>,
    /// Per-recipient mailbox quota in MB (the title and body of every mail in the inbox); a send
    /// that would take any recipient over it is refused. 0: unlimited.
    #[arg(long, value_name = "MB", default_value_t = ServerConfig::DEFAULT_QUOTA_MB)]
    quota_mb: u64,
    /// Sends one user may make in any 60 seconds; further sends are refused, saying when to
    /// retry. 0: unlimited.
    #[arg(long, value_name = "N", default_value_t = ServerConfig::DEFAULT_MAX_SENDS_PER_MINUTE)]
    max_sends_per_minute: u32,
    /// Free space (MB) on the SQLite database's filesystem below which sends are refused;
    /// logins, inbox, read and delete go on. 0: no floor. Not applicable to PostgreSQL.
    /// [default: 64]
    #[arg(long, value_name = "MB")]
    min_free_mb: Option<u64>,
    /// Make ./demo from fixtures/ if missing, and serve it on 127.0.0.1:13000 (or --listen);
    /// its profiles are pointed at the address really listened on.
    #[arg(long)]
    demo: bool,
    /// More logging (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(Subcommand)]
enum Command {
    /// Print a shell completion script (bash, zsh, fish).
    Completions {
        /// The shell: bash, zsh, fish (or elvish, powershell).
        #[arg(value_name = "SHELL")]
        shell: Shell,
    },
    /// Print the manual page as roff.
    Man,
}

impl Command {
    /// The completion script or manual page asked for.
    fn output(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Command::Completions { shell } => {
                clap_complete::generate(*shell, &mut Cli::command(), "forkmail-server", &mut out)
            }
            Command::Man => clap_mangen::Man::new(Cli::command())
                .render(&mut out)
                .expect("writing to a Vec cannot fail"),
        }
        out
    }
}

/// How long the parent, exiting, waits for the logger to write what it holds.
const LOGGER_GRACE: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    logging::fill_standard_fds();
    let cli = Cli::parse();
    if let Some(command) = &cli.command {
        // Before the logger: nothing here is served or logged. A closed pipe is not an error.
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&command.output()).and_then(|()| out.flush());
        return ExitCode::SUCCESS;
    }
    // First, while single-threaded and before any key, store or socket: see logging.rs.
    if let Err(err) = logging::start(cli.verbose) {
        say(format_args!(
            "forkmail-server: cannot start the logger process: {err}; check the process limit"
        ));
        return ExitCode::FAILURE;
    }
    let code = match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            say(format_args!("forkmail-server: {err:#}"));
            ExitCode::FAILURE
        }
    };
    logging::finish(LOGGER_GRACE);
    code
}

/// A message for the person at the terminal, on stderr (through the logger, never blocking).
fn say(message: std::fmt::Arguments<'_>) {
    logging::print(&format!("{message}\n"));
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let demo_root = PathBuf::from("demo");
    // `--dir` wins over `--demo`; without `--dir` clap has made sure of `--demo`.
    let serving_demo = cli.dir.is_none();
    let dir = match &cli.dir {
        Some(dir) => dir.clone(),
        None => {
            let listen = cli
                .listen
                .as_deref()
                .unwrap_or(forkmail_keygen::deploy::DEFAULT_SERVER_ADDR);
            if demo::ensure(&demo_root, listen).context("making the demo deployment")? {
                say(format_args!(
                    "forkmail-server: made the demo deployment in ./demo from fixtures/"
                ));
            }
            forkmail_keygen::layout::server_dir(&demo_root).0
        }
    };
    let server_dir = ServerDir(dir.clone());
    if !dir.is_dir() {
        anyhow::bail!(
            "{}: no such directory; pass --dir DIR/server of a deployment made with forkmail-keygen init",
            dir.display()
        );
    }
    // Whoever can write the directory can swap the key or the database for their own.
    safety::check_dir(&dir)?;
    let settings = Settings::load(&server_dir)?;
    let server_key = keyfile::load_private_key(&server_dir.private_key())?;
    let server_public = keyfile::load_public_key(&server_dir.public_key())?;
    {
        use ring::signature::KeyPair;
        anyhow::ensure!(
            server_key.public_key().as_ref() == &server_public.der[..],
            "{} does not match {}; restore the deployment's server keys",
            server_dir.public_key().display(),
            server_dir.private_key().display()
        );
    }
    // Checked (and migrated) at start-up so an unreachable, foreign or too new store is
    // reported now, not per session; by a child process, so the parent never connects.
    let store = match cli.store {
        Some(store) => store,
        None => settings.store_location(&server_dir)?,
    };
    if let StoreLocation::Sqlite(db) = &store {
        check_database_files(db)?;
    }
    let migrated = preflight::check_store(&store)
        .map_err(|why| anyhow::anyhow!("cannot use the mail store {store}: {why}"))?;
    if migrated.from != migrated.to {
        tracing::info!(
            "migrated the mail store {store} from schema version {} to {}",
            migrated.from,
            migrated.to
        );
    }

    // Before the port is bound: a second server on an SQLite deployment is refused while the
    // first keeps running. (Several servers on one PostgreSQL store are the multi-host set-up,
    // docs/SCALING.md.)
    let instance = match &store {
        StoreLocation::Sqlite(_) => Some(InstanceLock::take(&dir)?),
        StoreLocation::Postgres(_) => None,
    };
    let config = ServerConfig {
        dir,
        store,
        // The demo's deployment.toml holds the --listen of the run that made it (perhaps port 0);
        // without --listen the demo serves 127.0.0.1:13000, as its help says.
        listen: match cli.listen {
            Some(listen) => listen,
            None if serving_demo => forkmail_keygen::deploy::DEFAULT_SERVER_ADDR.to_owned(),
            None => settings.server_addr.clone(),
        },
        max_sessions: cli.max_sessions,
        max_sessions_per_user: cli.max_sessions_per_user,
        queue_timeout: Duration::from_secs(cli.queue_timeout),
        handshake_timeout: Duration::from_secs(cli.handshake_timeout),
        idle_timeout: Duration::from_secs(cli.idle_timeout),
        write_timeout: Duration::from_secs(cli.write_timeout),
        freshness_window_ms: cli.freshness_window * 1000,
        shutdown_grace: Duration::from_secs(cli.shutdown_grace),
        throttle: ThrottlePolicy {
            free_failures: ServerConfig::DEFAULT_FREE_FAILURES,
            lockout_after: cli.lockout_after,
            lockout: Duration::from_secs(cli.lockout_secs),
        },
        proxy_protocol_from: cli.proxy_protocol_from,
        send_limits: SendLimits {
            quota_bytes: cli.quota_mb.saturating_mul(MB),
            max_per_minute: cli.max_sends_per_minute,
            min_free_bytes: cli
                .min_free_mb
                .unwrap_or(ServerConfig::DEFAULT_MIN_FREE_MB)
                .saturating_mul(MB),
        },
        password_policy: settings.policy(),
        ticket_lifetime: Duration::from_secs(cli.ticket_lifetime),
    };
    if matches!(config.store, StoreLocation::Postgres(_)) && cli.min_free_mb.is_some() {
        tracing::warn!(
            "--min-free-mb does not apply to a PostgreSQL store: its disk is the database \
             server's, which forkmail cannot see; PostgreSQL refuses writes itself when full"
        );
    }
    let shared = Shared {
        decoy: Decoy {
            password: PasswordHash::decoy(
                config.password_policy.kdf,
                config.password_policy.iterations,
            ),
            public_key: server_public.der,
        },
        server_key,
    };
    // The parent checks each hello's signature against these; loaded by a child, so the
    // parent never connects to the store.
    let user_keys = keys::load_blocking(&config.store).map_err(|why| {
        anyhow::anyhow!("cannot load the users' keys from {}: {why}", config.store)
    })?;
    tracing::info!(
        "loaded the public keys of {} users and {} enrollment invitations",
        user_keys.keys.len(),
        user_keys.invites.len()
    );
    let listener = forkmail_server::listener::bind_listener(&config.listen)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr()?;
    let daemon = Daemon::new(config, shared, listener, instance, user_keys)?;
    {
        // A closed stdout is not a reason to stop serving.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {local}").and_then(|()| out.flush());
    }
    if serving_demo {
        // The profiles name the address really listened on (port 0, or elsewhere than last
        // time), so the printed commands work as printed.
        let addr = demo::client_addr(local);
        let changed = demo::point_profiles_at(&demo_root, addr)
            .context("pointing the demo profiles at the server")?;
        if !changed.is_empty() {
            tracing::info!(
                "pointed the demo profiles of {} at {addr}",
                changed.join(", ")
            );
        }
        logging::print(&demo::instructions(&demo_root, addr));
    }
    tracing::info!(
        max_sessions = cli.max_sessions,
        "forkmail-server ready on {local}"
    );
    daemon.run()?;
    Ok(())
}

/// Refuses an SQLite store, or its `-wal` or `-shm`, that another user owns or that group or
/// others can read or write: it holds every mail and password hash. (A missing database is
/// left to the store check, which names it.)
fn check_database_files(db: &Path) -> Result<(), UnsafeFile> {
    for suffix in ["", "-wal", "-shm"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let path = PathBuf::from(name);
        if path.exists() {
            safety::check_private(&path)?;
        }
    }
    Ok(())
}

/// `--quota-mb` and `--min-free-mb` count in MiB.
const MB: u64 = 1024 * 1024;

fn parse_store(s: &str) -> Result<StoreLocation, String> {
    StoreLocation::parse(s).map_err(|e| e.to_string())
}

fn parse_max_sessions(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=1024).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a number of sessions from 1 to 1024")),
    }
}

fn parse_proxy_ip(s: &str) -> Result<IpAddr, String> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(ip);
    }
    Err(match s.parse::<SocketAddr>() {
        Ok(with_port) => format!(
            "{s:?} has a port; give only the proxy's IP address, e.g. {}",
            with_port.ip()
        ),
        Err(_) => format!(
            "{s:?} is not an IP address; give the proxy's address, e.g. 10.0.0.5 or fd00::5"
        ),
    })
}
