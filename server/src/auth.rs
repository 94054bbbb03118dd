//! Client authentication: the user's key signature, then the password (PROTOCOL.md §5.4), with
//! throttling of password guesses.
//!
//! The signature over the transcript is checked first and is cheap. The password is only
//! *considered* when the signature is valid, so a password guesser without the user's key learns
//! nothing about the password. The password hash runs exactly once on every attempt whatever
//! failed — against the user's stored hash, or against a decoy under the deployment's policy — so
//! unknown user, wrong key and wrong password give the same answer after the same work. A locked account does the same work
//! too, but is answered as locked (PROTOCOL.md §5.4): only the holder of the user's key can get
//! that far, and telling them how long to wait is what the lock-out is for.
//!
//! Throttling counts passwords presented *with a valid key signature*: those are the only
//! attempts that test a password. Attempts without the user's key cannot learn anything and are
//! not counted, so nobody can lock a user out without holding that user's private key. Each such
//! attempt is counted as a failure, and the lock that count earns set, *before* its password is
//! hashed ([`Store::begin_login_attempt`], one transaction); a correct password then clears the
//! count. So attempts racing each other are counted one after another, and each lock refuses
//! every attempt counted after it: at most [`ThrottlePolicy::lockout_after`] passwords are ever
//! tested before the full lock-out, however many sessions guess at once. After
//! [`ThrottlePolicy::free_failures`] consecutive failures each further one locks the account for a
//! doubling delay. The state lives in the store, so every forked child (and every host on a
//! shared store) sees it. A failure that earns a lock also revokes every login ticket of the
//! user: whoever is guessing holds the user's key, and a ticket must not outlive that alarm.
//!
//! After a right password the hash is replaced if it was made under another policy than the
//! deployment's ([`HashPolicy`]: PBKDF2 from before Argon2id, or other parameters), with the
//! password just tested, so old hashes move to the current policy one login at a time. This is
//! a re-hash, not a password change: the user's tickets stay valid.
//!
//! Login tickets (PROTOCOL.md §11): a password login may be given a ticket, 32 random bytes of
//! which the store keeps only the SHA-256 ([`issue_ticket`]). A later login presents it with the
//! user's key signature over its own transcript instead of the password ([`authenticate_ticket`]):
//! the signature is checked first, as for a password, then the lock, then the ticket; no
//! password hash runs. A ticket alone, without the private key, opens nothing.

use std::fmt;
use std::time::Duration;

use forkmail_keygen::password::{HashPolicy, PasswordHash};
use forkmail_protocol::handshake::{verify_client_signature, TranscriptHash};
use forkmail_protocol::limits::{validate_user_name, MAX_PASSWORD_LEN};
use forkmail_protocol::messages::{ClientAuth, TicketAuth, TICKET_LEN};
use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use tracing::{info, warn};

use forkmail_store::{Attempt, PasswordUpdate, Store, StoreError};

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

/// The outcome of an attempt. The client is told accepted, locked (only once the key signature
/// verified) or denied; the reason is logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    UnknownUser,
    PasswordTooLong,
    BadSignature,
    /// The password was tested and was wrong: the `failures`-th consecutive one.
    BadPassword {
        failures: u32,
        locked_for: Duration,
    },
    /// The key signature verified but the account is locked: the password (or ticket) was
    /// not tested.
    Locked {
        remaining: Duration,
    },
    /// A ticket login whose ticket is valid: no password hash ran.
    TicketAccepted,
    /// A ticket login with a valid key signature whose ticket is unknown, expired or revoked.
    BadTicket,
}

/// In words, for the log: each tested password says so, and nothing else does.
impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Accepted => f.write_str("password tested and accepted"),
            Verdict::UnknownUser => f.write_str("no such user; nothing counted"),
            Verdict::PasswordTooLong => f.write_str("password too long; nothing counted"),
            Verdict::BadSignature => {
                f.write_str("signature does not verify with the user's key; nothing counted")
            }
            Verdict::BadPassword {
                failures,
                locked_for,
            } if locked_for.is_zero() => {
                write!(f, "password tested and wrong ({failures} in a row)")
            }
            Verdict::BadPassword {
                failures,
                locked_for,
            } => write!(
                f,
                "password tested and wrong ({failures} in a row); account locked for {} s",
                locked_for.as_millis().div_ceil(1000)
            ),
            Verdict::Locked { remaining } => write!(
                f,
                "account locked for {} more s; password not tested",
                remaining.as_millis().div_ceil(1000)
            ),
            Verdict::TicketAccepted => f.write_str("login ticket accepted; password not tested"),
            Verdict::BadTicket => f.write_str(
                "login ticket unknown, expired or revoked; password not tested, nothing counted",
            ),
        }
    }
}

