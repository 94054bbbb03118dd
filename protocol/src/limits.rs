//! Limits on user names and mail, checked identically by client and server.
//!
//! Lengths are counted in Unicode scalar values (`char`s), not bytes: the original system promised
//! "100 characters" and "1,000,000 characters", and a body of a million multi-byte characters must
//! arrive exact.

/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 100;
/// Longest body, in characters.
pub const MAX_BODY_CHARS: usize = 1_000_000;
/// Longest user name, in characters (all ASCII).
pub const MAX_USER_NAME_LEN: usize = 32;
/// Most recipients of one mail.
pub const MAX_RECIPIENTS: usize = 64;
/// Longest password (bytes): refused by keygen, and by the server, which also bounds the whole
/// `ClientAuth` frame by [`MAX_AUTH_LEN`](crate::frame::MAX_AUTH_LEN) before decrypting it.
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Why some text was refused. Each variant's message says what the limit is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("user name must not be empty")]
    EmptyUserName,
    #[error("user name is {0} characters long; the limit is {MAX_USER_NAME_LEN}")]
    UserNameTooLong(usize),
    #[error("user name {0:?} may contain only a-z, 0-9, '.', '_' and '-', and must start with a letter or digit")]
    UserNameCharacters(String),
    #[error("title must not be empty")]
    EmptyTitle,
    #[error("title is {0} characters long; the limit is {MAX_TITLE_CHARS}")]
    TitleTooLong(usize),
    #[error("body is {0} characters long; the limit is {MAX_BODY_CHARS}")]
    BodyTooLong(usize),
    #[error("at least one recipient is required")]
    NoRecipients,
    #[error("{0} recipients; the limit is {MAX_RECIPIENTS}")]
    TooManyRecipients(usize),
    #[error("recipient {0:?} is listed twice")]
    DuplicateRecipient(String),
    #[error("password is longer than {MAX_PASSWORD_LEN} bytes")]
    PasswordTooLong,
}

/// Checks a user name: 1-32 characters of `[a-z0-9._-]`, starting with a letter or digit. This
/// excludes `/`, `..` as a whole name, NUL, control characters and `;` (the recipient separator).
pub fn validate_user_name(name: &str) -> Result<(), LimitError> {
    let len = name.chars().count();
    if len == 0 {
        return Err(LimitError::EmptyUserName);
    }
    if len > MAX_USER_NAME_LEN {
        return Err(LimitError::UserNameTooLong(len));
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c);
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !first_ok || !name.chars().all(allowed) {
        return Err(LimitError::UserNameCharacters(printable(name)));
    }
    Ok(())
}

/// Checks a title: 1-100 characters. Any characters are allowed and stored verbatim; showing
/// them safely is the client's job.
pub fn validate_title(title: &str) -> Result<(), LimitError> {
    let len = title.chars().count();
    match len {
        0 => Err(LimitError::EmptyTitle),
        n if n > MAX_TITLE_CHARS => Err(LimitError::TitleTooLong(n)),
        _ => Ok(()),
    }
}

/// Checks a body: at most 1,000,000 characters (an empty body is allowed).
pub fn validate_body(body: &str) -> Result<(), LimitError> {
    // Counting is linear; the byte length bounds the char count from above, so short bodies
    // skip the count entirely.
    if body.len() <= MAX_BODY_CHARS {
        return Ok(());
    }
    match body.chars().count() {
        n if n > MAX_BODY_CHARS => Err(LimitError::BodyTooLong(n)),
        _ => Ok(()),
    }
}

/// Checks a recipient list: 1-64 valid, distinct user names.
pub fn validate_recipients(to: &[String]) -> Result<(), LimitError> {
    if to.is_empty() {
        return Err(LimitError::NoRecipients);
    }
    if to.len() > MAX_RECIPIENTS {
        return Err(LimitError::TooManyRecipients(to.len()));
    }
    for (i, name) in to.iter().enumerate() {
        validate_user_name(name)?;
        if to[..i].contains(name) {
            return Err(LimitError::DuplicateRecipient(name.clone()));
        }
    }
    Ok(())
}

/// Splits a `;`-separated recipient list as the original system accepted it, trimming spaces
/// and ignoring empty entries (`"bob; carol;"` is bob and carol).
pub fn split_recipients(list: &str) -> Vec<String> {
    list.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A short, escaped rendering of untrusted text for error messages.
fn printable(s: &str) -> String {
    let mut out: String = s.chars().take(40).flat_map(char::escape_default).collect();
    if s.chars().count() > 40 {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names() {
        for ok in ["alice", "bob.smith", "c_3-d", "0day", &"a".repeat(32)] {
            assert_eq!(validate_user_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "Alice",
            "../etc",
            "a/b",
            ".hidden",
            "-x",
            "a;b",
            "a\0b",
            "a\nb",
            "é",
            &"a".repeat(33),
            &"a".repeat(10_000),
        ] {
            assert!(validate_user_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn title_limits_count_characters() {
        assert_eq!(validate_title(&"é".repeat(100)), Ok(()));
        assert_eq!(
            validate_title(&"é".repeat(101)),
            Err(LimitError::TitleTooLong(101))
        );
        assert_eq!(validate_title(""), Err(LimitError::EmptyTitle));
        assert_eq!(validate_title("a/b\nc"), Ok(()));
    }

    #[test]
    fn body_limits_count_characters() {
        assert_eq!(validate_body(&"€".repeat(MAX_BODY_CHARS)), Ok(()));
        assert_eq!(
            validate_body(&"€".repeat(MAX_BODY_CHARS + 1)),
            Err(LimitError::BodyTooLong(MAX_BODY_CHARS + 1))
        );
        assert_eq!(validate_body(""), Ok(()));
    }

    #[test]
    fn recipients() {
        assert_eq!(
            split_recipients(" bob ;carol;;"),
            vec!["bob".to_string(), "carol".to_string()]
        );
        assert_eq!(validate_recipients(&[]), Err(LimitError::NoRecipients));
        let dup = vec!["bob".to_string(), "bob".to_string()];
        assert_eq!(
            validate_recipients(&dup),
            Err(LimitError::DuplicateRecipient("bob".into()))
        );
    }
}
