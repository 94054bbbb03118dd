//! The `forkmail` command line. Other tools (tests, benchmarks, scripts) rely on these names, so
//! they are a contract: `--profile`, `--server`, `--connect-timeout`, and the subcommands `send`,
//! `inbox`, `sent`, `read`, `delete` with their flags. Without a subcommand the program is interactive.
//! `completions SHELL` and `man` print the shell completions and the manual page, needing no
//! profile. Help is wrapped to at most 80 columns whatever the terminal's width.

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};
use clap_complete::Shell;

use crate::config::parse_server;

const AFTER_HELP: &str = "\
Without a COMMAND, forkmail logs in once and reads commands interactively \
(send, inbox, sent, read ID, delete ID, help, quit).

The profile is --profile DIR, else the FORKMAIL_PROFILE environment variable, else \
profile = \"DIR\" in $XDG_CONFIG_HOME/forkmail/config.toml (default ~/.config/forkmail/config.toml; \
a relative DIR is taken from the file's directory).

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
    after_help = AFTER_HELP,
    max_term_width = 80
)]
pub struct Cli {
    /// The client profile directory made by forkmail-keygen, DIR/clients/NAME (profile.toml,
    /// user.key, pinned server.pub). Default: FORKMAIL_PROFILE, else profile in config.toml.
    // Optional: `config::find_profile` falls back to the environment and the config file.
    #[arg(long, value_name = "DIR", global = true)]
    pub profile: Option<PathBuf>,

    /// Server address, instead of server_addr in the profile; HOST alone means port 13000
    /// (IPv6 in brackets: [::1]:13000).
    #[arg(long, value_name = "HOST[:PORT]", global = true, value_parser = parse_server)]
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
    /// The shell completion script for `shell`.
    pub fn completions(shell: Shell) -> Vec<u8> {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "forkmail", &mut script);
        script
    }

    /// The manual page, as roff.
    pub fn man_page() -> Vec<u8> {
        let mut page = Vec::new();
        clap_mangen::Man::new(Cli::command())
            .render(&mut page)
            .expect("writing to a Vec cannot fail");
        page
    }
}

