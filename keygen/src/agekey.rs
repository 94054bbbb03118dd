//! A profile's `age` identities (`age.key`) and the key record that publishes the current one.
//!
//! `age.key` is an age identity file: `AGE-SECRET-KEY-1...` lines, `#` comment lines and blank
//! lines allowed, mode 0600 and refused (with the `chmod` that fixes it) when others can read
//! it, like `user.key`. The first identity is the current one, what new mail to the user is
//! encrypted to; rotation puts a new one first and keeps the older ones after it, so mail
//! encrypted to them stays readable. keygen writes the file for the users it makes, and the
//! client for itself (at a first login without one, at `keys --rotate`, at `enroll`), so the
//! format lives here, in the crate that owns the profile's layout.

use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::secrecy::ExposeSecret;
use age::x25519::Identity;
use forkmail_protocol::e2e::{E2eError, KeyOrigin, KeyRecord, SignedKeyRecord};
use ring::rand::SecureRandom;
use ring::signature::{KeyPair, RsaKeyPair};

use crate::keyfile;
use crate::safety::{self, UnsafeFile};

/// What `age.key` starts with.
const HEADER: &str = "# forkmail age identities: the first is the current one, older ones follow\n";

/// Why `age.key` could not be used. Every variant names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum AgeKeyError {
    #[error("{}: file not found", .0.display())]
    Missing(PathBuf),
    #[error("{}: cannot read: {source}", .path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: line {line} is not an age identity (AGE-SECRET-KEY-1...); the file may be corrupt, restore it from a backup", .path.display())]
    BadLine { path: PathBuf, line: usize },
    #[error("{}: holds no age identity; restore it from a backup, or remove it to make a new one at the next login (mail encrypted to the old one is then lost)", .0.display())]
    Empty(PathBuf),
    #[error("{}: cannot write: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Unsafe(#[from] UnsafeFile),
}

/// A fresh identity from the operating system's CSPRNG.
pub fn generate() -> Identity {
    Identity::generate()
}

/// The file's text for `identities`, current first.
pub fn file_text(identities: &[Identity]) -> String {
    let mut text = HEADER.to_owned();
    for identity in identities {
        text.push_str(identity.to_string().expose_secret());
        text.push('\n');
    }
    text
}

/// Reads `age.key`, refusing a file others can read or that another user owns.
pub fn load(path: &Path) -> Result<Vec<Identity>, AgeKeyError> {
    match fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(AgeKeyError::Missing(path.to_owned()))
        }
        Err(source) => {
            return Err(AgeKeyError::Unreadable {
                path: path.to_owned(),
                source,
            })
        }
        Ok(_) => {}
    }
    safety::check_private(path)?;
    let text = fs::read_to_string(path).map_err(|source| AgeKeyError::Unreadable {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// The identities of an `age.key` text, in file order.
pub fn parse(path: &Path, text: &str) -> Result<Vec<Identity>, AgeKeyError> {
    let mut identities = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let identity = Identity::from_str(line).map_err(|_| AgeKeyError::BadLine {
            path: path.to_owned(),
            line: i + 1,
        })?;
        identities.push(identity);
    }
    if identities.is_empty() {
        return Err(AgeKeyError::Empty(path.to_owned()));
    }
    Ok(identities)
}

/// Creates `age.key` (mode 0600; never replacing a file) with `identities`.
pub fn write_new(path: &Path, identities: &[Identity]) -> Result<(), AgeKeyError> {
    keyfile::write_new_file(path, file_text(identities).as_bytes(), 0o600).map_err(|source| {
        AgeKeyError::Write {
            path: path.to_owned(),
            source,
        }
    })
}

/// Replaces `age.key` atomically with `identities` (a rotation: the new one first).
pub fn replace(path: &Path, identities: &[Identity]) -> Result<(), AgeKeyError> {
    keyfile::replace_file(path, file_text(identities).as_bytes(), 0o600).map_err(|source| {
        AgeKeyError::Write {
            path: path.to_owned(),
            source,
        }
    })
}

/// The signed record that publishes `identity` for `user`, signed by `user_key`, whose public
/// key is the record's signing key.
pub fn signed_record(
    user: &str,
    serial: u64,
    origin: KeyOrigin,
    identity: &Identity,
    user_key: &RsaKeyPair,
    rng: &dyn SecureRandom,
) -> Result<(KeyRecord, SignedKeyRecord), E2eError> {
    let record = KeyRecord {
        user: user.to_owned(),
        serial,
        created_ms: forkmail_protocol::now_millis(),
        origin,
        signing_key: user_key.public_key().as_ref().to_vec(),
        age_recipient: identity.to_public().to_string(),
    };
    let signed = SignedKeyRecord::sign(&record, user_key, rng)?;
    Ok((record, signed))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn identities_round_trip_current_first_with_comments_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("age.key");
        let (new, old) = (generate(), generate());
        write_new(&path, &[new.clone(), old.clone()]).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let loaded = load(&path).unwrap();
        let publics: Vec<String> = loaded.iter().map(|i| i.to_public().to_string()).collect();
        assert_eq!(
            publics,
            [new.to_public().to_string(), old.to_public().to_string()]
        );
        let newer = generate();
        replace(&path, &[newer.clone(), new, old]).unwrap();
        assert_eq!(load(&path).unwrap().len(), 3);
        assert_eq!(
            load(&path).unwrap()[0].to_public(),
            newer.to_public(),
            "the rotated identity is current"
        );
    }

    #[test]
    fn a_bad_file_is_refused_saying_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("age.key");
        assert!(matches!(load(&path), Err(AgeKeyError::Missing(_))));
        keyfile::write_new_file(&path, b"# only a comment\n", 0o600).unwrap();
        assert!(matches!(load(&path), Err(AgeKeyError::Empty(_))));
        fs::remove_file(&path).unwrap();
        keyfile::write_new_file(&path, b"# c\nAGE-SECRET-KEY-1NOTAKEY\n", 0o600).unwrap();
        let Err(err) = load(&path) else {
            panic!("a bad line was accepted")
        };
        assert!(matches!(err, AgeKeyError::BadLine { line: 2, .. }), "{err}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let Err(err) = load(&path) else {
            panic!("a readable file was accepted")
        };
        let err = err.to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }
}
