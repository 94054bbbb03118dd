//! The verbs: `send`, `inbox`, `sent`, `read`, `delete`, `reply`, `forward`, `unread`, `keys` as
//! one-shot commands (`forkmail --profile P VERB ...`, [`run`]) and as functions the REPL calls.
//!
//! Each verb function takes the session, its arguments as [`crate::cli`] defines them (the one
//! definition, shared with the REPL) and a writer for its result. A one-shot command logs in,
//! runs the verb into a buffer, logs out and only then prints the buffer, so a reader that closes
//! the pipe early (`| head`) cannot leave the session hanging, and a failed logout after a
//! successful operation is only a note under `-v`: the mail was sent, so the command succeeded.
//!
//! Every send (`send`, `reply`, `forward`) goes through [`send_with_one_repeat`]: one send id,
//! one repeat after an unconfirmed attempt. `inbox`'s filters run here, over the whole listing
//! (docs/ARCHITECTURE.md says why). Writing in the editor never holds a session: a one-shot
//! `reply --edit` reads the original, logs out, runs the editor, then logs in again to send.

use std::fs;
use std::io::{self, IsTerminal, Read, Write};
use std::path::Path;

use forkmail_protocol::limits::{
    split_recipients, validate_body, validate_recipients, validate_title, MAX_TITLE_CHARS,
};
use forkmail_protocol::{Draft, Mail, MailSummary};

use crate::app::{print, tell, Login};
use crate::cli::{
    BodyArgs, Command, DeleteArgs, ForwardArgs, InboxArgs, ReadArgs, ReplyArgs, UnreadArgs,
};
use crate::display::{
    count_line, ids_json, inbox_json, inbox_line, mail_json, render_mail, rfc3339, sent_id_json,
    sent_json, sent_line,
};
use crate::draft;
use crate::editor::{self, Edited};
use crate::error::{AppError, ClientError};
use crate::pager;
use crate::session::{send_with_one_repeat, ConnectOptions, Session};