/// The verbs. The one definition of their arguments: the one-shot commands parse them from the
/// command line, and the REPL parses its lines with the same definitions.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Send a mail; the body is read from standard input unless --file is given. Prints
    /// "sent message ID".
    Send(SendArgs),
    /// List the inbox: id, '*' if unread, date, sender, title.
    ///
    /// Oldest first, then a count line ("12 messages, 3 unread").
    Inbox(InboxArgs),
    /// List what you have sent, oldest first: id, date, recipients, title. Kept after every
    /// recipient deleted the mail.
    Sent {
        /// Print a JSON array of {id, to, date, title}.
        #[arg(long)]
        json: bool,
    },
    /// Show one mail (and mark it read).
    ///
    /// On a terminal, a mail taller than the screen goes through $PAGER (default less -R).
    Read(ReadArgs),
    /// Delete mails from the inbox.
    ///
    /// All of them, or none if an id is not in the inbox (the missing ids are named).
    Delete(DeleteArgs),
    /// Reply to a mail, titled "Re: TITLE".
    ///
    /// To its sender (--all: and its other recipients, never you); the body from standard
    /// input, --file or --edit.
    Reply(ReplyArgs),
    /// Forward a mail, titled "Fwd: TITLE".
    ///
    /// Your text (standard input, --file or --edit), then the original's headers and body.
    Forward(ForwardArgs),
    /// Mark mails unread.
    ///
    /// All of them, or none if an id is not in the inbox (the missing ids are named).
    Unread(UnreadArgs),
    /// Revoke every login ticket of this user on the server and delete this profile's ticket
    /// file: the next command asks for the password again.
    Logout,
    /// List your contacts' keys as pinned at first use, with fingerprints and whether the
    /// server's directory still serves them; or accept a changed key, or rotate your own.
    ///
    /// A contact whose key changed without being signed by the pinned key is shown as
    /// "CHANGED" and gets no mail until you compare fingerprints with them and run
    /// `keys --accept NAME`.
    Keys(KeysArgs),
    /// Make your own profile with an invitation (forkmail-keygen invite): your keys are made
    /// here and never leave this machine.
    ///
    /// Needs --server HOST:PORT and --profile DIR (a new or empty directory); the password is
    /// FORKMAIL_PASSWORD, or asked for twice.
    #[command(override_usage = "forkmail enroll --server HOST:PORT --profile DIR \\
       --server-fingerprint SHA256:... --user NAME --invite TOKEN")]
    Enroll(EnrollArgs),
    /// Print a shell completion script (bash, zsh, fish); see the README for where to put it.
    Completions {
        /// The shell: bash, zsh, fish (or elvish, powershell).
        #[arg(value_name = "SHELL")]
        shell: Shell,
    },
    /// Print the manual page as roff (forkmail man > ~/.local/share/man/man1/forkmail.1).
    Man,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct KeysArgs {
    /// Print JSON: an array of {user, fingerprint, age_recipient, serial, origin, pinned,
    /// state}, yours first (state "you"); with --accept or --rotate, one object.
    #[arg(long)]
    pub json: bool,
    /// Pin NAME's current key from the server's directory in place of the pinned one, after
    /// comparing its fingerprint with NAME by a means you trust (prints both).
    #[arg(long, value_name = "NAME", conflicts_with = "rotate")]
    pub accept: Option<String>,
    /// Make a new age identity and publish it, signed by your key; older identities are kept
    /// in the profile's age.key so that old mail stays readable.
    #[arg(long)]
    pub rotate: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct EnrollArgs {
    /// The server key's fingerprint, SHA256:..., from the administrator (the "server_fingerprint"
    /// of forkmail-keygen invite --json); checked before anything is sent.
    #[arg(long, value_name = "SHA256:...")]
    pub server_fingerprint: String,
    /// The user name the invitation was made for.
    #[arg(long, value_name = "NAME")]
    pub user: String,
    /// The invitation token, fmi-..., that forkmail-keygen invite printed.
    #[arg(long, value_name = "TOKEN")]
    pub invite: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct SendArgs {
    /// Recipients, separated with ';' (e.g. 'bob;carol').
    #[arg(long, value_name = "NAMES")]
    pub to: String,
    /// The title, 1-100 characters.
    #[arg(long)]
    pub title: String,
    /// Read the body from this file instead of standard input.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Write the body in $VISUAL, else $EDITOR, on a private temporary file; an editor
    /// that fails or leaves the body empty sends nothing and the draft is kept.
    #[arg(long, conflicts_with = "file")]
    pub edit: bool,
    /// Print {"id": N} instead of "sent message N".
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct InboxArgs {
    /// Print a JSON array of {id, from, date, title, read}.
    #[arg(long)]
    pub json: bool,
    /// Only mails not read yet.
    #[arg(long)]
    pub unread: bool,
    /// Only mails from this user.
    #[arg(long, value_name = "USER")]
    pub from: Option<String>,
    /// Only mails whose title or sender holds TEXT, ignoring case.
    #[arg(long, value_name = "TEXT")]
    pub search: Option<String>,
    /// Only the newest N of the mails that match.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Only mails with an id below ID: the page before one that starts at ID.
    #[arg(long, value_name = "ID")]
    pub before: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ReadArgs {
    /// The message id, as listed by inbox.
    pub id: u64,
    /// Print a JSON object {id, from, to, date, title, body}.
    #[arg(long)]
    pub json: bool,
    /// Print the mail, never through $PAGER.
    #[arg(long)]
    pub no_pager: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct DeleteArgs {
    /// The message ids, as listed by inbox.
    #[arg(required = true, num_args = 1.., value_name = "ID")]
    pub ids: Vec<u64>,
    /// Print {"deleted": [IDS]}.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct UnreadArgs {
    /// The message ids, as listed by inbox.
    #[arg(required = true, num_args = 1.., value_name = "ID")]
    pub ids: Vec<u64>,
    /// Print {"unread": [IDS]}.
    #[arg(long)]
    pub json: bool,
}

/// Where a reply's or forward's own text comes from; standard input when neither is given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct BodyArgs {
    /// Write the text in $VISUAL, else $EDITOR.
    ///
    /// On a private (0600) temporary file holding the original (quoted for a reply); an
    /// editor that fails or leaves no text cancels.
    #[arg(long, conflicts_with = "file")]
    pub edit: bool,
    /// Read the text from this file.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ReplyArgs {
    /// The id of the mail to answer, as listed by inbox.
    pub id: u64,
    /// Also to the mail's other recipients (never you).
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub body: BodyArgs,
    /// Print {"id": N} instead of "sent message N".
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ForwardArgs {
    /// The id of the mail to forward, as listed by inbox.
    pub id: u64,
    /// Recipients, separated with ';' (e.g. 'bob;carol').
    #[arg(long, value_name = "NAMES")]
    pub to: String,
    #[command(flatten)]
    pub body: BodyArgs,
    /// Print {"id": N} instead of "sent message N".
    #[arg(long)]
    pub json: bool,
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
            Some(Command::Send(SendArgs {
                to: "bob;carol".into(),
                title: "T".into(),
                file: None,
                edit: false,
                json: false,
            }))
        );
        let cli = parse(&["--profile", "p", "inbox", "--json"]).unwrap();
        assert_eq!(
            cli.command,
            Some(Command::Inbox(InboxArgs {
                json: true,
                ..InboxArgs::default()
            }))
        );
        let cli = parse(&["--profile", "p", "sent", "--json"]).unwrap();
        assert_eq!(cli.command, Some(Command::Sent { json: true }));
        let cli = parse(&["--profile", "p", "read", "12"]).unwrap();
        assert_eq!(
            cli.command,
            Some(Command::Read(ReadArgs {
                id: 12,
                json: false,
                no_pager: false,
            }))
        );
        let cli = parse(&["--profile", "p", "delete", "3"]).unwrap();
        assert_eq!(
            cli.command,
            Some(Command::Delete(DeleteArgs {
                ids: vec![3],
                json: false,
            }))
        );
    }

    #[test]
    fn the_verbs_of_issue_10() {
        use clap::error::ErrorKind;
        let command = |args: &[&str]| parse(args).unwrap().command.unwrap();
        assert_eq!(
            command(&["reply", "4", "--all", "--edit", "--json"]),
            Command::Reply(ReplyArgs {
                id: 4,
                all: true,
                body: BodyArgs {
                    edit: true,
                    file: None
                },
                json: true,
            })
        );
        assert_eq!(
            command(&["forward", "4", "--to", "carol", "--file", "f"]),
            Command::Forward(ForwardArgs {
                id: 4,
                to: "carol".into(),
                body: BodyArgs {
                    edit: false,
                    file: Some(PathBuf::from("f"))
                },
                json: false,
            })
        );
        assert_eq!(
            command(&["unread", "1", "2"]),
            Command::Unread(UnreadArgs {
                ids: vec![1, 2],
                json: false
            })
        );
        assert_eq!(
            command(&["delete", "1", "2", "--json"]),
            Command::Delete(DeleteArgs {
                ids: vec![1, 2],
                json: true
            })
        );
        assert_eq!(
            command(&[
                "inbox", "--unread", "--from", "bob", "--search", "Hi", "--limit", "5", "--before",
                "40"
            ]),
            Command::Inbox(InboxArgs {
                json: false,
                unread: true,
                from: Some("bob".into()),
                search: Some("Hi".into()),
                limit: Some(5),
                before: Some(40),
            })
        );
        let err = |args: &[&str]| parse(args).unwrap_err().kind();
        assert_eq!(
            err(&["reply", "4", "--edit", "--file", "f"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(err(&["delete"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(err(&["unread"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(err(&["forward", "4"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(err(&["inbox", "--limit", "0"]), ErrorKind::ValueValidation);
    }

    #[test]
    fn keys_takes_accept_or_rotate_never_both() {
        let keys = |args: &[&str]| parse(args).unwrap().command;
        assert_eq!(
            keys(&["keys", "--json"]),
            Some(Command::Keys(KeysArgs {
                json: true,
                ..KeysArgs::default()
            }))
        );
        assert_eq!(
            keys(&["keys", "--accept", "bob"]),
            Some(Command::Keys(KeysArgs {
                accept: Some("bob".into()),
                ..KeysArgs::default()
            }))
        );
        assert_eq!(
            parse(&["keys", "--accept", "bob", "--rotate"])
                .unwrap_err()
                .kind(),
            clap::error::ErrorKind::ArgumentConflict
        );
    }

    #[test]
    fn server_without_a_port_is_given_port_13000() {
        let cli = parse(&["--server", "localhost", "inbox"]).unwrap();
        assert_eq!(cli.server.as_deref(), Some("localhost:13000"));
        let cli = parse(&["inbox", "--server", "[::1]"]).unwrap();
        assert_eq!(cli.server.as_deref(), Some("[::1]:13000"));
    }

    #[test]
    fn completions_and_man_need_no_profile() {
        let cli = parse(&["completions", "zsh"]).unwrap();
        assert_eq!(
            cli.command,
            Some(Command::Completions { shell: Shell::Zsh })
        );
        assert_eq!(parse(&["man"]).unwrap().command, Some(Command::Man));
        let script = String::from_utf8(Cli::completions(Shell::Bash)).unwrap();
        assert!(script.contains("forkmail") && script.contains("inbox"));
        let page = String::from_utf8(Cli::man_page()).unwrap();
        assert!(
            page.starts_with(".ie") || page.contains(".TH forkmail"),
            "{page}"
        );
    }

    #[test]
    fn global_flags_may_follow_the_command() {
        let cli = parse(&["inbox", "--profile", "p", "--connect-timeout", "5"]).unwrap();
        assert_eq!(cli.profile, Some(PathBuf::from("p")));
        assert_eq!(cli.connect_timeout, 5);
    }

    #[test]
    fn usage_errors() {
        use clap::error::ErrorKind;
        let err = |args: &[&str]| parse(args).unwrap_err().kind();
        assert_eq!(parse(&["inbox"]).unwrap().profile, None);
        assert_eq!(
            err(&["--server", "host:x", "inbox"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(err(&["completions", "tcsh"]), ErrorKind::InvalidValue);
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
