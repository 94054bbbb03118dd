//! Throw-away deployments for the benchmark, made in-process with the keygen library.
//!
//! Every deployment has two users: [`USER`], whose sessions are timed, and [`PEER`], who
//! receives the benchmark's sends and "sent" the preloaded mail. RSA keys cost seconds to
//! generate, so a deployment that only needs a different mailbox is a [`Deployment::copy_to`]
//! of one made earlier, not a new `init`.

use std::fs;
use std::path::{Path, PathBuf};

use forkmail_keygen::deploy::{self, InitOptions, NewUser};
use forkmail_keygen::layout;
use forkmail_protocol::now_millis;

use super::BenchError;
use crate::session::ConnectOptions;

/// The user whose sessions are measured.
pub const USER: &str = "alice";
/// The other user: recipient of the benchmark's sends, sender of the preloaded mail.
pub const PEER: &str = "bob";
/// Key size of every benchmark deployment: the production default.
pub const BITS: usize = 3072;

/// A deployment made by `forkmail_keygen::deploy::init` under a directory the caller removes.
#[derive(Debug, Clone)]
pub struct Deployment {
    root: PathBuf,
    /// PBKDF2-HMAC-SHA512 iterations of every stored password.
    pub kdf_iterations: u32,
}

impl Deployment {
    /// Makes a deployment at `root` with [`USER`] and [`PEER`] and [`BITS`]-bit keys.
    pub fn create(root: &Path, kdf_iterations: u32) -> Result<Self, BenchError> {
        let users: Vec<NewUser> = [USER, PEER]
            .into_iter()
            .map(|name| NewUser {
                name: name.to_owned(),
                password: password(name),
            })
            .collect();
        let options = InitOptions {
            bits: BITS,
            kdf_iterations,
            ..InitOptions::default()
        };
        deploy::init(root, &users, &options).map_err(|source| BenchError::Deploy {
            path: root.to_owned(),
            source,
        })?;
        Ok(Self {
            root: root.to_owned(),
            kdf_iterations,
        })
    }

    /// Copies the whole deployment (keys, database, profiles, file modes) to `root`. The
    /// server must not be running on `self`.
    pub fn copy_to(&self, root: &Path) -> Result<Self, BenchError> {
        copy_tree(&self.root, root)?;
        Ok(Self {
            root: root.to_owned(),
            kdf_iterations: self.kdf_iterations,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn server_dir(&self) -> PathBuf {
        layout::server_dir(&self.root).0
    }

    /// Session options for `user` against the server at `addr`, keys loaded once.
    pub fn connect_options(&self, user: &str, addr: &str) -> Result<ConnectOptions, BenchError> {
        let profile = layout::profile_dir(&self.root, user).0;
        Ok(ConnectOptions::from_profile(&profile)
            .map_err(BenchError::client(format!(
                "loading the profile {}",
                profile.display()
            )))?
            .with_password(password(user))
            .with_server_addr(addr))
    }

    /// Puts `count` mails from [`PEER`] into `recipient`'s inbox, each with a body of
    /// `body_chars` ASCII characters, by writing the database directly in one transaction.
    /// Only while no server runs on this deployment. Rows are exactly what the server's own
    /// send stores (one `messages` row, its `bodies` row, one unread `deliveries` row), and the WAL is
    /// checkpointed afterwards so the server starts from a settled file, as a long-running one
    /// would be.
    pub fn preload(
        &self,
        recipient: &str,
        count: usize,
        body_chars: usize,
    ) -> Result<(), BenchError> {
        let path = layout::server_dir(&self.root).database();
        let failed = |source: forkmail_store::StoreError| BenchError::Preload {
            path: path.clone(),
            source,
        };
        let mut store = forkmail_store::open(&forkmail_store::StoreLocation::Sqlite(path.clone()))
            .map_err(failed)?;
        // One mail a minute, the newest a minute ago.
        let first_ms = now_millis().saturating_sub(60_000 * (count as u64 + 1));
        let mut mails = (0..count).map(|i| forkmail_store::ImportedMail {
            from: PEER.to_owned(),
            sent_ms: first_ms + 60_000 * i as u64,
            draft: forkmail_protocol::messages::Draft {
                to: vec![recipient.to_owned()],
                title: format!("Preloaded mail number {i} for the benchmark"),
                body: ascii_body(body_chars, i),
            },
        });
        store.import(&mut mails).map_err(failed)?;
        Ok(())
    }
}

/// The password of a benchmark user.
pub fn password(user: &str) -> String {
    format!("{user}-bench-password")
}

/// Exactly `chars` printable ASCII characters of text-like filler; `seed` varies the start so
/// that bodies differ.
pub fn ascii_body(chars: usize, seed: usize) -> String {
    const TEXT: &str = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod \
                        tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim \
                        veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip.\n";
    TEXT.chars()
        .cycle()
        .skip(seed % TEXT.len())
        .take(chars)
        .collect()
}

/// Recursive copy that keeps file and directory modes (private keys stay 0600, which the
/// client insists on).
fn copy_tree(from: &Path, to: &Path) -> Result<(), BenchError> {
    fs::create_dir_all(to).map_err(BenchError::io(to))?;
    let meta = fs::metadata(from).map_err(BenchError::io(from))?;
    fs::set_permissions(to, meta.permissions()).map_err(BenchError::io(to))?;
    for entry in fs::read_dir(from).map_err(BenchError::io(from))? {
        let entry = entry.map_err(BenchError::io(from))?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        if entry.file_type().map_err(BenchError::io(&source))?.is_dir() {
            copy_tree(&source, &target)?;
        } else {
            // `fs::copy` copies the permission bits too.
            fs::copy(&source, &target).map_err(BenchError::io(&source))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_exact_ascii() {
        for chars in [0, 1, 1000, 1_000_000] {
            let body = ascii_body(chars, chars);
            assert_eq!(body.len(), chars);
            assert!(body.is_ascii());
        }
        assert_ne!(ascii_body(50, 1), ascii_body(50, 2));
    }
}
