//! The one rule for text that other people wrote: which characters may reach a terminal raw.
//!
//! Titles, sender names, bodies and the server's error messages come from other users or from the
//! server, so they may hold escape sequences that recolour the terminal, move the cursor, rewrite
//! earlier lines or set the window title (C0 and C1 controls: some terminals act on U+009B CSI as
//! on `ESC [`), reorder what is displayed (bidirectional overrides), or hide text and make two
//! titles look alike (invisible format characters such as U+200B or the tag characters). One
//! predicate, [`is_unsafe`], decides; every output of the client goes through it:
//!
//! - for people, [`escape_line`] (single-line fields and messages) and [`escape_body`] (bodies)
//!   write an unsafe character as visible text: `\x1b` for C0 and DEL, `\u{200b}` for the rest;
//! - for scripts, [`to_json`] writes the same set as JSON `\uXXXX` escapes (a surrogate pair for
//!   characters beyond the BMP), so a JSON reader gets the exact text back and a terminal that
//!   shows the JSON never sees one raw.
//!
//! Bodies keep `\n` and `\t` raw for people: a mail is laid out in lines, and neither can move the
//! cursor backwards or overwrite anything (`\r` can, so it is escaped). Everywhere else, and in
//! JSON always, they are escaped too.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io;

use serde::Serialize;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Whether `c` must never reach a terminal raw:
///
/// - C0 controls, DEL and C1 controls (U+0000-001F, U+007F-009F), [`char::is_control`];
/// - line and paragraph separators (U+2028, U+2029), which are not Cf but break lines;
/// - every character of General Category Cf (format), from the Unicode Character Database as
///   tabled by the `unicode-properties` crate: the bidi marks, embeddings, overrides and isolates
///   (U+061C, U+200E-200F, U+202A-202E, U+2066-2069), the soft hyphen U+00AD, zero-width
///   characters U+200B-200D, U+2060-2064, U+FEFF, the tag characters U+E0000-E007F, and the rest.
///
/// Zero-width joiners inside emoji sequences are escaped as well: safety over ligatures.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}')
        || c.general_category() == GeneralCategory::Format
}

/// Escapes a single-line field (title, sender, recipient, a message): every unsafe character,
/// newline and tab included, becomes visible text.
pub fn escape_line(text: &str) -> Cow<'_, str> {
    escape(text, false)
}

/// Escapes a mail body: newlines and tabs stay, every other unsafe character (carriage return
/// included, which could overwrite a line) becomes visible text.
pub fn escape_body(text: &str) -> Cow<'_, str> {
    escape(text, true)
}

fn escape(text: &str, keep_layout: bool) -> Cow<'_, str> {
    let escaped = |c: char| is_unsafe(c) && !(keep_layout && (c == '\n' || c == '\t'));
    if !text.chars().any(escaped) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if !escaped(c) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            // C0 controls and DEL: `\x1b`, `\x7f`, also `\x0a` and `\x09` in single-line fields.
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

/// `value` as compact JSON on one line, with every [`is_unsafe`] character written as a `\uXXXX`
/// escape. serde_json escapes only what JSON requires (C0, `"` and `\`) and writes DEL, C1,
/// bidi and format characters raw; [`TerminalSafe`] escapes those too.
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> String {
    let mut out = Vec::with_capacity(128);
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, TerminalSafe);
    // The client serializes only strings, integers, booleans and sequences of them, and writing
    // into a Vec cannot fail: there is no error to meet. `null` would still be valid JSON.
    if value.serialize(&mut serializer).is_err() {
        return "null".to_owned();
    }
    // serde_json writes valid UTF-8 (our formatter adds only ASCII), so this always succeeds.
    String::from_utf8(out).unwrap_or_else(|_| "null".to_owned())
}

/// serde_json's compact formatter, but string contents go through [`is_unsafe`]: an unsafe
/// character is written as `\uXXXX` (UTF-16 code units, so a surrogate pair beyond the BMP).
#[derive(Debug, Clone, Copy, Default)]
pub struct TerminalSafe;

