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

use forkmail_protocol::limits::validate_title;
use forkmail_protocol::{CloseReason, Draft};

use crate::app::{print, tell, Login, PASSWORD_ENV};
use crate::commands::{build_draft, parse_recipients, read_body_file};
use crate::display::{inbox_line, render_mail, sent_line};
use crate::draft::{self, Edited};
use crate::error::{AppError, ClientError};
use crate::escape::escape_line;
use crate::session::{send_with_one_repeat, ConnectOptions, Session};
use input::{Complete, Input, Read};

/// Password tries at the terminal before the REPL gives up.
pub const PASSWORD_TRIES: u32 = 3;

/// The verbs the REPL knows, as Tab completes them.
pub const VERBS: &[&str] = &["send", "inbox", "sent", "read", "delete", "help", "quit"];

const HELP: &str = "\
commands (Tab completes them, and user names at the To prompt):
  send        write a mail: To (names separated with ;), Title, then the body
              in $VISUAL or $EDITOR if set, else typed line by line and ended
              by a lone '.' (or :file PATH); Ctrl-C cancels; unsent drafts are
              saved under the profile with the command that sends them
  inbox       list the inbox: id, '*' if unread, date, sender, title
  sent        list what you have sent: id, date, recipients, title
  read ID     show one mail and mark it read
  delete ID   delete one mail
  help        show this help
  quit        log out (so does end of input, Ctrl-D)
";

/// A command typed at the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplCommand {
    Send,
    Inbox,
    Sent,
    Read(u64),
    Delete(u64),
    Help,
    Quit,
}

/// Parses one input line; the error is one line saying what is wrong.
pub fn parse_command(line: &str) -> Result<ReplCommand, String> {
    let mut words = line.split_whitespace();
    let name = words.next().unwrap_or_default().to_ascii_lowercase();
    let args: Vec<&str> = words.collect();
    let id = |arg: &str| {
        arg.parse::<u64>()
            .map_err(|_| format!("{name}: '{}' is not a message id", escape_line(arg)))
    };
    match (name.as_str(), args.as_slice()) {
        ("send", []) => Ok(ReplCommand::Send),
        ("inbox", []) => Ok(ReplCommand::Inbox),
        ("sent", []) => Ok(ReplCommand::Sent),
        ("read", [arg]) => Ok(ReplCommand::Read(id(arg)?)),
        ("delete", [arg]) => Ok(ReplCommand::Delete(id(arg)?)),
        ("help" | "?", []) => Ok(ReplCommand::Help),
        ("quit" | "exit", []) => Ok(ReplCommand::Quit),
        ("read" | "delete", _) => Err(format!("usage: {name} ID")),
        ("send" | "inbox" | "sent" | "help" | "quit" | "exit", _) => {
            Err(format!("{name} takes no arguments"))
        }
        _ => Err(unknown_command(&name)),
    }
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
fn closest_verb(name: &str) -> Option<&'static str> {
    VERBS
        .iter()
        .map(|verb| (edit_distance(name, verb), *verb))
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
    let input = Input::new(VERBS.iter().map(|v| (*v).to_owned()).collect())?;
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
                ReplCommand::Send => self.send()?,
                other => self.request(other)?,
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
    fn request(&mut self, command: ReplCommand) -> Result<(), AppError> {
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

    fn send(&mut self) -> Result<(), AppError> {
        let draft = match self.compose() {
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
        let body = match draft::editor().filter(|_| terminal) {
            Some(editor) => match draft::edit(&editor, "")? {
                Edited::Body(body) => body,
                Edited::Cancelled { why, left } => {
                    tell(&format!(
                        "{why}: not sent; {}",
                        draft::keep(self.login.profile_dir, &to, &title, &left)
                    ));
                    return Ok(None);
                }
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

fn execute(command: ReplCommand, session: &mut Session) -> Result<(), AppError> {
    match command {
        ReplCommand::Inbox => {
            let mails = session.inbox()?;
            if mails.is_empty() {
                tell("the inbox is empty");
                return Ok(());
            }
            print(
                &mails
                    .iter()
                    .map(|m| inbox_line(m) + "\n")
                    .collect::<String>(),
            )
        }
        ReplCommand::Sent => {
            let mails = session.sent()?;
            if mails.is_empty() {
                tell("nothing sent yet");
                return Ok(());
            }
            print(
                &mails
                    .iter()
                    .map(|m| sent_line(m) + "\n")
                    .collect::<String>(),
            )
        }
        ReplCommand::Read(id) => print(&render_mail(&session.read(id)?)),
        ReplCommand::Delete(id) => {
            session.delete(id)?;
            print(&format!("deleted message {id}\n"))
        }
        ReplCommand::Send | ReplCommand::Help | ReplCommand::Quit => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(parse_command("send"), Ok(ReplCommand::Send));
        assert_eq!(parse_command("  inbox "), Ok(ReplCommand::Inbox));
        assert_eq!(parse_command("sent"), Ok(ReplCommand::Sent));
        assert_eq!(parse_command("read 12"), Ok(ReplCommand::Read(12)));
        assert_eq!(parse_command("DELETE 3"), Ok(ReplCommand::Delete(3)));
        assert_eq!(parse_command("help"), Ok(ReplCommand::Help));
        assert_eq!(parse_command("quit"), Ok(ReplCommand::Quit));
        assert_eq!(parse_command("exit"), Ok(ReplCommand::Quit));
    }

    #[test]
    fn mistakes_say_what_is_wrong() {
        assert_eq!(parse_command("read"), Err("usage: read ID".into()));
        assert_eq!(parse_command("delete 1 2"), Err("usage: delete ID".into()));
        assert!(parse_command("read -1")
            .unwrap_err()
            .contains("is not a message id"));
        assert_eq!(
            parse_command("inbox now"),
            Err("inbox takes no arguments".into())
        );
        let unknown = parse_command("\x1b[31mfrob").unwrap_err();
        assert!(unknown.starts_with("unknown command"), "{unknown}");
        assert!(!unknown.contains('\x1b'), "{unknown:?}");
    }

    #[test]
    fn a_typo_names_the_closest_verb() {
        assert_eq!(
            parse_command("inbx").unwrap_err(),
            "unknown command 'inbx'; did you mean 'inbox'? (help lists commands)"
        );
        assert_eq!(closest_verb("raed"), Some("read"));
        assert_eq!(closest_verb("snd"), Some("send"));
        assert_eq!(closest_verb("delte"), Some("delete"));
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
