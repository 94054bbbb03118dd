//! Rendering mail for a terminal and for scripts.
//!
//! Every field another user or the server wrote goes through [`crate::escape`], the one rule for
//! which characters may reach a terminal: [`escape_line`] for single-line fields, [`escape_body`]
//! for bodies (which keep their newlines and tabs), and [`to_json`] for `--json`, which writes the
//! same characters as `\uXXXX` escapes. Dates are RFC 3339 in UTC for scripts (a contract), minutes
//! in the local time zone with its offset for people.
//!
//! A body can also forge a header block on screen: blank lines, then `From:` and `Title:` lines of
//! its own, with the real headers scrolled away. A body taller than [`REPEAT_HEADERS_AFTER_ROWS`]
//! is therefore followed by the real headers again, so the last header block on screen is always
//! the real one.

use std::borrow::Cow;

use chrono::{DateTime, Local, SecondsFormat, TimeZone, Utc};
use forkmail_protocol::{Mail, MailSummary, SentSummary};
use serde::Serialize;

use crate::e2e::mail::OpenedMail;
use crate::escape::{escape_body, escape_line, to_json};

/// A mail date for scripts: RFC 3339 in UTC, to the second (`2024-05-01T12:34:56Z`). A date
/// outside chrono's range (only a broken server could send one) is rendered as the raw number.
pub fn rfc3339(date_ms: u64) -> String {
    match utc(date_ms) {
        Some(date) => date.to_rfc3339_opts(SecondsFormat::Secs, true),
        None => format!("@{date_ms}ms"),
    }
}

/// A mail date for people, in the local time zone (`TZ` if set, else `/etc/localtime`) with
/// its offset: `2024-05-01 14:34 +0200`.
pub fn human_date(date_ms: u64) -> String {
    human_date_in(date_ms, &Local)
}

/// [`human_date`] in the time zone `tz`.
pub fn human_date_in<Tz: TimeZone>(date_ms: u64, tz: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    match utc(date_ms) {
        Some(date) => date
            .with_timezone(tz)
            .format("%Y-%m-%d %H:%M %z")
            .to_string(),
        None => format!("@{date_ms}ms"),
    }
}

fn utc(date_ms: u64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(i64::try_from(date_ms).ok()?)
}

/// The last line of a human inbox listing: `12 messages, 3 unread`, `1 message`, `0 messages`.
pub fn count_line(mails: &[MailSummary]) -> String {
    count_line_of(mails.len(), mails.iter().filter(|m| !m.read).count())
}

/// [`count_line`] from the counts of a listing that was not kept.
pub fn count_line_of(total: usize, unread: usize) -> String {
    let noun = if total == 1 { "message" } else { "messages" };
    if unread == 0 {
        format!("{total} {noun}")
    } else {
        format!("{total} {noun}, {unread} unread")
    }
}

/// Widest sender column in an inbox listing; longer names (user names are at most 32 characters)
/// simply push the title right.
const SENDER_WIDTH: usize = 12;

/// One inbox line: id, `*` if unread, date, sender, title, all terminal-safe.
pub fn inbox_line(mail: &MailSummary) -> String {
    let marker = if mail.read { ' ' } else { '*' };
    format!(
        "{:>6} {} {}  {:<width$}  {}",
        mail.id,
        marker,
        human_date(mail.date_ms),
        escape_line(&mail.from),
        escape_line(&mail.title),
        width = SENDER_WIDTH
    )
}

/// Widest recipient column in a sent listing; longer lists push the title right.
const RECIPIENTS_WIDTH: usize = 20;

/// One sent line: id, date, recipients (`;`-separated), title, all terminal-safe; laid out
/// like [`inbox_line`] with the recipients where the sender is.
pub fn sent_line(mail: &SentSummary) -> String {
    let to: Vec<Cow<'_, str>> = mail.to.iter().map(|name| escape_line(name)).collect();
    format!(
        "{:>6}   {}  {:<width$}  {}",
        mail.id,
        human_date(mail.date_ms),
        to.join(";"),
        escape_line(&mail.title),
        width = RECIPIENTS_WIDTH
    )
}

/// One entry in `sent --json`.
#[derive(Debug, Serialize)]
pub struct SentJson<'a> {
    pub id: u64,
    pub to: &'a [String],
    pub date: String,
    pub title: &'a str,
}

/// `sent --json`: a JSON array of [`SentJson`], oldest first, on one line.
pub fn sent_json(mails: &[SentSummary]) -> String {
    let entries: Vec<SentJson<'_>> = mails
        .iter()
        .map(|m| SentJson {
            id: m.id,
            to: &m.to,
            date: rfc3339(m.date_ms),
            title: &m.title,
        })
        .collect();
    to_json(&entries)
}

