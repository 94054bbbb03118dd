//! Enrollment tokens (PROTOCOL.md §10): what `forkmail-keygen invite` prints and `forkmail
//! enroll --invite` reads, so the two programs agree on every character.
//!
//! A token is 32 bytes from the system's CSPRNG, written `fmi-` and 43 characters of unpadded
//! base64url: one copyable word with no characters a shell or a mail program mangles. Parsing
//! is strict (the prefix, the length, canonical base64url), so a truncated or mistyped token is
//! refused on the user's machine with a message rather than sent. The store keeps only
//! SHA-256 of the bytes ([`InviteToken::hash`]).

use std::time::Duration;

use base64ct::{Base64UrlUnpadded, Encoding};
use forkmail_protocol::e2e::sha256;
use forkmail_protocol::messages::INVITE_TOKEN_LEN;
use ring::rand::{SecureRandom, SystemRandom};

/// What every token's text starts with ("forkmail invitation").
pub const TOKEN_PREFIX: &str = "fmi-";
/// The length of a token's text: the prefix and 43 base64url characters.
pub const TOKEN_TEXT_LEN: usize = 4 + 43;
/// An invitation's lifetime unless `--ttl` says otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest lifetime `--ttl` accepts.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// An enrollment token. Its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct InviteToken([u8; INVITE_TOKEN_LEN]);

impl std::fmt::Debug for InviteToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InviteToken(<redacted>)")
    }
}

impl InviteToken {
    /// A fresh token from the system's CSPRNG.
    pub fn generate() -> Result<Self, String> {
        let mut bytes = [0u8; INVITE_TOKEN_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| "the system's random source failed".to_owned())?;
        Ok(Self(bytes))
    }

    /// Reads a token's text strictly: `fmi-` and 43 canonical base64url characters, nothing
    /// else (surrounding whitespace from a copy is forgiven).
    pub fn parse(text: &str) -> Result<Self, String> {
        const HINT: &str =
            "copy the whole token forkmail-keygen invite printed (fmi- and 43 more characters)";
        let text = text.trim();
        let Some(body) = text.strip_prefix(TOKEN_PREFIX) else {
            return Err(format!(
                "an invitation token starts with {TOKEN_PREFIX}; {HINT}"
            ));
        };
        if text.len() != TOKEN_TEXT_LEN {
            return Err(format!(
                "the invitation token is {} characters long, not {TOKEN_TEXT_LEN}; {HINT}",
                text.chars().count()
            ));
        }
        let mut bytes = [0u8; INVITE_TOKEN_LEN];
        match Base64UrlUnpadded::decode(body, &mut bytes) {
            Ok(decoded) if decoded.len() == INVITE_TOKEN_LEN => Ok(Self(bytes)),
            _ => Err(format!(
                "the invitation token holds characters that are not base64url (A-Z a-z 0-9 - _); {HINT}"
            )),
        }
    }

    /// The token's text, as printed.
    pub fn to_text(&self) -> String {
        format!(
            "{TOKEN_PREFIX}{}",
            Base64UrlUnpadded::encode_string(&self.0)
        )
    }

    pub fn bytes(&self) -> &[u8; INVITE_TOKEN_LEN] {
        &self.0
    }

    /// SHA-256 of the token: what the store keeps and what keys the enrollment hello's proof.
    pub fn hash(&self) -> [u8; 32] {
        sha256(&self.0)
    }
}

/// Reads an invitation lifetime: a whole number and a unit, `s`, `m`, `h` or `d` (`30m`, `24h`,
/// `7d`), from one second to [`MAX_TTL`].
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let bad =
        || format!("{text:?} is not a duration; write a number and a unit: 90s, 30m, 24h or 7d");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 60 * 60,
        "d" => 24 * 60 * 60,
        _ => return Err(bad()),
    };
    let secs = number.checked_mul(unit_secs).ok_or_else(bad)?;
    if secs == 0 {
        return Err(format!("{text:?}: an invitation must last at least 1 s"));
    }
    if secs > MAX_TTL.as_secs() {
        return Err(format!("{text:?}: an invitation may last at most 365 days"));
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_are_read_strictly() {
        let token = InviteToken::generate().unwrap();
        let text = token.to_text();
        assert_eq!(text.len(), TOKEN_TEXT_LEN);
        assert!(text.starts_with("fmi-"));
        assert_eq!(InviteToken::parse(&text).unwrap(), token);
        assert_eq!(InviteToken::parse(&format!(" {text}\n")).unwrap(), token);
        assert_ne!(InviteToken::generate().unwrap(), token);
        assert!(!format!("{token:?}").contains(&text[4..]));
        let mut wrong_char = text.clone();
        wrong_char.replace_range(10..11, "+");
        for bad in [
            &text[1..],
            &text[..text.len() - 1],
            &format!("{text}A"),
            &format!("fmx-{}", &text[4..]),
            &wrong_char,
            "",
        ] {
            assert!(InviteToken::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(token.hash(), sha256(token.bytes()));
    }

    #[test]
    fn lifetimes_need_a_number_and_a_unit() {
        assert_eq!(parse_ttl("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_ttl("24h").unwrap(), DEFAULT_TTL);
        assert_eq!(parse_ttl("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert_eq!(parse_ttl("1s").unwrap(), Duration::from_secs(1));
        for bad in [
            "",
            "24",
            "h",
            "0s",
            "1.5h",
            "-1h",
            "1w",
            "24 h",
            "366d",
            "99999999999999999999d",
        ] {
            assert!(parse_ttl(bad).is_err(), "{bad:?}");
        }
    }
}
