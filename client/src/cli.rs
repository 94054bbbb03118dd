//! The `forkmail` command line. Other tools (tests, benchmarks, scripts) rely on these names, so
//! they are a contract: `--profile`, `--server`, `--connect-timeout`, and the subcommands `send`,
//! `inbox`, `sent`, `read`, `delete` with their flags. Without a subcommand the program is interactive.

use std::path::{Path, PathBuf};

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};

const AFTER_HELP: &str = "\
Without a COMMAND, forkmail logs in once and reads commands interactively \
(send, inbox, sent, read ID, delete ID, help, quit).

The password is taken from the FORKMAIL_PASSWORD environment variable, or asked for on the \
terminal before connecting.

Exit status: 0 on success; 1 when the operation failed (login, unknown recipient, busy server, \
no such message, connection failure, ...); 2 on a usage error, which includes a title, body or \
recipient list over the limits (title 1-100 characters, body up to 1,000,000 characters, \
1-64 recipients named a-z 0-9 . _ -), checked before connecting.";

#[derive(Debug, Parser)]
#[command(
    name = "forkmail",
    version,
    about = "forkmail: send and read mail on a forkmail server",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// Required: the client profile directory made by forkmail-keygen, DIR/clients/NAME
    /// (profile.toml, user.key, pinned server.pub).
    // Not `required = true`: clap cannot require a global argument, so `profile_dir` checks it.
    #[arg(long, value_name = "DIR", global = true)]
    pub profile: Option<PathBuf>,

    /// Server address, instead of server_addr in the profile.
    #[arg(long, value_name = "HOST:PORT", global = true)]
    pub server: Option<String>,

    /// Seconds to wait for the server to take the session; a busy server queues new
    /// connections for up to 30 s before answering.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 120,
        global = true,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub connect_timeout: u64,

    /// Say more on stderr about connecting and logging in.
    #[arg(short, long, global = true)]
    pub verbose: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// The `--profile` directory, or clap's own "missing argument" error (exit status 2).
    pub fn profile_dir(&self) -> Result<&Path, clap::Error> {
        self.profile.as_deref().ok_or_else(|| {
            Cli::command().error(
                ErrorKind::MissingRequiredArgument,
                "the following required argument was not provided:\n  --profile <DIR>",
            )
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Send a mail; the body is read from standard input unless --file is given. Prints
    /// "sent message ID".
    Send {
        /// Recipients, separated with ';' (e.g. 'bob;carol').
        #[arg(long, value_name = "NAMES")]
        to: String,
        /// The title, 1-100 characters.
        #[arg(long)]
        title: String,
        /// Read the body from this file instead of standard input.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        /// Write the body in $VISUAL, else $EDITOR, on a private temporary file; an editor
        /// that fails or leaves the body empty sends nothing and the draft is kept.
        #[arg(long, conflicts_with = "file")]
        edit: bool,
    },
    /// List the inbox: id, '*' if unread, date, sender, title.
    Inbox {
        /// Print a JSON array of {id, from, date, title, read}.
        #[arg(long)]
        json: bool,
    },
    /// List what you have sent, oldest first: id, date, recipients, title. Kept after every
    /// recipient deleted the mail.
    Sent {
        /// Print a JSON array of {id, to, date, title}.
        #[arg(long)]
        json: bool,
    },
    /// Show one mail (and mark it read).
    Read {
        /// The message id, as listed by inbox.
        id: u64,
        /// Print a JSON object {id, from, to, date, title, body}.
        #[arg(long)]
        json: bool,
    },
    /// Delete one mail from the inbox.
    Delete {
        /// The message id, as listed by inbox.
        id: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("forkmail").chain(args.iter().copied()))
    }

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn repl_when_no_command() {
        let cli = parse(&["--profile", "d/clients/bob"]).unwrap();
        assert_eq!(cli.profile, Some(PathBuf::from("d/clients/bob")));
        assert_eq!(cli.command, None);
        assert_eq!(cli.connect_timeout, 120);
        assert_eq!(cli.server, None);
    }

    #[test]
    fn one_shot_commands() {
        let cli = parse(&[
            "--profile",
            "p",
            "--server",
            "127.0.0.1:9",
            "send",
            "--to",
            "bob;carol",
            "--title",
            "T",
        ])
        .unwrap();
        assert_eq!(cli.server.as_deref(), Some("127.0.0.1:9"));
        assert_eq!(
            cli.command,
            Some(Command::Send {
                to: "bob;carol".into(),
                title: "T".into(),
                file: None,
                edit: false
            })
        );
        let cli = parse(&["--profile", "p", "inbox", "--json"]).unwrap();
        assert_eq!(cli.command, Some(Command::Inbox { json: true }));
        let cli = parse(&["--profile", "p", "sent", "--json"]).unwrap();
        assert_eq!(cli.command, Some(Command::Sent { json: true }));
        let cli = parse(&["--profile", "p", "read", "12"]).unwrap();
        assert_eq!(
            cli.command,
            Some(Command::Read {
                id: 12,
                json: false
            })
        );
        let cli = parse(&["--profile", "p", "delete", "3"]).unwrap();
        assert_eq!(cli.command, Some(Command::Delete { id: 3 }));
    }

    #[test]
    fn global_flags_may_follow_the_command() {
        let cli = parse(&["inbox", "--profile", "p", "--connect-timeout", "5"]).unwrap();
        assert_eq!(cli.profile, Some(PathBuf::from("p")));
        assert_eq!(cli.connect_timeout, 5);
    }

    #[test]
    fn usage_errors() {
        let err = |args: &[&str]| parse(args).unwrap_err().kind();
        let no_profile = parse(&["inbox"]).unwrap();
        assert_eq!(
            no_profile.profile_dir().unwrap_err().kind(),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            err(&["--profile", "p", "read", "x"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            err(&["--profile", "p", "read", "-1"]),
            ErrorKind::UnknownArgument
        );
        assert_eq!(
            err(&["--profile", "p", "send", "--title", "T"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            err(&["--profile", "p", "frobnicate"]),
            ErrorKind::InvalidSubcommand
        );
        assert_eq!(
            err(&["--profile", "p", "--connect-timeout", "0"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(err(&["--version"]), ErrorKind::DisplayVersion);
        assert_eq!(err(&["--help"]), ErrorKind::DisplayHelp);
    }
}
