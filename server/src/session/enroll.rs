//! An enrollment session (PROTOCOL.md §10): a new user registers keys made on their own
//! machine, with a token the administrator issued (`forkmail-keygen invite`).
//!
//! The parent admitted the hello because its proof matched an invitation for the name it
//! carries; the child answered it like any hello. Now one sealed [`Enrollment`] frame arrives
//! and everything is checked again, here and then in the store's one transaction
//! ([`Store::enroll`]): the token is the one the hello proved, the invitation is for this name,
//! unused and unexpired, the password keeps the rules, the new key signed this session's
//! transcript (so the client holds its private half) and the key record is the user's own,
//! self-signed first record. The password is hashed here, at the deployment's settings; the
//! private keys never reach the server. One sealed [`EnrollResult`] answers, and the session
//! ends: the new user logs in afresh, as any user does.

use std::net::TcpStream;
use std::time::Instant;

use forkmail_keygen::deploy::validate_password;
use forkmail_keygen::password::PasswordHash;
use forkmail_protocol::e2e::{sha256, KeyOrigin, KeyRecord};
use forkmail_protocol::frame::{read_frame, write_frame};
use forkmail_protocol::handshake::{verify_client_signature, CheckedHello, Established};
use forkmail_protocol::messages::{
    EnrollResult, Enrollment, MAX_ENROLLMENT_LEN, MAX_PRESENTED_KEY_LEN,
};
use forkmail_protocol::now_millis;
use forkmail_store::{Store, StoreError, UserRecord};
use tracing::{info, warn};

use super::{printable, ChildContext, DeadlineReader, ExpectAuth, SessionError};

/// Longest `age` recipient a record may carry (`age1` and 58 bech32 characters for X25519).
const MAX_AGE_RECIPIENT_LEN: usize = 100;

/// Reads the client's enrollment, checks and stores it, and answers.
pub(super) fn serve(
    ctx: &ChildContext,
    store: &mut dyn Store,
    mut stream: &TcpStream,
    deadline: Instant,
    invited: CheckedHello,
    expect: ExpectAuth,
) -> Result<(), SessionError> {
    let ExpectAuth {
        user,
        established: Established {
            mut channel,
            transcript_hash,
        },
        ..
    } = expect;
    let frame = read_frame(
        &mut DeadlineReader::new(stream, deadline, ctx.heart),
        MAX_ENROLLMENT_LEN,
    )?;
    let enrollment: Enrollment =
        channel.open_fresh(frame, now_millis(), ctx.config.freshness_window_ms)?;
    info!(user = %printable(&user), "enrollment received for {}", printable(&user));
    let result = match check(&user, &invited, &transcript_hash, &enrollment) {
        Err(refused) => refused,
        Ok(record) => store_enrollment(ctx, store, &user, &enrollment, &record),
    };
    write_frame(&mut stream, &channel.seal(&result, now_millis())?)?;
    ctx.heart.beat();
    if result != EnrollResult::Enrolled {
        return Err(SessionError::EnrollRefused {
            user: printable(&user),
            result,
        });
    }
    info!(user = %printable(&user), "enrolled {} with keys made on the user's machine", printable(&user));
    Ok(())
}

/// Everything that needs no store: the token against the hello's proof, the password rules,
/// the key's signature over this session, and the record. Returns the decoded record.
fn check(
    user: &str,
    invited: &CheckedHello,
    transcript_hash: &[u8; 32],
    enrollment: &Enrollment,
) -> Result<KeyRecord, EnrollResult> {
    let invalid = |reason: &str| EnrollResult::Invalid {
        reason: reason.to_owned(),
    };
    if !invited.verify_invite(&sha256(&enrollment.token)) {
        return Err(EnrollResult::InviteUnknown);
    }
    validate_password(user, &enrollment.password).map_err(|e| EnrollResult::Invalid {
        reason: e.to_string(),
    })?;
    if enrollment.public_key.len() > MAX_PRESENTED_KEY_LEN
        || !verify_client_signature(
            &enrollment.public_key,
            transcript_hash,
            &enrollment.signature,
        )
    {
        return Err(invalid(
            "the signature over this session does not verify with the new public key",
        ));
    }
    let record = enrollment
        .record
        .verify_self_signed()
        .map_err(|e| EnrollResult::Invalid {
            reason: format!("the key record: {e}"),
        })?;
    if record.user != user
        || record.origin != KeyOrigin::User
        || record.serial != 1
        || record.signing_key != enrollment.public_key
    {
        return Err(invalid(
            "the key record must be this user's first (serial 1, origin user) with the new key as signing key",
        ));
    }
    if !record.age_recipient.starts_with("age1")
        || record.age_recipient.len() > MAX_AGE_RECIPIENT_LEN
    {
        return Err(invalid(
            "the key record's age recipient is not an age1... recipient",
        ));
    }
    Ok(record)
}

