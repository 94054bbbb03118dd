//! `forkmail-keygen`: makes a forkmail deployment, once per deployment, and prints key
//! fingerprints (`fingerprint FILE`) for checking the key a client has pinned.

use std::io::Write;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::Shell;
use forkmail_keygen::deploy::{self, InitOptions, NewUser, UsersFile};
use forkmail_keygen::invite::parse_ttl;
use forkmail_keygen::keyfile::load_any_public_key;
use forkmail_keygen::password::{
    HashPolicy, Kdf, PasswordHash, DEFAULT_SHA256_ITERATIONS, DEFAULT_SHA512_ITERATIONS,
};
use forkmail_store::StoreLocation;

/// Environment variable that supplies a password without a prompt (for scripts).
const PASSWORD_ENV: &str = "FORKMAIL_PASSWORD";

#[derive(Parser)]
#[command(
    name = "forkmail-keygen",
    version,
    about = "Make a forkmail deployment: server key, user keys, user database, client profiles",
    max_term_width = 80
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new deployment in DIR (refuses to overwrite one).
    Init {
        /// Directory to create DIR/server and DIR/clients/NAME in.
        dir: PathBuf,
        /// TOML file of [[user]] tables with `name` and optional `password` (asked for if absent).
        #[arg(long)]
        users: PathBuf,
        /// Address clients will connect to, written into each profile.
        #[arg(long, default_value = deploy::DEFAULT_SERVER_ADDR, value_name = "HOST:PORT")]
        server_addr: String,
        /// RSA key size for the server and every user.
        #[arg(long, default_value_t = deploy::DEFAULT_BITS, value_parser = parse_bits)]
        bits: usize,
        /// Password hash for every user: argon2id (m=19 MiB, t=2, p=1; or argon2id-mKIB-pLANES),
        /// pbkdf2-sha512 or pbkdf2-sha256. [default: argon2id, or pbkdf2-sha512 when only
        /// --kdf-iterations is given]
        #[arg(long, value_name = "NAME", value_parser = parse_kdf)]
        kdf: Option<Kdf>,
        /// The hash's time cost: PBKDF2-HMAC iterations (alone: PBKDF2-HMAC-SHA512 at this
        /// count, as before Argon2id), or Argon2id passes. Lower it for tests and benchmarks only.
        /// [default: 2 for argon2id, 210000 for pbkdf2-sha512, 600000 for pbkdf2-sha256]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        kdf_iterations: Option<u32>,
        /// Keep mail in this PostgreSQL database instead of DIR/server/mail.db:
        /// postgresql://user@host:port/dbname (password from PGPASSWORD or a passfile; a password
        /// in the URL is used here but never written down). It must hold no forkmail store yet.
        #[arg(long, value_name = "URL", value_parser = parse_store)]
        store: Option<StoreLocation>,
    },
    /// Add one user to an existing deployment (password from FORKMAIL_PASSWORD or a prompt).
    AddUser {
        /// The deployment directory given to `init`.
        dir: PathBuf,
        /// The new user's name: 1-32 of a-z 0-9 . _ -, starting with a letter or digit.
        name: String,
    },
    /// Invite NAME to enroll from their own machine with keys nobody else sees (forkmail enroll):
    /// prints a single-use token, one line; only its hash is stored.
    Invite {
        /// The deployment directory given to `init`.
        dir: PathBuf,
        /// The user name the token may enroll: 1-32 of a-z 0-9 . _ -, not yet registered.
        name: String,
        /// How long the token stays valid: a number and s, m, h or d (30m, 24h, 7d).
        #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_ttl)]
        ttl: Duration,
        /// Print a JSON object {user, token, expires, server_fingerprint} instead.
        #[arg(long)]
        json: bool,
    },
    /// Print the fingerprint (SHA256:...) of a key file, e.g. DIR/server/server.pub on the server
    /// host, to compare with the pinned key the client names.
    Fingerprint {
        /// A public key file (server.pub, on the server or in a profile) or a private key file
        /// (server.key, user.key), whose public half is printed.
        file: PathBuf,
    },
    /// Time one password check with Argon2id (m=19 MiB, t=2, p=1) and each PBKDF2 variant at
    /// OWASP's recommended costs.
    KdfBench,
    /// Print a shell completion script (bash, zsh, fish).
    Completions {
        /// The shell: bash, zsh, fish (or elvish, powershell).
        #[arg(value_name = "SHELL")]
        shell: Shell,
    },
    /// Print the manual page as roff.
    Man,
}