/// A body taller than this many terminal rows (at [`ASSUMED_COLUMNS`] columns) is followed by the
/// headers again: with the six header lines it no longer fits a 24-row terminal, so the real
/// headers may have scrolled away above a forged block.
pub const REPEAT_HEADERS_AFTER_ROWS: usize = 16;

/// Terminal width assumed when counting a body's rows; a narrower terminal only wraps more, and
/// the client does not ask the terminal.
pub const ASSUMED_COLUMNS: usize = 80;

/// A whole mail for people: headers, a blank line, the body ending in a newline; and after a long
/// body, a marker line and the same headers again.
pub fn render_mail(mail: &Mail) -> String {
    render_with(mail, render_headers(mail), &mail.body)
}

/// What `read` says of a mail's seal, as its last header line.
fn seal_line(opened: &OpenedMail) -> String {
    let state = match (&opened.problem, opened.encrypted) {
        (Some(problem), _) => format!("{problem}"),
        (None, true) => format!(
            "verified: end-to-end encrypted, signed by {}",
            escape_line(&opened.mail.from)
        ),
        (None, false) => {
            "none: stored in plaintext before end-to-end encryption, not verified".to_owned()
        }
    };
    format!("Signed:  {state}\n")
}

/// A mail as `read` shows it: [`render_mail`] with a `Signed:` line saying whether the
/// signature verified; a mail that did not decrypt or verify shows only what the server says
/// and why, never its content.
pub fn render_opened(opened: &OpenedMail) -> String {
    let mail = &opened.mail;
    let headers = render_headers(mail) + &seal_line(opened);
    match &opened.problem {
        None => render_with(mail, headers, &mail.body),
        Some(problem) => format!(
            "{headers}\n[This mail {problem}. Its content is not shown: it may not be what \
             its sender wrote, or not from the sender named.]\n"
        ),
    }
}

/// `read --json` of an opened mail: [`MailJson`]'s fields and `verified`, `encrypted` (and
/// `problem` when it did not verify; then `title` and `body` are empty).
pub fn opened_json(opened: &OpenedMail) -> String {
    let mail = &opened.mail;
    to_json(&OpenedJson {
        mail: MailJson::from(mail),
        verified: opened.verified,
        encrypted: opened.encrypted,
        problem: opened.problem.as_ref().map(|p| p.to_string()),
    })
}

/// A mail in `read --json` from protocol version 4 on.
#[derive(Debug, Serialize)]
pub struct OpenedJson<'a> {
    #[serde(flatten)]
    pub mail: MailJson<'a>,
    /// Whether the sender's signature verified (false for plaintext mail from before).
    pub verified: bool,
    /// Whether the mail was stored end-to-end encrypted.
    pub encrypted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

fn render_with(mail: &Mail, headers: String, body: &str) -> String {
    let body = escape_body(body);
    let mut out = format!("{headers}\n{body}");
    if !out.ends_with('\n') {
        out.push('\n');
    }
    if rows(&body) > REPEAT_HEADERS_AFTER_ROWS {
        out.push_str(&format!(
            "-- end of message {}; its headers again --\n{headers}",
            mail.id
        ));
    }
    out
}

/// The header block, one field a line, each line ending in a newline.
fn render_headers(mail: &Mail) -> String {
    let to: Vec<Cow<'_, str>> = mail.to.iter().map(|name| escape_line(name)).collect();
    format!(
        "Message: {}\nFrom:    {}\nTo:      {}\nDate:    {}\nTitle:   {}\n",
        mail.id,
        escape_line(&mail.from),
        to.join(", "),
        human_date(mail.date_ms),
        escape_line(&mail.title)
    )
}

/// Terminal rows that `text` takes at [`ASSUMED_COLUMNS`] columns (a tab counted as one column,
/// which can only undercount by the width of the tab stops).
fn rows(text: &str) -> usize {
    rows_at(text, ASSUMED_COLUMNS)
}

/// Terminal rows that `text` takes at `columns` columns, counted as [`rows`] does.
pub fn rows_at(text: &str, columns: usize) -> usize {
    let columns = columns.max(1);
    text.lines()
        .map(|line| line.chars().count().div_ceil(columns).max(1))
        .sum()
}

/// One inbox entry in `inbox --json`.
#[derive(Debug, Serialize)]
pub struct SummaryJson<'a> {
    pub id: u64,
    pub from: &'a str,
    pub date: String,
    pub title: &'a str,
    pub read: bool,
}

impl<'a> From<&'a MailSummary> for SummaryJson<'a> {
    fn from(mail: &'a MailSummary) -> Self {
        Self {
            id: mail.id,
            from: &mail.from,
            date: rfc3339(mail.date_ms),
            title: &mail.title,
            read: mail.read,
        }
    }
}