/// Runs one subcommand.
pub fn run(command: &Command, login: &Login<'_>) -> Result<(), AppError> {
    let note = |m: &str| login.note(m);
    let mut out = Vec::new();
    match command {
        Command::Send(args) => {
            // Everything local first: a bad title must not cost a login.
            let to = parse_recipients(&args.to)?;
            validate_title(&args.title).map_err(ClientError::from)?;
            let body = match (&args.file, args.edit) {
                (Some(path), _) => read_body_file(path)?,
                (None, true) => body_from_editor(login, &to, &args.title)?,
                (None, false) => read_body_stdin()?,
            };
            let draft = build_draft(to, args.title.clone(), body)?;
            // The password is kept (in memory, wiped when `options` goes) for the one repeat a
            // broken send may need.
            // A body written in the editor is not lost when the send fails: it is kept as a draft.
            let keep = |err: AppError| {
                if args.edit {
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
            send(&mut session, &options, &draft, args.json, &note, &mut out).map_err(keep)?;
            logout(session, login);
        }
        Command::Inbox(args) => {
            let mut session = login.connect(login.options()?)?;
            inbox(&mut session, args, &mut out)?;
            logout(session, login);
        }
        Command::Sent { json } => {
            let mut session = login.connect(login.options()?)?;
            let mails = session.sent()?;
            logout(session, login);
            if *json {
                return print(&(sent_json(&mails) + "\n"));
            } else if mails.is_empty() {
                tell("nothing sent yet");
                return Ok(());
            }
            let lines: String = mails.iter().map(|m| sent_line(m) + "\n").collect();
            return print(&lines);
        }
        Command::Read(args) => {
            let mut session = login.connect(login.options()?)?;
            read(&mut session, args, &mut out)?;
            logout(session, login);
            let text = String::from_utf8_lossy(&out);
            return pager::show(&text, !args.json && !args.no_pager);
        }
        Command::Delete(args) => {
            let mut session = login.connect(login.options()?)?;
            delete(&mut session, args, &mut out)?;
            logout(session, login);
        }
        Command::Unread(args) => {
            let mut session = login.connect(login.options()?)?;
            unread(&mut session, args, &mut out)?;
            logout(session, login);
        }
        Command::Reply(args) => {
            let text = text_before_login(&args.body)?;
            let (options, session, original) = fetch_original(login, args.id)?;
            let me = options.user.clone();
            let (mut session, text) = match text {
                Some(text) => (session, text),
                None => {
                    let template = reply_template(&original);
                    logout(session, login);
                    let text = editor::edit(&template, true)?;
                    (login.open(&options).map_err(not_sent_if_client)?, text)
                }
            };
            let draft = reply_draft(&original, &me, args.all, text)?;
            send(&mut session, &options, &draft, args.json, &note, &mut out)?;
            logout(session, login);
        }
        Command::Forward(args) => {
            let to = parse_recipients(&args.to)?;
            let text = text_before_login(&args.body)?;
            let (options, session, original) = fetch_original(login, args.id)?;
            let (mut session, text) = match text {
                Some(text) => (session, text),
                None => {
                    logout(session, login);
                    let text = editor::edit(&forward_template(&original), false)?;
                    (login.open(&options).map_err(not_sent_if_client)?, text)
                }
            };
            let draft = forward_draft(&original, to, &text)?;
            send(&mut session, &options, &draft, args.json, &note, &mut out)?;
            logout(session, login);
        }
        Command::Logout => return revoke_tickets(login),
        Command::Keys(args) => {
            let mut session = login.connect(login.options()?)?;
            crate::keys::run(&mut session, args, &mut out)?;
            logout(session, login);
        }
        // `app::run` prints these before any login; said plainly rather than panicking if a
        // caller ever routes them here.
        Command::Completions { .. } | Command::Man | Command::Enroll(_) => {
            return Err(AppError::Usage(
                "completions, man and enroll need no login; run them as forkmail completions SHELL, forkmail man or forkmail enroll".into(),
            ))
        }
    }
    print(&String::from_utf8_lossy(&out))
}

/// `send`: sends `draft` exactly once ([`send_with_one_repeat`]) and writes `sent message N`,
/// or `{"id":N}` with `json`. Returns the id.
pub fn send(
    session: &mut Session,
    options: &ConnectOptions,
    draft: &Draft,
    json: bool,
    note: &dyn Fn(&str),
    out: &mut dyn Write,
) -> Result<u64, AppError> {
    if session.version() >= crate::session::E2E_VERSION {
        // Every recipient's key checked against the pins before anything is sent: a key the
        // server substituted stops the send here (KeyChanged), sending nothing.
        session
            .contacts(&draft.to)
            .map_err(|err| not_sent_if_client(err.into()))?;
    }
    let id = send_with_one_repeat(session, options, draft, note)?;
    if json {
        writeln!(out, "{}", sent_id_json(id))?;
    } else {
        writeln!(out, "sent message {id}")?;
    }
    Ok(id)
}

/// `inbox`: the listing filtered by `args`, one line a mail and then the count line, or the
/// JSON array of today's fields.
pub fn inbox(session: &mut Session, args: &InboxArgs, out: &mut dyn Write) -> Result<(), AppError> {
    let mails = filter_inbox(session.inbox()?, args);
    if args.json {
        writeln!(out, "{}", inbox_json(&mails))?;
    } else {
        for mail in &mails {
            writeln!(out, "{}", inbox_line(mail))?;
        }
        writeln!(out, "{}", count_line(&mails))?;
    }
    Ok(())
}

/// `read`: the whole mail for people, or its JSON object. Paging is the caller's
/// ([`pager::show`]), once the text is complete.
pub fn read(session: &mut Session, args: &ReadArgs, out: &mut dyn Write) -> Result<(), AppError> {
    let mail = session.read(args.id)?;
    if args.json {
        writeln!(out, "{}", mail_json(&mail))?;
    } else {
        out.write_all(render_mail(&mail).as_bytes())?;
    }
    Ok(())
}

/// `delete ID...`: one id goes as the request of every release (`deleted message N`), several
/// as one all-or-nothing request (`deleted messages 3, 5`); `{"deleted":[ids]}` with `json`.
pub fn delete(
    session: &mut Session,
    args: &DeleteArgs,
    out: &mut dyn Write,
) -> Result<(), AppError> {
    let ids = distinct_ids(&args.ids);
    let deleted = match ids.as_slice() {
        [id] => {
            session.delete(*id)?;
            vec![*id]
        }
        ids => session.delete_many(ids)?,
    };
    if args.json {
        writeln!(out, "{}", ids_json("deleted", &deleted))?;
    } else {
        writeln!(out, "deleted {}", messages(&deleted))?;
    }
    Ok(())
}

/// `unread ID...`: marks the mails unread, all or none; `{"unread":[ids]}` with `json`.
pub fn unread(
    session: &mut Session,
    args: &UnreadArgs,
    out: &mut dyn Write,
) -> Result<(), AppError> {
    let marked = session.mark_unread(&distinct_ids(&args.ids))?;
    if args.json {
        writeln!(out, "{}", ids_json("unread", &marked))?;
    } else {
        writeln!(out, "marked {} unread", messages(&marked))?;
    }
    Ok(())
}

/// `reply` on one session, for the REPL: reads the original, then sends the reply with
/// `text` (what the REPL read in line mode), else `--file`'s text, else what the editor leaves
/// (it runs while the session waits). Never reads standard input.
pub fn reply(
    session: &mut Session,
    options: &ConnectOptions,
    args: &ReplyArgs,
    text: Option<String>,
    note: &dyn Fn(&str),
    out: &mut dyn Write,
) -> Result<u64, AppError> {
    let original = session.read(args.id)?;
    let text = match (text, &args.body.file) {
        (Some(text), _) => text,
        (None, Some(path)) => read_body_file(path)?,
        (None, None) => editor::edit(&reply_template(&original), true)?,
    };
    let draft = reply_draft(&original, &options.user, args.all, text)?;
    send(session, options, &draft, args.json, note, out)
}

/// `forward` on one session, for the REPL, as [`reply`].
pub fn forward(
    session: &mut Session,
    options: &ConnectOptions,
    args: &ForwardArgs,
    text: Option<String>,
    note: &dyn Fn(&str),
    out: &mut dyn Write,
) -> Result<u64, AppError> {
    let to = parse_recipients(&args.to)?;
    let original = session.read(args.id)?;
    let text = match (text, &args.body.file) {
        (Some(text), _) => text,
        (None, Some(path)) => read_body_file(path)?,
        (None, None) => editor::edit(&forward_template(&original), false)?,
    };
    let draft = forward_draft(&original, to, &text)?;
    send(session, options, &draft, args.json, note, out)
}

/// The inbox as `args` filters it, oldest first as listed: below `--before`, `--unread`,
/// `--from`, `--search` (title or sender, ignoring case), then the newest `--limit`.
pub fn filter_inbox(mails: Vec<MailSummary>, args: &InboxArgs) -> Vec<MailSummary> {
    let search = args.search.as_deref().map(str::to_lowercase);
    let mut kept: Vec<MailSummary> = mails
        .into_iter()
        .filter(|m| args.before.is_none_or(|before| m.id < before))
        .filter(|m| !args.unread || !m.read)
        .filter(|m| args.from.as_deref().is_none_or(|from| m.from == from))
        .filter(|m| {
            search.as_deref().is_none_or(|text| {
                m.title.to_lowercase().contains(text) || m.from.to_lowercase().contains(text)
            })
        })
        .collect();
    if let Some(limit) = args.limit {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        kept.drain(..kept.len().saturating_sub(limit));
    }
    kept
}

/// `Re: TITLE`, or the title itself when it already starts with `Re:` (any case), cut to the
/// title limit.
pub fn reply_title(title: &str) -> String {
    prefixed_title("Re:", title)
}

/// `Fwd: TITLE`, or the title itself when it already starts with `Fwd:` (any case), cut to the
/// title limit.
pub fn forward_title(title: &str) -> String {
    prefixed_title("Fwd:", title)
}

fn prefixed_title(prefix: &str, title: &str) -> String {
    let trimmed = title.trim_start();
    let has_prefix = trimmed
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix));
    let full = if has_prefix {
        trimmed.to_owned()
    } else {
        format!("{prefix} {title}")
    };
    full.chars().take(MAX_TITLE_CHARS).collect()
}

