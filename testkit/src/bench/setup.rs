//! What every benchmark deployment holds, on top of the kit's [`Deployment`].
//!
//! Two users: [`USER`], whose sessions are timed, and [`PEER`], who receives the benchmark's
//! sends and "sent" the preloaded mail. Keys are [`BITS`] bits, the production default; the KDF
//! cost varies by deployment.

use std::path::Path;

use forkmail_client::ConnectOptions;
use forkmail_store::StoreLocation;

use super::BenchError;
use crate::db::{self, Mail};
use crate::deployment::{DeployOptions, Deployment};

/// The user whose sessions are measured.
pub const USER: &str = "alice";
/// The other user: recipient of the benchmark's sends, sender of the preloaded mail.
pub const PEER: &str = "bob";
/// Key size of every benchmark deployment: the production default.
pub const BITS: usize = 3072;

/// Makes a deployment at `root` with [`USER`] and [`PEER`], [`BITS`]-bit keys,
/// `kdf_iterations` PBKDF2 iterations and its store at `store` (`None`: SQLite, `mail.db`).
pub fn create(
    root: &Path,
    kdf_iterations: u32,
    store: Option<StoreLocation>,
) -> Result<Deployment, BenchError> {
    let options = DeployOptions {
        bits: BITS,
        kdf_iterations,
        store,
    };
    Ok(Deployment::create(root, &[USER, PEER], &options)?)
}

/// Session options for `user` against the server at `addr`, keys loaded once.
pub fn connect_options(
    deployment: &Deployment,
    user: &str,
    addr: &str,
) -> Result<ConnectOptions, BenchError> {
    deployment
        .connect_options(user, addr)
        .map_err(BenchError::client(format!(
            "loading the profile {}",
            deployment.profile(user).display()
        )))
}

/// Puts `count` mails from [`PEER`] into `recipient`'s inbox, each with a body of `body_chars`
/// ASCII characters and a numbered title, through the store's `import` (see
/// [`db::preload_mail`]). Only while no server runs on this deployment.
pub fn preload(
    deployment: &Deployment,
    recipient: &str,
    count: usize,
    body_chars: usize,
) -> Result<(), BenchError> {
    db::preload_mail(&deployment.store(), PEER, recipient, count, |i| Mail {
        title: format!("Preloaded mail number {i} for the benchmark"),
        body: ascii_body(body_chars, i),
    })
    .map_err(|e| BenchError::Kit(e.into()))
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
