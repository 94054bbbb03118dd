//! One-shot commands: `forkmail --profile P send|inbox|sent|read|delete ...`.
//!
//! Each logs in, does one thing, logs out and prints the result. The result is printed after
//! logging out, so a reader that closes the pipe early (`| head`) cannot leave the session
//! hanging, and a failed logout after a successful operation is only a note under `-v`: the mail
//! was sent, so the command succeeded.

use std::fs;
use std::io::{self, IsTerminal, Read};
use std::path::Path;

use forkmail_protocol::limits::{
    split_recipients, validate_body, validate_recipients, validate_title,
};
use forkmail_protocol::Draft;

use crate::app::{print, tell, Login};
use crate::cli::Command;
use crate::display::{inbox_json, inbox_line, mail_json, render_mail, sent_json, sent_line};
use crate::draft::{self, Edited};
use crate::error::{AppError, ClientError};
use crate::session::{send_with_one_repeat, Session};

/// Runs one subcommand.
pub fn run(command: &Command, login: &Login<'_>) -> Result<(), AppError> {
    match command {
        Command::Send {
            to,
            title,
            file,
            edit,
        } => {
            // Everything local first: a bad title must not cost a login.
            let to = parse_recipients(to)?;
            validate_title(title).map_err(ClientError::from)?;
            let body = match (file, edit) {
                (Some(path), _) => read_body_file(path)?,
                (None, true) => body_from_editor(login, &to, title)?,
                (None, false) => read_body_stdin()?,
            };
            let draft = build_draft(to, title.clone(), body)?;
            // The password is kept (in memory, wiped when `options` goes) for the one repeat a
            // broken send may need.
            // A body written in the editor is not lost when the send fails: it is kept as a draft.
            let keep = |err: AppError| {
                if *edit {
                    let kept = draft::keep(login.profile_dir, &draft.to, &draft.title, &draft.body);
                    AppError::Cancelled(format!("{err}; {kept}"))
                } else {
                    err
                }
            };
            let options = login.with_password(login.options()?)?;
            let mut session = login
                .open(&options)
                .map_err(not_sent_if_client)
                .map_err(keep)?;
            let id = send_with_one_repeat(&mut session, &options, &draft, &|m| login.note(m))
                .map_err(|err| keep(err.into()))?;
            logout(session, login);
            print(&format!("sent message {id}\n"))
        }
        Command::Inbox { json } => {
            let mut session = login.connect(login.options()?)?;
            let mails = session.inbox()?;
            logout(session, login);
            if *json {
                print(&(inbox_json(&mails) + "\n"))
            } else if mails.is_empty() {
                tell("the inbox is empty");
                Ok(())
            } else {
                let lines: String = mails.iter().map(|m| inbox_line(m) + "\n").collect();
                print(&lines)
            }
        }
        Command::Sent { json } => {
            let mut session = login.connect(login.options()?)?;
            let mails = session.sent()?;
            logout(session, login);
            if *json {
                print(&(sent_json(&mails) + "\n"))
            } else if mails.is_empty() {
                tell("nothing sent yet");
                Ok(())
            } else {
                let lines: String = mails.iter().map(|m| sent_line(m) + "\n").collect();
                print(&lines)
            }
        }
        Command::Read { id, json } => {
            let mut session = login.connect(login.options()?)?;
            let mail = session.read(*id)?;
            logout(session, login);
            if *json {
                print(&(mail_json(&mail) + "\n"))
            } else {
                print(&render_mail(&mail))
            }
        }
        Command::Delete { id } => {
            let mut session = login.connect(login.options()?)?;
            session.delete(*id)?;
            logout(session, login);
            print(&format!("deleted message {id}\n"))
        }
    }
}

/// A login that failed before the mail was written: nothing was sent.
pub fn not_sent_if_client(err: AppError) -> AppError {
    match err {
        AppError::Client(err) => AppError::Client(ClientError::NotSent(Box::new(err))),
        other => other,
    }
}

/// Splits a `;`-separated recipient list and checks every name.
pub fn parse_recipients(list: &str) -> Result<Vec<String>, ClientError> {
    let to = split_recipients(list);
    validate_recipients(&to)?;
    Ok(to)
}

/// Builds a draft, checking every limit the server will check.
pub fn build_draft(to: Vec<String>, title: String, body: String) -> Result<Draft, ClientError> {
    validate_recipients(&to)?;
    validate_title(&title)?;
    validate_body(&body)?;
    Ok(Draft { to, title, body })
}