/// A mail in `read --json`.
#[derive(Debug, Serialize)]
pub struct MailJson<'a> {
    pub id: u64,
    pub from: &'a str,
    pub to: &'a [String],
    pub date: String,
    pub title: &'a str,
    pub body: &'a str,
}

impl<'a> From<&'a Mail> for MailJson<'a> {
    fn from(mail: &'a Mail) -> Self {
        Self {
            id: mail.id,
            from: &mail.from,
            to: &mail.to,
            date: rfc3339(mail.date_ms),
            title: &mail.title,
            body: &mail.body,
        }
    }
}

/// `inbox --json`: a JSON array of [`SummaryJson`], on one line.
pub fn inbox_json(mails: &[MailSummary]) -> String {
    let entries: Vec<SummaryJson<'_>> = mails.iter().map(SummaryJson::from).collect();
    to_json(&entries)
}

/// `send --json`, `reply --json`, `forward --json`: `{"id":N}`.
pub fn sent_id_json(id: u64) -> String {
    to_json(&serde_json::json!({ "id": id }))
}

/// `delete --json` (`{"deleted":[ids]}`) and `unread --json` (`{"unread":[ids]}`): `key`
/// names what was done to the ids.
pub fn ids_json(key: &str, ids: &[u64]) -> String {
    let mut object = serde_json::Map::new();
    object.insert(key.to_owned(), serde_json::json!(ids));
    to_json(&object)
}

