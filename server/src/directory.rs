//! The key directory's two requests (PROTOCOL.md §9.1): `KeyRecords`, which answers any
//! logged-in user with the current record of the users named, and `PublishKey`, which makes a
//! new record the session's user's current one.
//!
//! The server checks what it can so that it never serves a record its own user did not sign:
//! the record names the session's user, its signing key is the user's login key (the one the
//! signed hello was checked with), its serial is above the current record's and it verifies
//! with the current record's signing key (or, for a first record, with its own). Clients trust
//! none of this: they verify every record again and pin it (a server that substitutes a record
//! is caught there), but an honest server refuses a confused or malicious client's record
//! before it can reach anyone.

use forkmail_protocol::e2e::{
    E2eError, KeyRecord, SignedKeyRecord, MAX_KEY_RECORD_LEN, MAX_SIGNATURE_LEN,
};
use forkmail_protocol::messages::{ErrorCode, Response, MAX_KEY_RECORD_NAMES};
use forkmail_protocol::now_millis;
use forkmail_store::{Store, StoreError};
use tracing::info;

use crate::session::printable;

/// The longest `age1...` recipient accepted: an X25519 recipient is 62 characters.
const MAX_RECIPIENT_LEN: usize = 100;

/// Answers `KeyRecords`: 1 to [`MAX_KEY_RECORD_NAMES`] names, in the order asked.
pub fn key_records(store: &mut dyn Store, names: &[String]) -> Result<Response, StoreError> {
    if names.is_empty() || names.len() > MAX_KEY_RECORD_NAMES {
        return Ok(invalid(format!(
            "a key record request names 1 to {MAX_KEY_RECORD_NAMES} users, not {}",
            names.len()
        )));
    }
    Ok(Response::KeyRecords {
        entries: store.key_records(names)?,
    })
}

/// Answers `PublishKey` for the session's `user`.
pub fn publish_key(
    store: &mut dyn Store,
    user: &str,
    signed: &SignedKeyRecord,
) -> Result<Response, StoreError> {
    let record = match check_shape(user, signed) {
        Ok(record) => record,
        Err(refused) => return Ok(invalid(refused)),
    };
    let Some(login) = store.find_user(user)? else {
        return Err(StoreError::UnknownRecipient(user.to_owned()));
    };
    if record.signing_key != login.public_key {
        return Ok(invalid(
            "the record's signing key is not your login key; nothing was published".to_owned(),
        ));
    }
    let current = store
        .key_records(&[user.to_owned()])?
        .pop()
        .and_then(|entry| entry.record);
    let verified = match &current {
        None => signed.verify_self_signed().map(|_| ()),
        Some(current) => match current.decode_unverified() {
            // A stored record this server cannot read was not stored by it: the operator's to
            // fix, never a reason to take a record not signed by the login key.
            Err(_) => signed.verify_self_signed().map(|_| ()),
            Ok(current) if record.serial <= current.serial => {
                return Ok(invalid(format!(
                    "your current key record has serial {}; a new one needs a higher serial, not {}; nothing was published",
                    current.serial, record.serial
                )))
            }
            Ok(current) => signed.verify_with(&current.signing_key).map(|_| ()),
        },
    };
    if verified.is_err() {
        return Ok(invalid(
            "the key record's signature does not verify with your current key; nothing was published"
                .to_owned(),
        ));
    }
    match store.publish_key(user, &record, signed, now_millis()) {
        Ok(()) => {
            info!(
                "{} published key record {} ({})",
                user,
                record.serial,
                record.origin.name()
            );
            Ok(Response::Published)
        }
        Err(stale @ StoreError::StaleKeyRecord { .. }) => Ok(invalid(stale.to_string())),
        Err(err) => Err(err),
    }
}

/// The checks that need no store: sizes, decoding, whose record it is, and a recipient that
/// looks like one.
fn check_shape(user: &str, signed: &SignedKeyRecord) -> Result<KeyRecord, String> {
    if signed.record.len() > MAX_KEY_RECORD_LEN || signed.signature.len() > MAX_SIGNATURE_LEN {
        return Err(format!(
            "a key record is at most {MAX_KEY_RECORD_LEN} bytes and its signature at most {MAX_SIGNATURE_LEN}; nothing was published"
        ));
    }
    let record = signed.decode_unverified().map_err(|err| match err {
        E2eError::TooLarge => "the key record is too large; nothing was published".to_owned(),
        _ => "the key record cannot be decoded; nothing was published".to_owned(),
    })?;
    if record.user != user {
        return Err(format!(
            "a session publishes only its own user's key record, not {}'s; nothing was published",
            printable(&record.user)
        ));
    }
    if record.serial == 0 || record.serial > i64::MAX as u64 {
        return Err(format!(
            "key record serial {} is out of range (1 to {}); nothing was published",
            record.serial,
            i64::MAX
        ));
    }
    let recipient = &record.age_recipient;
    let looks_like_age = recipient.starts_with("age1")
        && recipient.len() <= MAX_RECIPIENT_LEN
        && recipient
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !looks_like_age {
        return Err(
            "the key record's age recipient is not an age1... X25519 recipient; nothing was published"
                .to_owned(),
        );
    }
    Ok(record)
}

fn invalid(message: String) -> Response {
    Response::Error {
        code: ErrorCode::InvalidRequest,
        message,
    }
}