/// Decides whether `auth` proves that the client is `user`; after a right password, re-hashes
/// it under `hashing` if it was stored under another policy.
#[allow(clippy::too_many_arguments)]
pub fn authenticate(
    store: &mut dyn Store,
    decoy: &Decoy,
    policy: &ThrottlePolicy,
    hashing: &HashPolicy,
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
    let lock_for = |failures| policy.lock_for(failures).as_millis() as u64;
    match store.begin_login_attempt(user, now_ms, &lock_for)? {
        Attempt::Locked { until_ms } => {
            decoy.password.verify(&auth.password);
            Ok(Verdict::Locked {
                remaining: Duration::from_millis(until_ms.saturating_sub(now_ms)),
            })
        }
        Attempt::Counted { failures } => {
            if password.verify(&auth.password) {
                // This attempt was counted too: a user who types right is not locked by it.
                store.clear_login_failures(user)?;
                rehash(store, user, &password, hashing, &auth.password);
                return Ok(Verdict::Accepted);
            }
            let locked_for = policy.lock_for(failures);
            if !locked_for.is_zero() {
                let revoked = store.revoke_tickets(user)?;
                if revoked > 0 {
                    info!(user, "account locked: {revoked} login tickets revoked");
                }
            }
            Ok(Verdict::BadPassword {
                failures,
                locked_for,
            })
        }
    }
}

/// Replaces `old`, just verified with `password`, by a hash under `hashing` if it differs. A
/// failure is logged and changes nothing: the login goes on, and the next one tries again.
fn rehash(
    store: &mut dyn Store,
    user: &str,
    old: &PasswordHash,
    hashing: &HashPolicy,
    password: &str,
) {
    if !old.needs_rehash(hashing) {
        return;
    }
    let new = hashing.hash(password);
    match store.update_password(user, &new.to_stored(), PasswordUpdate::Rehash) {
        Ok(()) => info!(
            user,
            "password re-hashed from {} ({}) to {} ({})",
            old.kdf,
            old.iterations,
            new.kdf,
            new.iterations
        ),
        Err(err) => warn!(user, "password not re-hashed, the old hash stays: {err}"),
    }
}

/// Decides whether a ticket login proves that the client is `user`: the key signature over the
/// transcript (checked first, as for a password), then the account's lock, then the ticket.
/// Nothing is counted: a ticket is 256 random bits, so there is nothing to guess, and only the
/// holder of the user's key gets as far as the ticket.
pub fn authenticate_ticket(
    store: &mut dyn Store,
    decoy: &Decoy,
    user: &str,
    th: &TranscriptHash,
    auth: &TicketAuth,
    now_ms: u64,
) -> Result<Verdict, StoreError> {
    let record = if validate_user_name(user).is_ok() {
        store.find_user(user)?
    } else {
        None
    };
    let Some(record) = record else {
        verify_client_signature(&decoy.public_key, th, &auth.signature);
        return Ok(Verdict::UnknownUser);
    };
    if !verify_client_signature(&record.public_key, th, &auth.signature) {
        return Ok(Verdict::BadSignature);
    }
    if let Some(failures) = store.login_failures(user)? {
        if failures.locked_until_ms > now_ms {
            return Ok(Verdict::Locked {
                remaining: Duration::from_millis(failures.locked_until_ms - now_ms),
            });
        }
    }
    if store.ticket_valid(user, &ticket_hash(&auth.ticket), now_ms)? {
        Ok(Verdict::TicketAccepted)
    } else {
        Ok(Verdict::BadTicket)
    }
}

/// Makes a login ticket for `user`, valid for `lifetime` from `now_ms`, and records its SHA-256.
pub fn issue_ticket(
    store: &mut dyn Store,
    user: &str,
    lifetime: Duration,
    now_ms: u64,
) -> Result<[u8; TICKET_LEN], StoreError> {
    let mut ticket = [0u8; TICKET_LEN];
    SystemRandom::new()
        .fill(&mut ticket)
        .map_err(|_| StoreError::Backend("the system random source failed".into()))?;
    let expires_ms = now_ms.saturating_add(lifetime.as_millis() as u64);
    store.issue_ticket(user, &ticket_hash(&ticket), now_ms, expires_ms)?;
    Ok(ticket)
}

/// What the store keeps of a ticket.
pub fn ticket_hash(ticket: &[u8; TICKET_LEN]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, ticket).as_ref());
    out
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

    #[test]
    fn the_log_tells_a_tested_password_from_a_locked_account() {
        let wrong = Verdict::BadPassword {
            failures: 4,
            locked_for: Duration::from_millis(1_500),
        };
        assert_eq!(
            wrong.to_string(),
            "password tested and wrong (4 in a row); account locked for 2 s"
        );
        let locked = Verdict::Locked {
            remaining: Duration::from_millis(899_001),
        };
        assert_eq!(
            locked.to_string(),
            "account locked for 900 more s; password not tested"
        );
    }
}
