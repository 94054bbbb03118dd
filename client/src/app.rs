//! The `forkmail` program around the library: turns the command line into [`ConnectOptions`],
//! gets the password, logs in, and hands over to the one-shot commands or the REPL.
//!
//! The order matters for the user: everything that can be checked locally (arguments, limits,
//! the profile and its keys) is checked before the password is asked for, and the password is
//! asked for before connecting, so a server slot is never held while someone types.
//!
//! Login tickets (PROTOCOL.md §11): with a ticket file for this user and server
//! ([`TicketFile`]), the password is not asked for; the login presents the ticket with the user
//! key. A refused ticket (expired, revoked) is deleted and the login starts over with the
//! password, asked for only then (the refused connection is closed first). A password login's
//! new ticket is saved for the next command.

use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use forkmail_keygen::invite::InviteToken;
use forkmail_protocol::limits::{validate_user_name, MAX_PASSWORD_LEN};

use crate::cli::{Cli, Command, EnrollArgs};
use crate::config::{self, Env};
use crate::enroll::{self, EnrollOptions};
use crate::error::AppError;
use crate::error::ClientError;
use crate::escape::escape_line;
use crate::session::{ConnectOptions, Session, DEFAULT_IO_TIMEOUT};
use crate::ticket::TicketFile;
use crate::{commands, repl};

/// Environment variable that supplies the password without a prompt (for scripts and tests).
pub const PASSWORD_ENV: &str = "FORKMAIL_PASSWORD";

/// Runs the program for a parsed command line: `completions` and `man` at once, everything else
/// with the profile that `--profile`, `FORKMAIL_PROFILE` or the config file names.
pub fn run(cli: &Cli) -> Result<(), AppError> {
    match &cli.command {
        Some(Command::Completions { shell }) => return print_bytes(&Cli::completions(*shell)),
        Some(Command::Man) => return print_bytes(&Cli::man_page()),
        // Makes the profile, so it needs none.
        Some(Command::Enroll(args)) => return enroll(cli, args),
        _ => {}
    }
    let profile_dir = config::find_profile(cli.profile.as_deref(), &Env::from_process())?;
    let login = Login {
        profile_dir: &profile_dir,
        server: cli.server.as_deref(),
        connect_timeout: Duration::from_secs(cli.connect_timeout),
        verbose: cli.verbose,
        password: None,
    };
    match &cli.command {
        Some(command) => commands::run(command, &login),
        None => repl::run(&login),
    }
}

/// `forkmail enroll`: every argument checked before the keys are made, the password before
/// connecting.
fn enroll(cli: &Cli, args: &EnrollArgs) -> Result<(), AppError> {
    let Some(server_addr) = cli.server.clone() else {
        return Err(AppError::Usage(
            "enroll needs --server HOST:PORT, the server the invitation is for".into(),
        ));
    };
    let Some(profile_dir) = cli.profile.clone() else {
        return Err(AppError::Usage(
            "enroll needs --profile DIR, a new directory for your profile".into(),
        ));
    };
    validate_user_name(&args.user).map_err(|e| AppError::Usage(format!("--user: {e}")))?;
    let token =
        InviteToken::parse(&args.invite).map_err(|e| AppError::Usage(format!("--invite: {e}")))?;
    if !args.server_fingerprint.starts_with("SHA256:") {
        return Err(AppError::Usage(
            "--server-fingerprint: a fingerprint starts with SHA256: (forkmail-keygen fingerprint DIR/server/server.pub prints it)".into(),
        ));
    }
    enroll::check_profile_dir(&profile_dir)?;
    let password = new_password(&args.user)?;
    let options = EnrollOptions {
        server_addr,
        server_fingerprint: args.server_fingerprint.clone(),
        user: args.user.clone(),
        token,
        profile_dir,
        password,
        connect_timeout: Duration::from_secs(cli.connect_timeout),
        io_timeout: DEFAULT_IO_TIMEOUT,
    };
    let note = |message: &str| {
        if cli.verbose {
            tell(message);
        }
    };
    enroll::enroll(&options, &note)?;
    print(&format!(
        "enrolled {} on {}: profile {}\n",
        options.user,
        options.server_addr,
        options.profile_dir.display()
    ))
}

/// A new password from `FORKMAIL_PASSWORD`, else asked for twice on the terminal; it must keep
/// the rules `forkmail-keygen add-user` keeps (not empty, at most 1024 bytes).
fn new_password(user: &str) -> Result<String, AppError> {
    let password = match std::env::var(PASSWORD_ENV) {
        Ok(password) => password,
        Err(_) => {
            let first = rpassword::prompt_password(format!("New password for {user}: "))
                .map_err(AppError::Password)?;
            let second = rpassword::prompt_password(format!("Repeat the password for {user}: "))
                .map_err(AppError::Password)?;
            if first != second {
                return Err(AppError::Usage(
                    "the two passwords differ; nothing was sent".into(),
                ));
            }
            first
        }
    };
    if password.is_empty() {
        return Err(AppError::Usage("the password must not be empty".into()));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(AppError::Usage(format!(
            "the password is longer than {MAX_PASSWORD_LEN} bytes"
        )));
    }
    Ok(password)
}