impl serde_json::ser::Formatter for TerminalSafe {
    /// Called for each run of characters that JSON itself does not need escaped; C0 controls,
    /// `"` and `\` arrive through `write_char_escape` and are escaped by the default.
    fn write_string_fragment<W>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        let mut start = 0;
        for (at, c) in fragment.char_indices() {
            if is_unsafe(c) {
                writer.write_all(&fragment.as_bytes()[start..at])?;
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(writer, "\\u{unit:04x}")?;
                }
                start = at + c.len_utf8();
            }
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// One example of every class the rule covers, with its human and JSON escapes; the display
    /// tests render mail with each.
    pub(crate) const CLASSES: &[(&str, char, &str, &str)] = &[
        ("C0 escape", '\x1b', "\\x1b", "\\u001b"),
        ("C0 carriage return", '\r', "\\x0d", "\\r"),
        ("C0 bell", '\x07', "\\x07", "\\u0007"),
        ("DEL", '\x7f', "\\x7f", "\\u007f"),
        ("C1 CSI", '\u{9b}', "\\u{9b}", "\\u009b"),
        ("C1 next line", '\u{85}', "\\u{85}", "\\u0085"),
        ("bidi arabic letter mark", '\u{61c}', "\\u{61c}", "\\u061c"),
        (
            "bidi right-to-left mark",
            '\u{200f}',
            "\\u{200f}",
            "\\u200f",
        ),
        ("bidi override", '\u{202e}', "\\u{202e}", "\\u202e"),
        ("bidi isolate", '\u{2067}', "\\u{2067}", "\\u2067"),
        ("line separator", '\u{2028}', "\\u{2028}", "\\u2028"),
        ("paragraph separator", '\u{2029}', "\\u{2029}", "\\u2029"),
        ("Cf soft hyphen", '\u{ad}', "\\u{ad}", "\\u00ad"),
        ("Cf zero-width space", '\u{200b}', "\\u{200b}", "\\u200b"),
        ("Cf zero-width joiner", '\u{200d}', "\\u{200d}", "\\u200d"),
        ("Cf word joiner", '\u{2060}', "\\u{2060}", "\\u2060"),
        ("Cf invisible plus", '\u{2064}', "\\u{2064}", "\\u2064"),
        ("Cf byte order mark", '\u{feff}', "\\u{feff}", "\\ufeff"),
        ("Cf arabic number sign", '\u{600}', "\\u{600}", "\\u0600"),
        ("Cf tag begin", '\u{e0001}', "\\u{e0001}", "\\udb40\\udc01"),
        (
            "Cf tag latin a",
            '\u{e0061}',
            "\\u{e0061}",
            "\\udb40\\udc61",
        ),
        ("Cf cancel tag", '\u{e007f}', "\\u{e007f}", "\\udb40\\udc7f"),
    ];

    #[test]
    fn every_class_is_escaped_for_people_and_in_json() {
        for &(class, c, human, json) in CLASSES {
            assert!(is_unsafe(c), "{class}");
            let text = format!("a{c}b");
            assert_eq!(escape_line(&text), format!("a{human}b"), "{class}");
            assert_eq!(escape_body(&text), format!("a{human}b"), "{class}");
            let encoded = to_json(&text);
            assert_eq!(encoded, format!("\"a{json}b\""), "{class}");
            assert!(!encoded.chars().any(is_unsafe), "{class}: {encoded:?}");
            let decoded: String = serde_json::from_str(&encoded).unwrap();
            assert_eq!(decoded, text, "{class}: JSON gives the exact text back");
        }
    }

    #[test]
    fn newline_and_tab_stay_only_in_bodies_and_never_in_json() {
        assert_eq!(escape_body("a\n\tb\r\n"), "a\n\tb\\x0d\n");
        assert_eq!(escape_line("a\n\tb"), "a\\x0a\\x09b");
        assert_eq!(to_json("a\n\tb"), r#""a\n\tb""#);
    }

    #[test]
    fn safe_text_is_borrowed_unchanged() {
        let text = "Grüße, 世界! 👍 \\x1b is just text, e\u{301}";
        assert!(!text.chars().any(is_unsafe));
        assert!(matches!(escape_line(text), Cow::Borrowed(t) if t == text));
        assert!(matches!(escape_body("a\nb\t"), Cow::Borrowed(_)));
        assert_eq!(to_json(text), format!("\"{}\"", text.replace('\\', "\\\\")));
    }

    #[test]
    fn json_escapes_keys_and_nested_strings_too() {
        let mut map = BTreeMap::new();
        map.insert("k\u{202e}", vec!["v\u{200b}"]);
        assert_eq!(to_json(&map), r#"{"k\u202e":["v\u200b"]}"#);
    }

    #[test]
    fn escaping_is_idempotent() {
        // What `escape_line` writes is safe, so escaping an escaped message again (an error that
        // echoes server text, printed through `tell`) changes nothing.
        let once = escape_line("x\x1b\u{202e}\u{e0041}");
        assert_eq!(escape_line(&once), once);
    }
}
