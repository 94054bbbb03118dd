//! Rendering mail for a terminal and for scripts.
//!
//! Titles, sender names and bodies are written by other users, so they may hold escape sequences
//! that would recolour the terminal, move the cursor, rewrite earlier lines, set the window title
//! or worse. Human output therefore goes through [`escape_line`] (single-line fields) or
//! [`escape_body`] (bodies, which keep their newlines and tabs): every control character comes out
//! as visible text such as `\x1b`, never as the raw byte. Bidirectional overrides and line
//! separators are escaped too, so text cannot make itself display in a misleading order.
//!
//! `--json` output is the data as stored, with serde_json escaping control characters (`\u001b`)
//! as JSON requires; dates are RFC 3339 in UTC in both forms.

use std::borrow::Cow;
use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use forkmail_protocol::{Mail, MailSummary, SentSummary};
use serde::Serialize;

/// Escapes a single-line field (title, sender, recipient, server message): every control
/// character, including newline and tab, becomes visible text.
pub fn escape_line(text: &str) -> Cow<'_, str> {
    escape(text, false)
}

/// Escapes a mail body: newlines and tabs stay, every other control character (carriage return
/// included, which could overwrite a line) becomes visible text.
pub fn escape_body(text: &str) -> Cow<'_, str> {
    escape(text, true)
}

fn escape(text: &str, keep_layout: bool) -> Cow<'_, str> {
    let keep = |c: char| keep_layout && (c == '\n' || c == '\t');
    if !text.chars().any(|c| is_unsafe(c) && !keep(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if !is_unsafe(c) || keep(c) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            // C0 controls and DEL: `\x1b`, `\x7f`, also `\n` and `\t` in single-line fields.
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            // C1 controls, bidi controls, line and paragraph separators.
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

/// Characters that must not reach a terminal raw: Unicode control characters (C0, DEL, C1),
/// bidirectional embedding/override/isolate marks, and the line/paragraph separators.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200e}' | '\u{200f}' | '\u{061c}'   // LRM, RLM, ALM
            | '\u{202a}'..='\u{202e}'               // embeddings and overrides
            | '\u{2066}'..='\u{2069}'               // isolates
            | '\u{2028}' | '\u{2029}')
}

/// A mail date for scripts: RFC 3339 in UTC, to the second (`2024-05-01T12:34:56Z`). A date
/// outside chrono's range (only a broken server could send one) is rendered as the raw number.
pub fn rfc3339(date_ms: u64) -> String {
    match utc(date_ms) {
        Some(date) => date.to_rfc3339_opts(SecondsFormat::Secs, true),
        None => format!("@{date_ms}ms"),
    }
}

/// A mail date for people: `2024-05-01 12:34 UTC`.
pub fn human_date(date_ms: u64) -> String {
    match utc(date_ms) {
        Some(date) => date.format("%Y-%m-%d %H:%M UTC").to_string(),
        None => format!("@{date_ms}ms"),
    }
}

fn utc(date_ms: u64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(i64::try_from(date_ms).ok()?)
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
    // Serializing strings and integers into a String cannot fail.
    serde_json::to_string(&entries).unwrap_or_else(|_| "[]".to_owned())
}

/// A whole mail for people: headers, a blank line, the body ending in a newline.
pub fn render_mail(mail: &Mail) -> String {
    let to: Vec<Cow<'_, str>> = mail.to.iter().map(|name| escape_line(name)).collect();
    let mut out = format!(
        "Message: {}\nFrom:    {}\nTo:      {}\nDate:    {}\nTitle:   {}\n\n",
        mail.id,
        escape_line(&mail.from),
        to.join(", "),
        human_date(mail.date_ms),
        escape_line(&mail.title)
    );
    out.push_str(&escape_body(&mail.body));
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
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
    // Serializing strings, integers and booleans into a String cannot fail.
    serde_json::to_string(&entries).unwrap_or_else(|_| "[]".to_owned())
}

/// `read --json`: one JSON object, on one line.
pub fn mail_json(mail: &Mail) -> String {
    // Serializing strings, integers and booleans into a String cannot fail.
    serde_json::to_string(&MailJson::from(mail)).unwrap_or_else(|_| "{}".to_owned())
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

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
    fn bodies_keep_newlines_and_tabs_single_lines_do_not() {
        assert_eq!(escape_body("a\n\tb\r\n"), "a\n\tb\\x0d\n");
        assert_eq!(escape_line("a\n\tb"), "a\\x0a\\x09b");
    }

    #[test]
    fn safe_text_is_borrowed_unchanged() {
        let text = "Grüße, 世界! \\x1b is just text";
        assert!(matches!(escape_line(text), Cow::Borrowed(t) if t == text));
        assert!(matches!(escape_body("a\nb\t"), Cow::Borrowed(_)));
    }

    #[test]
    fn rendered_mail_and_inbox_lines_are_terminal_safe() {
        let line = inbox_line(&summary());
        assert_terminal_safe(&line, false);
        assert!(
            line.starts_with("     7 * 2024-05-01 12:34 UTC  alice"),
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
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(human_date(1_714_566_896_789), "2024-05-01 12:34 UTC");
        assert_eq!(rfc3339(u64::MAX), format!("@{}ms", u64::MAX));
    }
}
