//! Client authentication: the user's key signature, then the password (PROTOCOL.md §5.4), with
//! throttling of password guesses.
//!
//! The signature over the transcript is checked first and is cheap. The password is only
//! *considered* when the signature is valid, so a password guesser without the user's key learns
//! nothing about the password. PBKDF2 runs exactly once on every attempt whatever failed — against
//! the user's stored hash, or against a decoy of the same cost — so unknown user, wrong key, wrong
//! password and a locked account give the same answer after the same work.
//!
//! Throttling counts wrong passwords presented *with a valid key signature*: those are the only
//! attempts that test a password. Attempts without the user's key cannot learn anything and are
//! not counted, so nobody can lock a user out without holding that user's private key. After
//! [`ThrottlePolicy::free_failures`] consecutive failures each further failure locks the account
//! for a doubling delay, and at [`ThrottlePolicy::lockout_after`] for the full lock-out. The state
//! lives in the store, so every forked child (and every host on a shared store) sees it; a success
//! clears it.

use std::time::Duration;

use forkmail_keygen::password::PasswordHash;
use forkmail_protocol::handshake::{verify_client_signature, TranscriptHash};
use forkmail_protocol::limits::{validate_user_name, MAX_PASSWORD_LEN};
use forkmail_protocol::messages::ClientAuth;

use forkmail_store::{Store, StoreError};

/// What an unknown user is checked against, so that every failure costs the same.
pub struct Decoy {
    pub password: PasswordHash,
    /// Any valid RSA public key; the server's own serves.
    pub public_key: Vec<u8>,
}

/// How password failures are throttled.
#[derive(Debug, Clone)]
pub struct ThrottlePolicy {
    /// Consecutive failures allowed before any delay.
    pub free_failures: u32,
    /// Failures at which the account is locked for `lockout`.
    pub lockout_after: u32,
    pub lockout: Duration,
}

impl ThrottlePolicy {
    /// How long the account is locked after the `failures`-th consecutive failure.
    pub fn lock_for(&self, failures: u32) -> Duration {
        if failures >= self.lockout_after {
            self.lockout
        } else if failures > self.free_failures {
            let doublings = (failures - self.free_failures - 1).min(16);
            Duration::from_secs(1 << doublings).min(self.lockout)
        } else {
            Duration::ZERO
        }
    }
}

/// The outcome of an attempt. The client is told only accepted or denied; the reason is logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    UnknownUser,
    PasswordTooLong,
    BadSignature,
    BadPassword { failures: u32, locked_for: Duration },
    Locked { remaining: Duration },
}

/// Decides whether `auth` proves that the client is `user`.
pub fn authenticate(
    store: &mut dyn Store,
    decoy: &Decoy,
    policy: &ThrottlePolicy,
    user: &str,
    th: &TranscriptHash,
    auth: &ClientAuth,
    now_ms: u64,
) -> Result<Verdict, StoreError> {
    let record = if validate_user_name(user).is_ok() {
        store.find_user(user)?
    } else {
        None
    };
    if auth.password.len() > MAX_PASSWORD_LEN {
        decoy.password.verify("");
        return Ok(Verdict::PasswordTooLong);
    }
    let Some(record) = record else {
        verify_client_signature(&decoy.public_key, th, &auth.signature);
        decoy.password.verify(&auth.password);
        return Ok(Verdict::UnknownUser);
    };
    let password =
        PasswordHash::from_stored(user, &record.password).map_err(StoreError::Corrupt)?;
    if !verify_client_signature(&record.public_key, th, &auth.signature) {
        decoy.password.verify(&auth.password);
        return Ok(Verdict::BadSignature);
    }
    let locked_until = store.login_failures(user)?.map(|f| f.locked_until_ms);
    if let Some(until) = locked_until.filter(|&until| until > now_ms) {
        decoy.password.verify(&auth.password);
        return Ok(Verdict::Locked {
            remaining: Duration::from_millis(until - now_ms),
        });
    }
    if password.verify(&auth.password) {
        store.clear_login_failures(user)?;
        return Ok(Verdict::Accepted);
    }
    let recorded =
        store.record_login_failure(user, now_ms, &|n| policy.lock_for(n).as_millis() as u64)?;
    Ok(Verdict::BadPassword {
        failures: recorded.failures,
        locked_for: Duration::from_millis(recorded.locked_until_ms.saturating_sub(now_ms)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_grows_then_locks_out() {
        let p = ThrottlePolicy {
            free_failures: 3,
            lockout_after: 8,
            lockout: Duration::from_secs(900),
        };
        let secs: Vec<u64> = (1..=9).map(|n| p.lock_for(n).as_secs()).collect();
        assert_eq!(secs, vec![0, 0, 0, 1, 2, 4, 8, 900, 900]);
    }
}