/// Who a reply goes to: the sender, and with `all` every other recipient too; never `me`, each
/// name once, in the original's order.
pub fn reply_recipients(original: &Mail, me: &str, all: bool) -> Vec<String> {
    let mut to: Vec<String> = Vec::new();
    let others = if all { original.to.as_slice() } else { &[] };
    for name in std::iter::once(&original.from).chain(others) {
        if name != me && !to.contains(name) {
            to.push(name.clone());
        }
    }
    to
}

/// The reply to `original` from `me` with `text` as its body. A mail from `me` has nobody to
/// answer but its other recipients, which only `--all` adds: said as a usage error.
pub fn reply_draft(original: &Mail, me: &str, all: bool, text: String) -> Result<Draft, AppError> {
    let to = reply_recipients(original, me, all);
    if to.is_empty() {
        return Err(AppError::Usage(format!(
            "message {} is from you, so a reply has nobody to go to; use reply --all to answer its other recipients",
            original.id
        )));
    }
    Ok(build_draft(to, reply_title(&original.title), text)?)
}

/// What the editor opens for a reply: a blank line to write on, then the original quoted with
/// `> `.
pub fn reply_template(original: &Mail) -> String {
    let mut template = format!(
        "\n\nOn {}, {} wrote:\n",
        rfc3339(original.date_ms),
        original.from
    );
    for line in original.body.lines() {
        if line.is_empty() {
            template.push_str(">\n");
        } else {
            template.push_str(&format!("> {line}\n"));
        }
    }
    template
}

