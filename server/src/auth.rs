//! Client authentication: the user's key signature, then the password (PROTOCOL.md §5.4).
//!
//! The signature over the transcript is checked first and is cheap. The password is only
//! *considered* when the signature is valid, so a password guesser without the user's key learns
//! nothing about the password. PBKDF2 runs exactly once on every attempt whatever failed — against
//! the user's stored hash, or against a decoy of the same cost for an unknown user — so unknown
//! user, wrong key and wrong password give the same answer after the same work.

use forkmail_keygen::password::PasswordHash;
use forkmail_protocol::handshake::{verify_client_signature, TranscriptHash};
use forkmail_protocol::limits::validate_user_name;
use forkmail_protocol::messages::ClientAuth;

use crate::store::{Store, StoreError};

/// What an unknown user is checked against, so that every failure costs the same.
pub struct Decoy {
    pub password: PasswordHash,
    /// Any valid RSA public key; the server's own serves.
    pub public_key: Vec<u8>,
}

/// Whether `auth` proves that the client is `user`.
pub fn authenticate(
    store: &Store,
    decoy: &Decoy,
    user: &str,
    th: &TranscriptHash,
    auth: &ClientAuth,
) -> Result<bool, StoreError> {
    let record = if validate_user_name(user).is_ok() {
        store.find_user(user)?
    } else {
        None
    };
    let (public_key, password_hash) = match &record {
        Some(r) => (&r.public_key[..], &r.password),
        None => (&decoy.public_key[..], &decoy.password),
    };
    let signature_ok = verify_client_signature(public_key, th, &auth.signature);
    // Without a valid signature the password is checked against the decoy: same cost, and the
    // result can never be true.
    let checked_against = if signature_ok {
        password_hash
    } else {
        &decoy.password
    };
    let password_ok = checked_against.verify(&auth.password) && signature_ok;
    Ok(record.is_some() && signature_ok && password_ok)
}