/// Reads a body from a file; it must be UTF-8 text.
pub fn read_body_file(path: &Path) -> Result<String, AppError> {
    let bytes = fs::read(path).map_err(|source| AppError::Body {
        what: path.display().to_string(),
        source,
    })?;
    utf8(bytes, &path.display().to_string())
}

/// `send --edit`: the body from `$VISUAL`/`$EDITOR`; a failed or empty edit sends nothing
/// (exit 1) and names the saved draft.
fn body_from_editor(login: &Login<'_>, to: &[String], title: &str) -> Result<String, AppError> {
    let Some(editor) = draft::editor() else {
        return Err(AppError::Usage(
            "send --edit needs an editor: set VISUAL or EDITOR (e.g. EDITOR=nano), or use --file PATH".into(),
        ));
    };
    match draft::edit(&editor, "")? {
        Edited::Body(body) => Ok(body),
        Edited::Cancelled { why, left } => Err(AppError::Cancelled(format!(
            "{why}: nothing was sent; {}",
            draft::keep(login.profile_dir, to, title, &left)
        ))),
    }
}

/// Reads a body from standard input up to end of input.
fn read_body_stdin() -> Result<String, AppError> {
    let mut stdin = io::stdin();
    if stdin.is_terminal() {
        tell("type the body, then press Ctrl-D on a line of its own");
    }
    let mut bytes = Vec::new();
    stdin
        .read_to_end(&mut bytes)
        .map_err(|source| AppError::Body {
            what: "standard input".into(),
            source,
        })?;
    utf8(bytes, "standard input")
}

fn utf8(bytes: Vec<u8>, what: &str) -> Result<String, AppError> {
    String::from_utf8(bytes).map_err(|e| AppError::Body {
        what: what.to_owned(),
        source: io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "not UTF-8 text (invalid byte at offset {}); convert it to UTF-8 first",
                e.utf8_error().valid_up_to()
            ),
        ),
    })
}

/// Logs out, best effort: the operation already succeeded.
fn logout(session: Session, login: &Login<'_>) {
    if let Err(err) = session.quit() {
        login.note(&format!("logging out failed: {err}"));
    }
}

#[cfg(test)]
mod tests {
    use forkmail_protocol::limits::{LimitError, MAX_BODY_CHARS};

    use super::*;

    #[test]
    fn recipients_are_split_trimmed_and_checked() {
        assert_eq!(
            parse_recipients(" bob ; carol;").unwrap(),
            vec!["bob".to_string(), "carol".to_string()]
        );
        assert!(matches!(
            parse_recipients(" ; "),
            Err(ClientError::Limit(LimitError::NoRecipients))
        ));
        assert!(matches!(
            parse_recipients("bob;Bob"),
            Err(ClientError::Limit(LimitError::UserNameCharacters(_)))
        ));
        assert!(matches!(
            parse_recipients("bob;bob"),
            Err(ClientError::Limit(LimitError::DuplicateRecipient(_)))
        ));
        assert!(matches!(
            parse_recipients("../etc/passwd"),
            Err(ClientError::Limit(_))
        ));
    }

    #[test]
    fn drafts_are_checked_in_characters() {
        let to = || vec!["bob".to_string()];
        assert!(build_draft(to(), "é".repeat(100), "€".repeat(MAX_BODY_CHARS)).is_ok());
        assert!(matches!(
            build_draft(to(), "é".repeat(101), String::new()),
            Err(ClientError::Limit(LimitError::TitleTooLong(101)))
        ));
        assert!(matches!(
            build_draft(to(), String::new(), String::new()),
            Err(ClientError::Limit(LimitError::EmptyTitle))
        ));
        assert!(matches!(
            build_draft(to(), "t".into(), "€".repeat(MAX_BODY_CHARS + 1)),
            Err(ClientError::Limit(LimitError::BodyTooLong(_)))
        ));
    }

    #[test]
    fn body_files_must_be_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.txt");
        fs::write(&good, "héllo\n").unwrap();
        assert_eq!(read_body_file(&good).unwrap(), "héllo\n");
        let bad = dir.path().join("bad.bin");
        fs::write(&bad, b"ok\xff").unwrap();
        let err = read_body_file(&bad).unwrap_err().to_string();
        assert!(
            err.contains("not UTF-8") && err.contains("offset 2"),
            "{err}"
        );
        let missing = read_body_file(&dir.path().join("missing")).unwrap_err();
        assert!(missing.to_string().contains("missing"), "{missing}");
    }
}