/// The forwarded block below a forward's own text: the original's headers and body.
pub fn forwarded_block(original: &Mail) -> String {
    let mut block = format!(
        "---------- Forwarded message ----------\nFrom: {}\nTo: {}\nDate: {}\nTitle: {}\n\n{}",
        original.from,
        original.to.join(", "),
        rfc3339(original.date_ms),
        original.title,
        original.body
    );
    if !block.ends_with('\n') {
        block.push('\n');
    }
    block
}

/// What the editor opens for a forward: a blank line to write on, then the forwarded block (the
/// whole file is the body).
pub fn forward_template(original: &Mail) -> String {
    format!("\n\n{}", forwarded_block(original))
}

/// The forward of `original` to `to`: `text` (from the editor, already holding the block; from
/// a file or standard input, followed by it).
pub fn forward_draft(original: &Mail, to: Vec<String>, text: &str) -> Result<Draft, ClientError> {
    let block = forwarded_block(original);
    let body = if text.contains(&block) {
        text.to_owned()
    } else if text.is_empty() {
        block
    } else if text.ends_with('\n') {
        format!("{text}\n{block}")
    } else {
        format!("{text}\n\n{block}")
    };
    build_draft(to, forward_title(&original.title), body)
}

/// The text of a reply or forward when it comes from `--file` or standard input (read before
/// logging in, like `send`'s body); `None` for `--edit`, which needs the original first.
fn text_before_login(body: &BodyArgs) -> Result<Option<String>, AppError> {
    if body.edit {
        return Ok(None);
    }
    let text = match &body.file {
        Some(path) => read_body_file(path)?,
        None => read_body_stdin()?,
    };
    // A body over the limit must not cost a login.
    validate_body(&text).map_err(ClientError::from)?;
    Ok(Some(text))
}

/// Logs in with the password kept for a send's repeat and reads the mail to answer.
fn fetch_original(login: &Login<'_>, id: u64) -> Result<(ConnectOptions, Session, Mail), AppError> {
    let options = login.with_password(login.options()?)?;
    let mut session = login.open(&options).map_err(not_sent_if_client)?;
    let original = session
        .read(id)
        .map_err(|e| ClientError::NotSent(Box::new(e)))?;
    Ok((options, session, original))
}

/// The ids without repeats, in the order given.
fn distinct_ids(ids: &[u64]) -> Vec<u64> {
    let mut distinct = Vec::with_capacity(ids.len());
    for id in ids {
        if !distinct.contains(id) {
            distinct.push(*id);
        }
    }
    distinct
}

