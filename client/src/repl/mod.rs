//! The interactive client: one login, then commands until `quit` or end of input.
//!
//! All input goes through one reader ([`input::Input`]), so a line typed ahead or pasted is run
//! in order at whatever prompt it lands, arrows edit instead of being stored, and Ctrl-C at any
//! prompt abandons the line (at To, Title or a body line, the whole draft) and returns to the
//! command prompt. With standard input not a terminal the REPL reads exactly the lines a person
//! would type, in the same order (`send`, recipients, title, body lines, a lone `.`).
//!
//! The session is kept alive for the user: before each command that needs the server the REPL
//! checks, without waiting, whether the server has closed the session (idle timeout, restart),
//! and if so logs in again with the password held in memory and says so in one line. A draft is
//! never dropped: the recipients are checked with the server before the body is asked for, the
//! body may be written in `$VISUAL`/`$EDITOR`, and a draft that could not be sent is saved under
//! the profile with the command that sends it again ([`crate::draft`]).

pub mod input;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use forkmail_protocol::limits::validate_title;
use forkmail_protocol::{CloseReason, Draft};

use crate::app::{print, tell, Login, PASSWORD_ENV};
use crate::cli::{Cli, Command};
use crate::commands::{self, build_draft, parse_recipients, read_body_file};
use crate::display::{sent_json, sent_line};
use crate::draft;
use crate::editor::{self, Edited};
use crate::error::{AppError, ClientError};
use crate::escape::escape_line;
use crate::pager;
use crate::session::{send_with_one_repeat, ConnectOptions, Session};
use input::{Complete, Input, Read};

/// Password tries at the terminal before the REPL gives up.
pub const PASSWORD_TRIES: u32 = 3;

/// The REPL's own verbs; the others are the one-shot subcommands ([`verbs`]).
const OWN_VERBS: &[&str] = &["help", "quit"];

/// Subcommands for the shell (`forkmail completions bash`, `forkmail man`), not verbs of the
/// REPL: neither offered by Tab nor run at the prompt.
const SHELL_ONLY: &[&str] = &["completions", "man", "enroll"];

/// Every verb the REPL takes, as Tab completes them: the one-shot subcommands and its own.
pub fn verbs() -> Vec<String> {
    let mut verbs: Vec<String> = Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .filter(|name| !SHELL_ONLY.contains(&name.as_str()))
        .chain(OWN_VERBS.iter().map(|v| (*v).to_owned()))
        .collect();
    verbs.sort();
    verbs.dedup();
    verbs
}

const HELP: &str = "\
commands (Tab completes them, and user names at the To prompt):
  send        write a mail: To (names separated with ;), Title, then the body
              in $VISUAL or $EDITOR if set, else typed line by line and ended
              by a lone '.' (or :file PATH); Ctrl-C cancels; unsent drafts are
              saved under the profile with the command that sends them
  inbox       list the inbox: id, '*' if unread, date, sender, title; filters:
              --unread --from USER --search TEXT --limit N --before ID
  sent        list what you have sent: id, date, recipients, title
  read ID     show one mail and mark it read
  reply ID    answer the sender (--all: everyone else too) in the editor
  forward ID  --to NAMES: send it on, your text first, in the editor
  unread ID...  mark mails unread
  delete ID...  delete mails (all or none)
  keys        your contacts' keys as pinned, with fingerprints; --accept NAME
              pins a changed key after you compared it; --rotate renews yours
  logout      revoke your login tickets on the server, delete the ticket file
  help        show this help
  quit        log out (so does end of input, Ctrl-D)
Every command takes the flags of its one-shot form (forkmail --help), e.g.
  inbox --json, read ID --json, send --to NAMES --title T [--file F | --edit]
";

/// A command typed at the prompt. Command lines are parsed with the one-shot commands' own clap
/// definitions ([`Command`]), so a verb has the same flags in both; the REPL runs the ones it
/// knows on its live session, and any other verb as the one-shot command (with its own short
/// session and the password held in memory). Only a bare `send`, which asks for the draft,
/// `help` and `quit` are the REPL's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplCommand {
    /// `send` alone: asks for To, Title and the body.
    Compose,
    /// Any other verb, as its one-shot command line would parse.
    Verb(Command),
    Help,
    Quit,
}

/// The one-shot subcommands, parsed from a REPL line (no program name).
#[derive(Debug, Parser)]
#[command(no_binary_name = true, disable_help_subcommand = true)]
struct ReplLine {
    #[command(subcommand)]
    command: Command,
}

