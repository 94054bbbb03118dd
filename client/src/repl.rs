//! The interactive client: one login, then commands until `quit` or end of input.
//!
//! Line editing and history come from rustyline (history in the profile directory, kept only for
//! interactive use so that scripted input does not fill it). With standard input not a terminal,
//! rustyline reads plain lines without prompts, so the REPL can also be driven by a pipe.
//!
//! Mistakes in a command (unknown name, bad id, a draft over a limit, an unknown recipient) print
//! a message and the REPL goes on. When the session itself is over (the server closed it after
//! the idle timeout, or the connection broke) the REPL says so and exits 1: every later command
//! would fail anyway. Before each command that needs the server it checks, without waiting,
//! whether the server has already closed the session, so nobody types a long mail into a dead
//! session.

use std::io::{self, BufRead, IsTerminal};

use forkmail_protocol::limits::validate_title;
use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;

use crate::app::{print, tell, Login};
use crate::commands::{build_draft, parse_recipients, read_body_file};
use crate::display::{inbox_line, render_mail, sent_line};
use crate::error::{AppError, ClientError};
use crate::escape::escape_line;
use crate::session::{send_with_one_repeat, ConnectOptions, Session};

/// History file in the profile directory.
pub const HISTORY_FILE: &str = "history.txt";

const HELP: &str = "\
commands:
  send        write a mail: asks for the recipients (separated with ;), the title, then the
              body, ended by a line holding only '.' (or answer :file PATH to send a file)
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

/// Parses one input line; the error says what is wrong (help follows it).
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
        _ => Err(format!("unknown command '{}'", escape_line(&name))),
    }
}

/// Logs in and runs commands until `quit` or end of input.
pub fn run(login: &Login<'_>) -> Result<(), AppError> {
    let options = login.options()?;
    let interactive = io::stdin().is_terminal();
    let history = login.profile_dir.join(HISTORY_FILE);
    let mut editor = DefaultEditor::new().map_err(|e| AppError::Input(e.to_string()))?;
    if interactive {
        // A missing history file is normal on first use.
        let _ = editor.load_history(&history);
    }
    let prompt = format!("{}> ", options.user);
    // The password stays in `options` (wiped when it goes) for the one repeat a broken send
    // may need, for this REPL session only.
    let options = login.with_password(options)?;
    let mut session = login.open(&options)?;
    if interactive {
        tell("logged in; type help for the commands");
    }
    let result = command_loop(&mut editor, &mut session, &prompt, &options, login);
    if interactive {
        if let Err(err) = editor.save_history(&history) {
            login.note(&format!(
                "cannot save history to {}: {err}",
                history.display()
            ));
        }
    }
    result?;
    if let Err(err) = session.quit() {
        login.note(&format!("logging out failed: {err}"));
    }
    Ok(())
}

fn command_loop(
    editor: &mut DefaultEditor,
    session: &mut Session,
    prompt: &str,
    options: &ConnectOptions,
    login: &Login<'_>,
) -> Result<(), AppError> {
    loop {
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            // Ctrl-C abandons the line, as in a shell.
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => return Ok(()),
            Err(err) => return Err(AppError::Input(err.to_string())),
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(line);
        let command = match parse_command(line) {
            Ok(command) => command,
            Err(message) => {
                tell(&message);
                let _ = io::Write::write_all(&mut io::stderr(), HELP.as_bytes());
                continue;
            }
        };
        match command {
            ReplCommand::Help => print(HELP)?,
            ReplCommand::Quit => return Ok(()),
            other => {
                session.check_alive()?;
                match execute(other, editor, session, options, login) {
                    Ok(()) => {}
                    Err(err) if ends_repl(&err) => return Err(err),
                    Err(err) => tell(&err.to_string()),
                }
            }
        }
    }
}

/// Whether an error ends the REPL, rather than just the command that met it.
fn ends_repl(err: &AppError) -> bool {
    match err {
        AppError::Client(err) => err.ends_session(),
        AppError::Usage(_) | AppError::Body { .. } | AppError::Cancelled(_) => false,
        AppError::Password(_) | AppError::Input(_) | AppError::Output(_) => true,
    }
}

fn execute(
    command: ReplCommand,
    editor: &mut DefaultEditor,
    session: &mut Session,
    options: &ConnectOptions,
    login: &Login<'_>,
) -> Result<(), AppError> {
    match command {
        ReplCommand::Send => {
            let Some(draft) = compose(editor)? else {
                tell("not sent");
                return Ok(());
            };
            let id = send_with_one_repeat(session, options, &draft, &|m| login.note(m))?;
            print(&format!("sent message {id}\n"))
        }
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
        ReplCommand::Help | ReplCommand::Quit => Ok(()),
    }
}

/// Asks for recipients, title and body. `None` if the user gave up (Ctrl-C, end of input).
fn compose(editor: &mut DefaultEditor) -> Result<Option<forkmail_protocol::Draft>, AppError> {
    let Some(to) = ask(editor, "To (separate with ;): ")? else {
        return Ok(None);
    };
    let to = parse_recipients(&to)?;
    let Some(title) = ask(editor, "Title: ")? else {
        return Ok(None);
    };
    validate_title(&title).map_err(ClientError::from)?;
    if io::stdin().is_terminal() {
        tell("body: end with a line holding only '.', or answer :file PATH to send a file (Ctrl-D cancels)");
    }
    let mut body = String::new();
    let mut first = true;
    loop {
        let Some(line) = read_body_line()? else {
            return Ok(None);
        };
        if first {
            if let Some(path) = line.strip_prefix(":file ") {
                body = read_body_file(path.trim().as_ref())?;
                break;
            }
        }
        first = false;
        if line == "." {
            break;
        }
        body.push_str(&line);
        body.push('\n');
    }
    Ok(Some(build_draft(to, title, body)?))
}

/// One line of a body, read straight from standard input rather than through rustyline.
/// Rustyline's raw-mode reader drops input that arrives faster than it consumes it (a pasted
/// body loses lines: rustyline#690), and in pipe mode it applies backspace characters; the
/// terminal's own line discipline keeps every line, byte for byte. `None` at end of input.
fn read_body_line() -> Result<Option<String>, AppError> {
    let mut line = String::new();
    match io::stdin().lock().read_line(&mut line) {
        Ok(0) => Ok(None),
        Ok(_) => {
            if line.ends_with('\n') {
                line.pop();
                if line.ends_with('\r') {
                    line.pop();
                }
            }
            Ok(Some(line))
        }
        Err(err) => Err(AppError::Input(err.to_string())),
    }
}

/// One line of input; `None` on Ctrl-C or end of input.
fn ask(editor: &mut DefaultEditor, prompt: &str) -> Result<Option<String>, AppError> {
    match editor.readline(prompt) {
        Ok(line) => Ok(Some(line)),
        Err(ReadlineError::Interrupted | ReadlineError::Eof) => Ok(None),
        Err(err) => Err(AppError::Input(err.to_string())),
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
    fn only_session_ending_errors_end_the_repl() {
        let refused = AppError::Client(ClientError::Server {
            code: forkmail_protocol::ErrorCode::NotFound,
            message: "no message 9".into(),
        });
        assert!(!ends_repl(&refused));
        assert!(!ends_repl(&AppError::Client(ClientError::Limit(
            forkmail_protocol::limits::LimitError::EmptyTitle
        ))));
        assert!(ends_repl(&AppError::Client(ClientError::ServerClosed(
            forkmail_protocol::CloseReason::IdleTimeout
        ))));
    }
}