/// `read --json`: one JSON object, on one line.
pub fn mail_json(mail: &Mail) -> String {
    to_json(&MailJson::from(mail))
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::escape::is_unsafe;
    use crate::escape::tests::CLASSES;

    const ATTACK: &str = "\x1b[2J\x1b]0;owned\x07\r\u{9b}31m\u{202e}gnp.exe\x7f";

    fn summary() -> MailSummary {
        MailSummary {
            id: 7,
            from: "alice".into(),
            date_ms: 1_714_566_896_789,
            title: format!("hi {ATTACK}"),
            read: false,
        }
    }

    fn mail() -> Mail {
        Mail {
            id: 7,
            from: "alice".into(),
            to: vec!["bob".into(), "carol".into()],
            date_ms: 1_714_566_896_789,
            title: "t\tab\nnl".into(),
            body: format!("line 1\n\tline 2{ATTACK}\n"),
        }
    }

    fn assert_terminal_safe(s: &str, allow_layout: bool) {
        for c in s.chars() {
            let layout = allow_layout && (c == '\n' || c == '\t');
            assert!(!is_unsafe(c) || layout, "raw {c:?} in {s:?}");
        }
    }

    #[test]
    fn escape_sequences_never_come_out_raw() {
        let line = escape_line(ATTACK);
        assert_terminal_safe(&line, false);
        assert_eq!(
            line,
            "\\x1b[2J\\x1b]0;owned\\x07\\x0d\\u{9b}31m\\u{202e}gnp.exe\\x7f"
        );
        assert_terminal_safe(&escape_body(ATTACK), false);
    }

    #[test]
    fn every_hostile_class_is_escaped_in_every_output() {
        for &(class, c, human, json) in CLASSES {
            let text = format!("x{c}y");
            let summary = MailSummary {
                from: text.clone(),
                title: text.clone(),
                ..summary()
            };
            let mail = Mail {
                from: text.clone(),
                to: vec![text.clone()],
                title: text.clone(),
                body: text.clone(),
                ..mail()
            };
            let escaped = format!("x{human}y");
            let line = inbox_line(&summary);
            assert_terminal_safe(&line, false);
            assert_eq!(line.matches(&escaped).count(), 2, "{class}: {line}");
            let rendered = render_mail(&mail);
            assert_terminal_safe(&rendered, true);
            assert_eq!(rendered.matches(&escaped).count(), 4, "{class}: {rendered}");

            let listed = inbox_json(std::slice::from_ref(&summary));
            let shown = mail_json(&mail);
            for (out, strings) in [(&listed, 2), (&shown, 4)] {
                assert!(!out.chars().any(is_unsafe), "{class}: {out:?}");
                assert_eq!(
                    out.matches(&format!("x{json}y")).count(),
                    strings,
                    "{class}"
                );
            }
            let listed: Value = serde_json::from_str(&listed).unwrap();
            assert_eq!(listed[0]["title"], text, "{class}");
            assert_eq!(listed[0]["from"], text, "{class}");
            let shown: Value = serde_json::from_str(&shown).unwrap();
            for field in ["from", "title", "body"] {
                assert_eq!(shown[field], text, "{class}: {field}");
            }
            assert_eq!(shown["to"][0], text, "{class}");
        }
    }

    #[test]
    fn regression_a_long_body_cannot_forge_the_headers_on_screen() {
        let forged = format!(
            "{}From:    postmaster\nTitle:   Your password expired\n\nsend it to me\n",
            "\n".repeat(40)
        );
        let mail = Mail {
            body: forged,
            ..mail()
        };
        let text = render_mail(&mail);
        let tail = text
            .rsplit_once("-- end of message 7; its headers again --\n")
            .expect("the headers are repeated after a long body")
            .1;
        assert_eq!(tail, render_headers(&mail));
        assert!(tail.contains("From:    alice\n"), "{tail}");
        assert!(text.ends_with("Title:   t\\x09ab\\x0anl\n"), "{text}");
    }

    #[test]
    fn headers_are_repeated_only_after_a_tall_body() {
        let with_body = |body: String| render_mail(&Mail { body, ..mail() });
        let marker = "its headers again";
        let short = "line\n".repeat(REPEAT_HEADERS_AFTER_ROWS);
        assert!(!with_body(short.clone()).contains(marker));
        assert!(with_body(short + "one more\n").contains(marker));
        // Rows, not lines: one long line wraps into many.
        let wide = "w".repeat(ASSUMED_COLUMNS * REPEAT_HEADERS_AFTER_ROWS + 1);
        assert!(with_body(wide).contains(marker));
        assert_eq!(rows(""), 0);
        assert_eq!(rows("a\n\nb"), 3);
        assert_eq!(rows(&"é".repeat(81)), 2);
    }

    #[test]
    fn rendered_mail_and_inbox_lines_are_terminal_safe() {
        let line = inbox_line(&summary());
        assert_terminal_safe(&line, false);
        let date = human_date(summary().date_ms);
        assert!(
            line.starts_with(&format!("     7 * {date}  alice")),
            "{line}"
        );
        assert!(!inbox_line(&MailSummary {
            read: true,
            ..summary()
        })
        .contains('*'));

        let text = render_mail(&mail());
        assert_terminal_safe(&text, true);
        assert!(text.contains("To:      bob, carol\n"), "{text}");
        assert!(text.contains("Title:   t\\x09ab\\x0anl\n"), "{text}");
        assert!(text.ends_with(
            "\n\tline 2\\x1b[2J\\x1b]0;owned\\x07\\x0d\\u{9b}31m\\u{202e}gnp.exe\\x7f\n"
        ));
    }

    #[test]
    fn inbox_json_shape() {
        let value: Value = serde_json::from_str(&inbox_json(&[summary()])).unwrap();
        assert_eq!(
            value,
            json!([{
                "id": 7,
                "from": "alice",
                "date": "2024-05-01T12:34:56Z",
                "title": format!("hi {ATTACK}"),
                "read": false,
            }])
        );
        assert_eq!(inbox_json(&[]), "[]");
        assert_eq!(sent_json(&[]), "[]");
        // JSON escapes control characters itself.
        assert!(!inbox_json(&[summary()]).contains('\x1b'));
    }

    #[test]
    fn mail_json_shape() {
        let value: Value = serde_json::from_str(&mail_json(&mail())).unwrap();
        assert_eq!(
            value,
            json!({
                "id": 7,
                "from": "alice",
                "to": ["bob", "carol"],
                "date": "2024-05-01T12:34:56Z",
                "title": "t\tab\nnl",
                "body": format!("line 1\n\tline 2{ATTACK}\n"),
            })
        );
        assert!(!mail_json(&mail()).contains('\x1b'));
    }

    #[test]
    fn count_lines_and_id_json() {
        let unread = summary();
        let read = MailSummary {
            read: true,
            ..summary()
        };
        assert_eq!(count_line(&[]), "0 messages");
        assert_eq!(count_line(std::slice::from_ref(&read)), "1 message");
        assert_eq!(
            count_line(&[unread.clone(), read, unread]),
            "3 messages, 2 unread"
        );
        assert_eq!(sent_id_json(12), r#"{"id":12}"#);
        assert_eq!(ids_json("deleted", &[3, 5]), r#"{"deleted":[3,5]}"#);
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            human_date_in(1_714_566_896_789, &Utc),
            "2024-05-01 12:34 +0000"
        );
        let paris = chrono::FixedOffset::east_opt(2 * 3600).unwrap();
        assert_eq!(
            human_date_in(1_714_566_896_789, &paris),
            "2024-05-01 14:34 +0200"
        );
        assert_eq!(rfc3339(u64::MAX), format!("@{}ms", u64::MAX));
    }
}