/// Hashes the password and stores the user, the record and the used invitation in one
/// transaction; says how it went.
fn store_enrollment(
    ctx: &ChildContext,
    store: &mut dyn Store,
    user: &str,
    enrollment: &Enrollment,
    record: &KeyRecord,
) -> EnrollResult {
    let settings = &ctx.decoy.password;
    let password = PasswordHash::new(&enrollment.password, settings.kdf, settings.iterations);
    let new_user = UserRecord {
        name: user.to_owned(),
        password: password.to_stored(),
        public_key: enrollment.public_key.clone(),
    };
    let token_hash = sha256(&enrollment.token);
    match store.enroll(
        &new_user,
        &token_hash,
        record,
        &enrollment.record,
        now_millis(),
    ) {
        Ok(()) => EnrollResult::Enrolled,
        Err(StoreError::InviteUnknown) => EnrollResult::InviteUnknown,
        Err(StoreError::InviteExpired) => EnrollResult::InviteExpired,
        Err(StoreError::InviteUsed) => EnrollResult::InviteUsed,
        Err(StoreError::InviteForAnotherUser) => EnrollResult::InviteForAnotherUser,
        Err(StoreError::UserExists(_)) => EnrollResult::UserExists,
        Err(err) => {
            warn!(user = %printable(user), "cannot store the enrollment: {err}");
            EnrollResult::Unavailable
        }
    }
}

#[cfg(test)]
mod tests {
    use forkmail_keygen::keyfile::GeneratedKey;
    use forkmail_protocol::e2e::SignedKeyRecord;
    use forkmail_protocol::handshake::{client_auth, ClientHandshake};
    use ring::rand::SystemRandom;
    use ring::signature::RsaKeyPair;

    use super::*;

    const NOW: u64 = 1_700_000_000_000;
    const TOKEN: [u8; 32] = [42; 32];

    fn key() -> (RsaKeyPair, Vec<u8>) {
        let key = GeneratedKey::generate(2048).unwrap();
        (
            RsaKeyPair::from_pkcs8(&key.pkcs8_der).unwrap(),
            key.public.der,
        )
    }

    fn record(user: &str, serial: u64, signing_key: &[u8], signer: &RsaKeyPair) -> SignedKeyRecord {
        let record = KeyRecord {
            user: user.into(),
            serial,
            created_ms: NOW,
            origin: KeyOrigin::User,
            signing_key: signing_key.to_vec(),
            age_recipient: "age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq".into(),
        };
        SignedKeyRecord::sign(&record, signer, &SystemRandom::new()).unwrap()
    }

    /// Performs each forgery of an enrollment against the child's checks: each is refused
    /// before anything reaches the store.
    #[test]
    fn forged_enrollments_are_refused_before_the_store_is_touched() {
        let rng = SystemRandom::new();
        let (server_key, _) = key();
        let (user_key, user_der) = key();
        let (other_key, other_der) = key();
        let (client, hello) =
            ClientHandshake::start_enroll("carol", &sha256(&TOKEN), NOW, &rng).unwrap();
        let checked = CheckedHello::check(hello, NOW, 30_000).unwrap();
        let (reply, server) = checked.clone().respond(&server_key, NOW, &rng).unwrap();
        let client = client
            .finish(&reply, server_key.public().as_ref(), NOW, 30_000)
            .unwrap();
        let th = server.transcript_hash;
        let honest = Enrollment {
            token: TOKEN,
            password: "carol's own".into(),
            public_key: user_der.clone(),
            signature: client_auth(&client, &user_key, "", &rng).unwrap().signature,
            record: record("carol", 1, &user_der, &user_key),
        };
        assert!(check("carol", &checked, &th, &honest).is_ok());
        let forged = |edit: &dyn Fn(&mut Enrollment)| {
            let mut e = honest.clone();
            edit(&mut e);
            check("carol", &checked, &th, &e).unwrap_err()
        };
        assert_eq!(forged(&|e| e.token[0] ^= 1), EnrollResult::InviteUnknown);
        let invalid = |result: EnrollResult| matches!(result, EnrollResult::Invalid { .. });
        // A key the client does not hold: signed over the session by another key.
        assert!(invalid(forged(&|e| e.public_key = other_der.clone())));
        assert!(invalid(forged(&|e| e.signature[0] ^= 1)));
        // A record for someone else, a later serial, another signing key, signed by another.
        assert!(invalid(forged(
            &|e| e.record = record("dave", 1, &user_der, &user_key)
        )));
        assert!(invalid(forged(
            &|e| e.record = record("carol", 2, &user_der, &user_key)
        )));
        assert!(invalid(forged(
            &|e| e.record = record("carol", 1, &other_der, &other_key)
        )));
        assert!(invalid(forged(
            &|e| e.record = record("carol", 1, &user_der, &other_key)
        )));
        assert!(invalid(forged(&|e| e.password.clear())));
        // The transcript of another session.
        assert!(invalid(
            check("carol", &checked, &[0; 32], &honest).unwrap_err()
        ));
    }
}