/// Writes a completion script or manual page to stdout; a closed pipe is not an error.
fn print_bytes(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn parse_store(s: &str) -> Result<StoreLocation, String> {
    StoreLocation::parse(s).map_err(|e| e.to_string())
}

fn parse_kdf(s: &str) -> Result<Kdf, String> {
    Kdf::try_from(s.to_owned())
}

/// OWASP's recommended time cost for `kdf`.
fn default_cost(kdf: Kdf) -> u32 {
    match kdf {
        Kdf::Pbkdf2Sha512 => DEFAULT_SHA512_ITERATIONS,
        Kdf::Pbkdf2Sha256 => DEFAULT_SHA256_ITERATIONS,
        Kdf::Argon2id { .. } => HashPolicy::DEFAULT.iterations.get(),
    }
}

/// `--kdf` and `--kdf-iterations` as a policy: `--kdf-iterations` alone keeps its meaning from
/// before Argon2id (PBKDF2-HMAC-SHA512 iterations), so existing scripts make what they made.
fn hash_policy(kdf: Option<Kdf>, iterations: Option<u32>) -> HashPolicy {
    let kdf = match (kdf, iterations) {
        (Some(kdf), _) => kdf,
        (None, Some(_)) => Kdf::Pbkdf2Sha512,
        (None, None) => HashPolicy::DEFAULT.kdf,
    };
    let cost = iterations.unwrap_or_else(|| default_cost(kdf));
    HashPolicy {
        kdf,
        iterations: NonZeroU32::new(cost).unwrap_or(NonZeroU32::MIN),
    }
}

fn parse_bits(s: &str) -> Result<usize, String> {
    let bits: usize = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if deploy::ALLOWED_BITS.contains(&bits) {
        Ok(bits)
    } else {
        Err(format!("{bits} is not supported; use 2048, 3072 or 4096"))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("forkmail-keygen: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Init {
            dir,
            users,
            server_addr,
            bits,
            kdf,
            kdf_iterations,
            store,
        } => {
            let hash = hash_policy(kdf, kdf_iterations);
            let kdf_chosen = kdf.is_some();
            let file = UsersFile::load(&users)?;
            let mut new_users = Vec::with_capacity(file.user.len());
            for entry in file.user {
                let password = match entry.password {
                    Some(p) => p,
                    None => prompt_new_password(&entry.name)?,
                };
                new_users.push(NewUser {
                    name: entry.name,
                    password,
                });
            }
            let recommended = default_cost(hash.kdf);
            if hash.iterations.get() < recommended {
                eprintln!(
                    "forkmail-keygen: warning: a time cost of {} for {} is below the \
                     recommended {recommended}; use this for tests only",
                    hash.iterations, hash.kdf
                );
            }
            if store.as_ref().is_some_and(StoreLocation::has_password) {
                eprintln!(
                    "forkmail-keygen: note: the store URL's password is not written to \
                     deployment.toml; give it to forkmail-server through PGPASSWORD or a passfile"
                );
            }
            let opts = InitOptions {
                server_addr,
                bits,
                hash,
                kdf_chosen,
                store,
            };
            let started = Instant::now();
            deploy::init(&dir, &new_users, &opts)?;
            print_summary(&dir, &new_users, started);
            Ok(())
        }
        Command::AddUser { dir, name } => {
            let password = match std::env::var(PASSWORD_ENV) {
                Ok(p) => p,
                Err(_) => prompt_new_password(&name)?,
            };
            let user = NewUser { name, password };
            deploy::add_user(&dir, &user)?;
            println!(
                "added {}: profile {}",
                user.name,
                forkmail_keygen::layout::profile_dir(&dir, &user.name)
                    .0
                    .display()
            );
            Ok(())
        }
        Command::Invite {
            dir,
            name,
            ttl,
            json,
        } => {
            let issued = deploy::invite(&dir, &name, ttl)?;
            let token = issued.token.to_text();
            let line = if json {
                let expires = chrono::DateTime::from_timestamp_millis(issued.expires_ms as i64)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default();
                serde_json::json!({
                    "user": issued.user,
                    "token": token,
                    "expires": expires,
                    "server_fingerprint": issued.server_fingerprint,
                })
                .to_string()
            } else {
                token
            };
            print_bytes(format!("{line}\n").as_bytes())
        }
        Command::Fingerprint { file } => {
            println!("{}", load_any_public_key(&file)?.fingerprint());
            Ok(())
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "forkmail-keygen", &mut script);
            print_bytes(&script)
        }
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut page)?;
            print_bytes(&page)
        }
        Command::KdfBench => {
            let argon2id = HashPolicy::DEFAULT;
            let rows = [
                (Kdf::Pbkdf2Sha512, DEFAULT_SHA512_ITERATIONS, "iterations"),
                (Kdf::Pbkdf2Sha256, DEFAULT_SHA256_ITERATIONS, "iterations"),
                (argon2id.kdf, argon2id.iterations.get(), "passes"),
            ];
            let mut medians = Vec::with_capacity(rows.len());
            for (kdf, cost, unit) in rows {
                let its = NonZeroU32::new(cost).expect("nonzero constant");
                let hash = PasswordHash::new("benchmark", kdf, its);
                // The median of several rounds: a shared machine's noise moves the mean.
                let mut samples: Vec<f64> = (0..11)
                    .map(|_| {
                        let started = Instant::now();
                        assert!(hash.verify("benchmark"));
                        started.elapsed().as_secs_f64() * 1000.0
                    })
                    .collect();
                samples.sort_by(f64::total_cmp);
                let ms = samples[samples.len() / 2];
                medians.push(ms);
                println!(
                    "{:<18} {:>7} {:<10}  {:>7.1} ms per verify (median of 11)",
                    kdf.name(),
                    cost,
                    unit,
                    ms
                );
            }
            let (pbkdf2, argon2) = (medians[0], medians[2]);
            println!(
                "argon2id (the default for new passwords) costs {:.2}x pbkdf2-sha512: {}",
                argon2 / pbkdf2,
                if argon2 <= pbkdf2 {
                    "no slower, as the default requires"
                } else {
                    "SLOWER here: consider --kdf pbkdf2-sha512 for this machine"
                }
            );
            Ok(())
        }
    }
}

fn print_summary(dir: &Path, users: &[NewUser], started: Instant) {
    println!(
        "created deployment {} in {:.1} s",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "  server: {}",
        forkmail_keygen::layout::server_dir(dir).0.display()
    );
    for user in users {
        println!(
            "  {}: {}",
            user.name,
            forkmail_keygen::layout::profile_dir(dir, &user.name)
                .0
                .display()
        );
    }
}

/// Asks for a new password twice on the terminal.
fn prompt_new_password(name: &str) -> anyhow::Result<String> {
    let first = rpassword::prompt_password(format!("New password for {name}: "))
        .map_err(|e| anyhow::anyhow!("cannot read a password for {name} from the terminal ({e}); put it in the users file or set {PASSWORD_ENV}"))?;
    let second = rpassword::prompt_password(format!("Repeat the password for {name}: "))?;
    anyhow::ensure!(
        first == second,
        "the two passwords for {name} differ; nothing was created"
    );
    Ok(first)
}