/// Parses one input line; the error is one line saying what is wrong.
pub fn parse_command(line: &str) -> Result<ReplCommand, String> {
    let words = split_words(line)?;
    let Some(first) = words.first() else {
        return Err("type a command (help lists commands)".into());
    };
    let name = first.to_ascii_lowercase();
    match (name.as_str(), words.len()) {
        ("send", 1) => return Ok(ReplCommand::Compose),
        ("help" | "?", 1) => return Ok(ReplCommand::Help),
        ("quit" | "exit", 1) => return Ok(ReplCommand::Quit),
        ("help" | "?" | "quit" | "exit", _) => return Err(format!("{name} takes no arguments")),
        (shell_only, _) if SHELL_ONLY.contains(&shell_only) => {
            return Err(format!(
                "{name} is for the shell, not this prompt: run `forkmail {name}` there"
            ))
        }
        _ => {}
    }
    let args = std::iter::once(name.clone()).chain(words.into_iter().skip(1));
    match ReplLine::try_parse_from(args) {
        Ok(parsed) => Ok(ReplCommand::Verb(parsed.command)),
        Err(err) if err.kind() == ErrorKind::InvalidSubcommand => Err(unknown_command(&name)),
        Err(err) => Err(clap_line(&name, &err)),
    }
}

/// clap's message for a REPL line, in one line: its first paragraph, without "error: " (and
/// without clap's advice about `--help`, which the REPL's help replaces).
fn clap_line(name: &str, err: &clap::Error) -> String {
    let text = err.render().to_string();
    let first: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|line| !line.is_empty() && !line.starts_with("Usage:"))
        .collect();
    let first = first.join(" ");
    let first = first.strip_prefix("error: ").unwrap_or(&first);
    format!("{name}: {first} (help lists commands)")
}

/// Splits a line into words as a shell would for plain words, '...' and "..." (no escapes).
fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    if quote.is_some() {
        return Err("a quote is not closed; close it and type the line again".into());
    }
    words.extend(word);
    Ok(words)
}

/// "unknown command 'inbx'; did you mean 'inbox'? (help lists commands)".
fn unknown_command(name: &str) -> String {
    let shown = escape_line(name);
    match closest_verb(name) {
        Some(verb) => {
            format!("unknown command '{shown}'; did you mean '{verb}'? (help lists commands)")
        }
        None => format!("unknown command '{shown}' (help lists commands)"),
    }
}

/// The verb nearest to `name` in edit distance, if it is near enough to be a typo.
fn closest_verb(name: &str) -> Option<String> {
    verbs()
        .into_iter()
        .map(|verb| (edit_distance(name, &verb), verb))
        .filter(|(distance, verb)| *distance <= 2.min(verb.len() / 2).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, verb)| verb)
}

/// Levenshtein distance in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// The REPL's state: the reader, the session (`None` after it ended and a new login failed) and
/// what a new login needs.
struct Repl<'a> {
    input: Input,
    session: Option<Session>,
    /// Holds the password for logging in again (wiped when the options go).
    options: ConnectOptions,
    login: &'a Login<'a>,
    /// False once the server showed it does not know `Request::Users` (a server older than the
    /// request ends the session on it): no completion of names, no early recipient check.
    users_known: bool,
}

/// Logs in and runs commands until `quit` or end of input.
pub fn run(login: &Login<'_>) -> Result<(), AppError> {
    let base = login.options()?;
    let input = Input::new(verbs())?;
    let prompt = format!("{}> ", base.user);
    let (options, session) = log_in(login, base)?;
    let mut repl = Repl {
        input,
        session: Some(session),
        options,
        login,
        users_known: true,
    };
    repl.refresh_users();
    if repl.input.is_terminal() {
        tell("logged in; type help for the commands");
    }
    repl.command_loop(&prompt)?;
    if let Some(session) = repl.session.take() {
        if let Err(err) = session.quit() {
            login.note(&format!("logging out failed: {err}"));
        }
    }
    Ok(())
}

/// Logs in; with the password asked at the terminal, up to [`PASSWORD_TRIES`] times.
fn log_in(login: &Login<'_>, base: ConnectOptions) -> Result<(ConnectOptions, Session), AppError> {
    let asked = std::env::var_os(PASSWORD_ENV).is_none();
    let mut tries = 1;
    loop {
        let options = login.with_password(base.clone())?;
        match login.open(&options) {
            Ok(session) => return Ok((options, session)),
            Err(AppError::Client(err @ ClientError::LoginFailed))
                if asked && tries < PASSWORD_TRIES =>
            {
                let left = PASSWORD_TRIES - tries;
                let plural = if left == 1 { "try" } else { "tries" };
                tell(&format!(
                    "{err}; type the password again ({left} {plural} left)"
                ));
                tries += 1;
            }
            Err(err) => return Err(err),
        }
    }
}