/// How to log in, from the command line.
#[derive(Debug, Clone, Copy)]
pub struct Login<'a> {
    pub profile_dir: &'a Path,
    /// `--server`, overriding the profile's address.
    pub server: Option<&'a str>,
    pub connect_timeout: Duration,
    pub verbose: bool,
    /// A password already known (the REPL's, for a one-shot verb it runs), used instead of
    /// `FORKMAIL_PASSWORD` or the prompt.
    pub password: Option<&'a str>,
}

impl Login<'_> {
    /// Loads the profile and keys (no network, no password yet).
    pub fn options(&self) -> Result<ConnectOptions, AppError> {
        let mut options = ConnectOptions::from_profile(self.profile_dir)?;
        if let Some(addr) = self.server {
            options.server_addr = addr.to_owned();
        }
        options.connect_timeout = self.connect_timeout;
        Ok(options)
    }

    /// Gets the password for `options.user`, then connects and logs in.
    pub fn connect(&self, options: ConnectOptions) -> Result<Session, AppError> {
        self.open(&self.with_password(options)?)
    }

    /// The options with the password set (from the environment or the terminal); it is wiped
    /// when they are dropped. With a usable ticket file, the ticket is set instead, and the
    /// password only if known without asking (`FORKMAIL_PASSWORD`, the REPL's): [`Self::open`]
    /// asks for it if the ticket is refused.
    pub fn with_password(&self, mut options: ConnectOptions) -> Result<ConnectOptions, AppError> {
        options.ticket = self
            .ticket_file(&options)
            .load(forkmail_protocol::now_millis());
        let known = match self.password {
            Some(known) => Some(known.to_owned()),
            None => std::env::var(PASSWORD_ENV).ok(),
        };
        let password = match known {
            Some(password) => password,
            None if options.ticket.is_some() => String::new(),
            None => password(&options.user)?,
        };
        Ok(options.with_password(password))
    }

    /// This user's ticket file for the server `options` pins.
    pub fn ticket_file(&self, options: &ConnectOptions) -> TicketFile {
        TicketFile::from_env(self.profile_dir, &options.pinned_server_key, &options.user)
    }

    /// Connects and logs in with options from [`Self::with_password`]: with the ticket if they
    /// hold one, else (or once it is refused) with the password, saving the ticket the server
    /// then gives.
    pub fn open(&self, options: &ConnectOptions) -> Result<Session, AppError> {
        self.note(&format!(
            "connecting to {} as {}; pinned server key {}",
            options.server_addr,
            options.user,
            options.pinned_server_key.fingerprint()
        ));
        let tickets = self.ticket_file(options);
        if options.ticket.is_some() {
            match Session::connect(options) {
                Ok(session) => {
                    self.note(&format!(
                        "logged in as {} with the login ticket {}",
                        options.user,
                        tickets.path().display()
                    ));
                    return Ok(session);
                }
                Err(ClientError::TicketRefused) => {
                    tickets.delete();
                    self.note("the login ticket was refused (expired or revoked); deleted it, logging in with the password");
                }
                Err(err) => return Err(err.into()),
            }
        }
        let mut by_password = options.clone();
        by_password.ticket = None;
        if by_password.password.is_empty() {
            by_password.password = password(&options.user)?;
        }
        let mut session = Session::connect(&by_password)?;
        self.note(&format!("logged in as {}", options.user));
        if let Some(issued) = session.take_ticket() {
            match tickets.save(&issued) {
                Ok(()) => self.note(&format!(
                    "saved a login ticket in {}",
                    tickets.path().display()
                )),
                Err(err) => self.note(&format!(
                    "could not save the login ticket in {} ({err}); the next command asks for the password again",
                    tickets.path().display()
                )),
            }
        }
        Ok(session)
    }

    /// A progress message on stderr, with `-v` only.
    pub fn note(&self, message: &str) {
        if self.verbose {
            tell(message);
        }
    }
}

/// The password from `FORKMAIL_PASSWORD`, else asked for on the terminal.
fn password(user: &str) -> Result<String, AppError> {
    if let Ok(password) = std::env::var(PASSWORD_ENV) {
        return Ok(password);
    }
    rpassword::prompt_password(format!("Password for {user}: ")).map_err(AppError::Password)
}

/// Writes results to stdout and flushes, so a closed pipe shows up here as an error the caller
/// can end quietly on, rather than as a panic inside `println!`.
pub fn print(text: &str) -> Result<(), AppError> {
    print_bytes(text.as_bytes())
}

/// [`print`] for bytes (a completion script, a manual page).
fn print_bytes(bytes: &[u8]) -> Result<(), AppError> {
    let mut out = io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()?;
    Ok(())
}

/// A message for the user on stderr, on one line, prefixed like every error. Messages can hold
/// text from the server or another user (an error echoing the server, a bad id typed back), so
/// the whole line goes through [`escape_line`]: what was escaped already stays as it is. Errors
/// writing it are ignored: there is nowhere left to report them.
pub fn tell(message: &str) {
    let _ = writeln!(io::stderr(), "forkmail: {}", escape_line(message));
}