/// `message 3` or `messages 3, 5`.
fn messages(ids: &[u64]) -> String {
    let list: Vec<String> = ids.iter().map(u64::to_string).collect();
    match ids {
        [_] => format!("message {}", list.join("")),
        _ => format!("messages {}", list.join(", ")),
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
    let Some(editor) = editor::editor_command() else {
        return Err(AppError::Usage(
            "send --edit needs an editor: set VISUAL or EDITOR (e.g. EDITOR=nano), or use --file PATH".into(),
        ));
    };
    match editor::run(&editor, "")? {
        Edited::Body(body) => Ok(body),
        Edited::Cancelled { why, left } => Err(AppError::Cancelled(format!(
            "{why}: nothing was sent; {}",
            draft::keep(login.profile_dir, to, title, &left)
        ))),
    }
}

/// Reads a body from standard input up to end of input.
pub fn read_body_stdin() -> Result<String, AppError> {
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
/// `logout`: revokes every login ticket of this user on the server (logging in with this
/// profile's ticket, or the password), then deletes the ticket file, even when the server could
/// not be reached: a ticket the server still holds then runs out at its expiry.
fn revoke_tickets(login: &Login<'_>) -> Result<(), AppError> {
    let options = login.with_password(login.options()?)?;
    let tickets = login.ticket_file(&options);
    let revoked = login.open(&options).and_then(|mut session| {
        session.logout()?;
        logout(session, login);
        Ok(())
    });
    let deleted = tickets.delete();
    if deleted {
        login.note(&format!("deleted {}", tickets.path().display()));
    }
    revoked?;
    print(&format!(
        "logged out: every login ticket of {} is revoked; the next command asks for the password\n",
        options.user
    ))
}

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

    fn mail() -> Mail {
        Mail {
            id: 9,
            from: "alice".into(),
            to: vec!["bob".into(), "carol".into(), "alice".into()],
            date_ms: 0,
            title: "lunch".into(),
            body: "at noon?\n\nA.".into(),
        }
    }

    #[test]
    fn titles_take_one_prefix_and_stay_within_the_limit() {
        assert_eq!(reply_title("lunch"), "Re: lunch");
        assert_eq!(reply_title("Re: lunch"), "Re: lunch");
        assert_eq!(reply_title("RE: lunch"), "RE: lunch");
        assert_eq!(reply_title("re:lunch"), "re:lunch");
        assert_eq!(forward_title("lunch"), "Fwd: lunch");
        assert_eq!(forward_title("FWD: lunch"), "FWD: lunch");
        assert_eq!(forward_title("Re: lunch"), "Fwd: Re: lunch");
        let long = reply_title(&"é".repeat(100));
        assert_eq!(long.chars().count(), MAX_TITLE_CHARS);
        assert!(long.starts_with("Re: é"));
    }

    #[test]
    fn replies_never_go_to_yourself() {
        assert_eq!(reply_recipients(&mail(), "bob", false), ["alice"]);
        assert_eq!(reply_recipients(&mail(), "bob", true), ["alice", "carol"]);
        assert_eq!(reply_recipients(&mail(), "alice", true), ["bob", "carol"]);
        assert!(reply_draft(&mail(), "alice", false, "x".into()).is_err());
        assert!(reply_template(&mail()).ends_with("wrote:\n> at noon?\n>\n> A.\n"));
    }

    #[test]
    fn forwards_carry_the_original_below_the_text() {
        let draft = forward_draft(&mail(), vec!["dave".into()], "see below").unwrap();
        assert_eq!(draft.title, "Fwd: lunch");
        assert!(draft
            .body
            .starts_with("see below\n\n---------- Forwarded message"));
        assert!(draft.body.contains("From: alice\nTo: bob, carol, alice\n"));
        assert!(draft.body.ends_with("\n\nat noon?\n\nA.\n"));
        let edited = format!("hi{}", forward_template(&mail()));
        assert_eq!(
            forward_draft(&mail(), vec!["dave".into()], &edited)
                .unwrap()
                .body,
            edited
        );
    }

    #[test]
    fn inbox_filters_compose() {
        let summary = |id: u64, from: &str, title: &str, read: bool| MailSummary {
            id,
            from: from.into(),
            date_ms: 0,
            title: title.into(),
            read,
        };
        let all = vec![
            summary(1, "alice", "Lunch", true),
            summary(2, "bob", "lunch again", false),
            summary(3, "alice", "report", false),
            summary(4, "lunchbot", "menu", false),
        ];
        let ids = |args: InboxArgs| -> Vec<u64> {
            filter_inbox(all.clone(), &args)
                .iter()
                .map(|m| m.id)
                .collect()
        };
        let search = |text: &str| InboxArgs {
            search: Some(text.into()),
            ..InboxArgs::default()
        };
        assert_eq!(ids(search("LUNCH")), [1, 2, 4]);
        assert_eq!(
            ids(InboxArgs {
                unread: true,
                from: Some("alice".into()),
                ..InboxArgs::default()
            }),
            [3]
        );
        assert_eq!(
            ids(InboxArgs {
                limit: Some(2),
                ..InboxArgs::default()
            }),
            [3, 4]
        );
        assert_eq!(
            ids(InboxArgs {
                limit: Some(2),
                before: Some(4),
                ..InboxArgs::default()
            }),
            [2, 3]
        );
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