impl Repl<'_> {
    fn command_loop(&mut self, prompt: &str) -> Result<(), AppError> {
        loop {
            let line = match self.input.command(prompt)? {
                Read::Line(line) => line,
                // Ctrl-C abandons the line, as in a shell.
                Read::Interrupted => continue,
                Read::Eof => return Ok(()),
            };
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let command = match parse_command(line) {
                Ok(command) => command,
                Err(message) => {
                    tell(&message);
                    continue;
                }
            };
            match command {
                ReplCommand::Help => print(HELP)?,
                ReplCommand::Quit => return Ok(()),
                ReplCommand::Compose => {
                    let draft = self.compose();
                    self.send(draft)?;
                }
                ReplCommand::Verb(Command::Send(args)) => {
                    let draft = self.draft_from_flags(
                        &args.to,
                        args.title,
                        args.file.as_deref(),
                        args.edit,
                    );
                    self.send(draft)?;
                }
                ReplCommand::Verb(verb) => self.request(&verb)?,
            }
        }
    }

    /// The live session: checked without waiting, and logged in again if the server ended it.
    /// Without a terminal a failed new login ends the REPL (exit 1), as scripts expect.
    fn session(&mut self) -> Result<Option<&mut Session>, AppError> {
        let ended = match self.session.as_mut().map(Session::check_alive) {
            Some(Ok(())) => None,
            Some(Err(err)) if err.ends_session() => Some(Some(err)),
            Some(Err(err)) => return Err(err.into()),
            None => Some(None),
        };
        if let Some(why) = ended {
            self.session = None;
            match self.login.open(&self.options) {
                Ok(fresh) => {
                    tell(&format!(
                        "the server ended the session ({}); logged in again",
                        why.as_ref().map_or("earlier", ended_why)
                    ));
                    self.session = Some(fresh);
                }
                Err(err) if self.input.is_terminal() => {
                    tell(&format!(
                        "{err}; the session had ended ({}), the next command tries to log in again",
                        why.as_ref().map_or("earlier", ended_why)
                    ));
                    return Ok(None);
                }
                Err(err) => return Err(err),
            }
        }
        Ok(self.session.as_mut())
    }

    /// The user names for Tab, best effort (an older server does not know the request).
    fn refresh_users(&mut self) {
        if let Some(names) = self.users() {
            self.input.set_users(names);
        }
    }

    /// Every user name, if the server can tell (see `users_known`).
    fn users(&mut self) -> Option<Vec<String>> {
        if !self.users_known {
            return None;
        }
        let session = self.session().ok().flatten()?;
        match session.users() {
            Ok(names) => Some(names),
            Err(err) => {
                self.users_known = !err.ends_session()
                    && !matches!(&err, ClientError::Server { code, .. } if *code == forkmail_protocol::ErrorCode::InvalidRequest);
                None
            }
        }
    }

    /// inbox, sent, read, delete: repeated once on a new login if the server closed the
    /// session across the request (none of them changes anything twice).
    fn request(&mut self, command: &Command) -> Result<(), AppError> {
        if let Command::Reply(_) | Command::Forward(_) = command {
            return self.answer(command);
        }
        if !runs_on_the_session(command) {
            // A verb this REPL does not run itself: the one-shot command, with the password
            // held in memory.
            let login = Login {
                password: Some(&self.options.password),
                ..*self.login
            };
            return match commands::run(command, &login) {
                Err(AppError::Client(err)) => {
                    tell(&err.to_string());
                    Ok(())
                }
                Err(
                    err @ (AppError::Usage(_) | AppError::Body { .. } | AppError::Cancelled(_)),
                ) => {
                    tell(&err.to_string());
                    Ok(())
                }
                other => other,
            };
        }
        for attempt in 0..2 {
            let Some(session) = self.session()? else {
                return Ok(());
            };
            match execute(command, session) {
                Ok(()) => return Ok(()),
                Err(AppError::Client(err)) if err.is_server_closed() && attempt == 0 => continue,
                Err(AppError::Client(err)) => {
                    tell(&err.to_string());
                    return Ok(());
                }
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// `send --to .. --title .. [--file F | --edit]` typed in the REPL: the body from the file,
    /// the editor, or else asked for line by line.
    fn draft_from_flags(
        &mut self,
        to: &str,
        title: String,
        file: Option<&std::path::Path>,
        edit: bool,
    ) -> Result<Option<Draft>, AppError> {
        let to = parse_recipients(to)?;
        validate_title(&title).map_err(ClientError::from)?;
        let body = match (file, edit.then(editor::editor_command).flatten()) {
            (Some(path), _) => read_body_file(path)?,
            (None, Some(editor)) => match self.edit_body(&editor, &to, &title)? {
                Some(body) => body,
                None => return Ok(None),
            },
            (None, None) => match self.body_lines()? {
                Some(body) => body,
                None => return Ok(None),
            },
        };
        Ok(Some(build_draft(to, title, body)?))
    }

    /// The body from `editor`; `None` (the draft saved, the user told) if it failed or left
    /// the body empty.
    fn edit_body(
        &mut self,
        editor: &str,
        to: &[String],
        title: &str,
    ) -> Result<Option<String>, AppError> {
        match editor::run(editor, "")? {
            Edited::Body(body) => Ok(Some(body)),
            Edited::Cancelled { why, left } => {
                tell(&format!(
                    "{why}: not sent; {}",
                    draft::keep(self.login.profile_dir, to, title, &left)
                ));
                Ok(None)
            }
        }
    }

    fn send(&mut self, draft: Result<Option<Draft>, AppError>) -> Result<(), AppError> {
        let draft = match draft {
            Ok(Some(draft)) => draft,
            Ok(None) => {
                tell("draft cancelled; nothing was sent");
                return Ok(());
            }
            Err(AppError::Client(err)) => {
                tell(&err.to_string());
                return Ok(());
            }
            Err(err @ AppError::Body { .. }) => {
                tell(&err.to_string());
                return Ok(());
            }
            Err(err) => return Err(err),
        };
        let profile = self.login.profile_dir;
        let keep = |why: &str| {
            tell(&format!(
                "{why}; {}",
                draft::keep(profile, &draft.to, &draft.title, &draft.body)
            ));
        };
        let login = self.login;
        // A copy for the one repeat (wiped when it goes), as `session()` holds `self`.
        let options = self.options.clone();
        let session = match self.session() {
            Ok(Some(session)) => session,
            Ok(None) => {
                keep("not sent");
                return Ok(());
            }
            Err(err) => {
                keep(&format!("{err}; not sent"));
                return Err(err);
            }
        };
        match send_with_one_repeat(session, &options, &draft, &|m| login.note(m)) {
            Ok(id) => print(&format!("sent message {id}\n")),
            Err(err) => {
                keep(&err.to_string());
                Ok(())
            }
        }
    }

    /// `reply` and `forward` on the REPL's own session, so that they never take a second
    /// session (which `--max-sessions-per-user` would count) and never read the REPL's standard
    /// input as a body: without `--file` the editor opens on the quoted original. Not repeated
    /// on a new login like the read-only verbs: the send inside already repeats once, with its
    /// send id, and a second round would open the editor again.
    fn answer(&mut self, command: &Command) -> Result<(), AppError> {
        let login = self.login;
        let options = self.options.clone();
        let Some(session) = self.session()? else {
            return Ok(());
        };
        let mut out = Vec::new();
        let note = |m: &str| login.note(m);
        let sent = match command {
            Command::Reply(args) => commands::reply(session, &options, args, None, &note, &mut out),
            Command::Forward(args) => {
                commands::forward(session, &options, args, None, &note, &mut out)
            }
            _ => return Ok(()),
        };
        match sent {
            Ok(_) => print(&String::from_utf8_lossy(&out)),
            Err(
                err @ (AppError::Client(_)
                | AppError::Usage(_)
                | AppError::Body { .. }
                | AppError::Cancelled(_)),
            ) => {
                tell(&err.to_string());
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    /// Asks for recipients, title and body. `None` if the user gave up (Ctrl-C, end of input,
    /// an editor that failed: that draft is saved first).
    fn compose(&mut self) -> Result<Option<Draft>, AppError> {
        let terminal = self.input.is_terminal();
        let to = loop {
            let Read::Line(line) = self
                .input
                .answer("To (separate with ;): ", Complete::Users)?
            else {
                return Ok(None);
            };
            let to = match parse_recipients(&line) {
                Ok(to) => to,
                Err(err) if terminal => {
                    tell(&format!(
                        "{err}; type the recipients again (Ctrl-C cancels)"
                    ));
                    continue;
                }
                Err(err) => return Err(err.into()),
            };
            // From a pipe the order of lines is a contract: the server judges at the send.
            if !terminal {
                break to;
            }
            match self.unknown_recipients(&to)? {
                Some(unknown) if !unknown.is_empty() => tell(&format!(
                    "no such user: {}; type the recipients again (Tab completes names, Ctrl-C cancels)",
                    escape_line(&unknown.join(", "))
                )),
                _ => break to,
            }
        };
        let title = loop {
            let Read::Line(title) = self.input.answer("Title: ", Complete::Nothing)? else {
                return Ok(None);
            };
            match validate_title(&title) {
                Ok(()) => break title,
                Err(err) if terminal => tell(&format!("{err}; type the title again")),
                Err(err) => return Err(ClientError::from(err).into()),
            }
        };
        let body = match editor::editor_command().filter(|_| terminal) {
            Some(editor) => match self.edit_body(&editor, &to, &title)? {
                Some(body) => body,
                None => return Ok(None),
            },
            None => match self.body_lines()? {
                Some(body) => body,
                None => return Ok(None),
            },
        };
        Ok(Some(build_draft(to, title, body)?))
    }

    /// The names in `to` the server does not know; `None` if it could not be asked.
    fn unknown_recipients(&mut self, to: &[String]) -> Result<Option<Vec<String>>, AppError> {
        let Some(names) = self.users() else {
            return Ok(None);
        };
        let unknown = to
            .iter()
            .filter(|name| names.binary_search(name).is_err())
            .cloned()
            .collect();
        self.input.set_users(names);
        Ok(Some(unknown))
    }

    /// The body line by line, ended by a lone `.`; `:file PATH` as the first line sends a file.
    fn body_lines(&mut self) -> Result<Option<String>, AppError> {
        let terminal = self.input.is_terminal();
        if terminal {
            tell("body: end with a line holding only '.', or answer :file PATH to send a file (Ctrl-C cancels)");
        }
        let mut body = String::new();
        let mut first = true;
        loop {
            let Read::Line(line) = self.input.body_line()? else {
                return Ok(None);
            };
            if first {
                if let Some(path) = line.strip_prefix(":file ") {
                    match read_body_file(path.trim().as_ref()) {
                        Ok(body) => return Ok(Some(body)),
                        Err(err) if terminal => {
                            tell(&format!("{err}; type the body or another :file PATH"));
                            continue;
                        }
                        Err(err) => return Err(err),
                    }
                }
            }
            first = false;
            if line == "." {
                return Ok(Some(body));
            }
            body.push_str(&line);
            body.push('\n');
        }
    }
}

/// Why the session ended, in a word or two.
fn ended_why(err: &ClientError) -> &'static str {
    match err {
        ClientError::ServerClosed(CloseReason::IdleTimeout) => "idle",
        ClientError::ServerClosed(CloseReason::ShuttingDown) => "server shutting down",
        ClientError::Disconnected { .. } => "connection closed",
        _ => "connection broken",
    }
}

/// Whether the REPL runs `command` on its own session (else it runs as the one-shot command,
/// with its own short login). The match names every verb, so a new one cannot be forgotten here
/// without the compiler saying so.
fn runs_on_the_session(command: &Command) -> bool {
    match command {
        Command::Inbox(_)
        | Command::Sent { .. }
        | Command::Read(_)
        | Command::Delete(_)
        | Command::Unread(_)
        | Command::Keys(_) => true,
        Command::Send(_) | Command::Reply(_) | Command::Forward(_) => false,
        // Its own short login, then the ticket file goes; the REPL's session goes on.
        Command::Logout => false,
        // Refused by `parse_command`; as one-shot commands they need no session either.
        Command::Completions { .. } | Command::Man | Command::Enroll(_) => false,
    }
}

/// Runs a verb of [`runs_on_the_session`] on the REPL's session, printing what the one-shot
/// command prints (`read` through the pager as one-shot `read` does).
fn execute(command: &Command, session: &mut Session) -> Result<(), AppError> {
    let mut out = Vec::new();
    match command {
        Command::Inbox(args) => commands::inbox(session, args, &mut out)?,
        Command::Sent { json } => {
            let mails = session.sent()?;
            if *json {
                return print(&(sent_json(&mails) + "\n"));
            }
            if mails.is_empty() {
                tell("nothing sent yet");
                return Ok(());
            }
            for mail in &mails {
                out.extend_from_slice((sent_line(mail) + "\n").as_bytes());
            }
        }
        Command::Read(args) => {
            commands::read(session, args, &mut out)?;
            return pager::show(&String::from_utf8_lossy(&out), !args.json && !args.no_pager);
        }
        Command::Delete(args) => commands::delete(session, args, &mut out)?,
        Command::Unread(args) => commands::unread(session, args, &mut out)?,
        Command::Keys(args) => crate::keys::run(session, args, &mut out)?,
        Command::Send(_) | Command::Reply(_) | Command::Forward(_) | Command::Logout => {}
        Command::Completions { .. } | Command::Man | Command::Enroll(_) => {}
    }
    print(&String::from_utf8_lossy(&out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{DeleteArgs, InboxArgs, ReadArgs, SendArgs};

    #[test]
    fn completions_and_man_are_for_the_shell_not_the_prompt() {
        for line in ["completions bash", "man"] {
            let err = parse_command(line).unwrap_err();
            assert!(err.contains("is for the shell"), "{line}: {err}");
        }
        assert!(!verbs().iter().any(|v| v == "completions" || v == "man"));
    }

    fn verb(line: &str) -> Command {
        match parse_command(line) {
            Ok(ReplCommand::Verb(command)) => command,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn commands_parse_with_the_one_shot_definitions() {
        assert_eq!(parse_command("send"), Ok(ReplCommand::Compose));
        assert_eq!(verb("  inbox "), Command::Inbox(InboxArgs::default()));
        assert_eq!(
            verb("inbox --json --unread"),
            Command::Inbox(InboxArgs {
                json: true,
                unread: true,
                ..InboxArgs::default()
            })
        );
        assert_eq!(verb("sent"), Command::Sent { json: false });
        assert_eq!(
            verb("read 12"),
            Command::Read(ReadArgs {
                id: 12,
                json: false,
                no_pager: false
            })
        );
        assert_eq!(
            verb("DELETE 3 4"),
            Command::Delete(DeleteArgs {
                ids: vec![3, 4],
                json: false
            })
        );
        assert_eq!(
            verb("send --to 'bob;carol' --title \"Hi there\""),
            Command::Send(SendArgs {
                to: "bob;carol".into(),
                title: "Hi there".into(),
                file: None,
                edit: false,
                json: false
            })
        );
        assert_eq!(parse_command("help"), Ok(ReplCommand::Help));
        assert_eq!(parse_command("quit"), Ok(ReplCommand::Quit));
        assert_eq!(parse_command("exit"), Ok(ReplCommand::Quit));
    }

    #[test]
    fn mistakes_say_what_is_wrong_in_one_line() {
        for line in ["read", "read -1", "read x", "inbox now", "send --to"] {
            let err = parse_command(line).unwrap_err();
            assert!(!err.contains('\n'), "{line}: {err}");
            assert!(err.ends_with("(help lists commands)"), "{line}: {err}");
        }
        assert_eq!(
            parse_command("read").unwrap_err(),
            "read: the following required arguments were not provided: <ID> (help lists commands)"
        );
        assert_eq!(
            parse_command("quit now"),
            Err("quit takes no arguments".into())
        );
        assert!(parse_command("send --title 'open")
            .unwrap_err()
            .contains("quote"));
        let unknown = parse_command("\x1b[31mfrob").unwrap_err();
        assert!(unknown.starts_with("unknown command"), "{unknown}");
        assert!(!unknown.contains('\x1b'), "{unknown:?}");
    }

    #[test]
    fn words_split_like_a_shell() {
        assert_eq!(
            split_words(" a 'b c' \"d'e\" '' f").unwrap(),
            ["a", "b c", "d'e", "", "f"]
        );
    }

    #[test]
    fn a_typo_names_the_closest_verb() {
        assert_eq!(
            parse_command("inbx").unwrap_err(),
            "unknown command 'inbx'; did you mean 'inbox'? (help lists commands)"
        );
        assert_eq!(closest_verb("raed").as_deref(), Some("read"));
        assert_eq!(closest_verb("snd").as_deref(), Some("send"));
        assert_eq!(closest_verb("delte").as_deref(), Some("delete"));
        assert_eq!(
            parse_command("xyzzy").unwrap_err(),
            "unknown command 'xyzzy' (help lists commands)"
        );
    }

    #[test]
    fn help_fits_80_columns() {
        for line in HELP.lines() {
            assert!(line.chars().count() <= 80, "{line}");
        }
    }
}
