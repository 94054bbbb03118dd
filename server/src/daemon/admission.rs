//! Who may wait for a session slot: the parent's check of each whole hello (PROTOCOL.md §5.1),
//! before any fork, signature or database write is spent on it.
//!
//! Cheap checks come first: decoding, the version (4 only: an unsigned hello would let anyone
//! hold a slot), freshness against the moment the hello arrived, then the user's key and the
//! RSA signature (tens of microseconds) or, for an enrollment hello, its proof against every
//! pending invitation ([`judge_invite`], one HMAC each), then the nonce against those this
//! parent has already admitted. An unknown user and a bad signature get one answer, [`Refusal::UnknownKey`], after
//! the same work (an unknown name is checked against a decoy key), so that the answer does not
//! say which users exist. A hello that passes is then held to the user's session cap
//! ([`cap_refusal`]). Everything here is a pure decision on bytes and state, unit-tested
//! without forking; `daemon` does the I/O.
//!
//! A hello naming a user the parent has no key for may name a user added since the keys were
//! loaded: it waits (unjudged, not queued) for a key load that starts after it arrived, at most
//! one every [`KEY_LOAD_INTERVAL`], and at most [`MAX_WAITING_FOR_KEYS`] wait at once; past
//! that, an unknown name is refused at once. So naming random users makes the server fork a
//! key loader at most every two seconds, and never holds a slot. An enrollment hello whose
//! proof matches no invitation waits the same way (the invitation may be newer than the last
//! load; the loader brings both), and is then refused as [`Refusal::InviteUnknown`]; one that
//! matches an invitation for another name, a used or an expired one is told so at once. The
//! enrollment child checks the invitation again in the store, in the enrollment's transaction.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use forkmail_protocol::handshake::{CheckedHello, HelloKind};
use forkmail_protocol::messages::{Refusal, NONCE_LEN};

use crate::keys::{Known, PendingInvite};

/// The shortest time between the starts of two key loads.
pub(super) const KEY_LOAD_INTERVAL: Duration = Duration::from_secs(2);
/// Most hellos waiting for a key load at once; an unknown name beyond them is refused at once.
pub(super) const MAX_WAITING_FOR_KEYS: usize = 64;
/// Most admitted nonces remembered. Each is a real user's login, so this is reached only by
/// ~2,000 logins a second for the whole retention; past it the oldest is forgotten, and a
/// replay of it is still caught by the child's check in the store (at the cost of a fork).
pub(super) const MAX_SEEN_NONCES: usize = 200_000;

/// What the parent decided about one whole hello.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Signed by the user it names (or proving an invitation for that name), fresh and not seen
    /// before: it may wait for a slot (if the user is under the cap).
    Admit { user: String },
    /// Answered at once, and the connection dropped: no fork.
    Refuse(Refusal),
    /// Well-formed and fresh, but it names a user the parent has no key for (or proves no
    /// invitation the parent knows): it waits for the next key load.
    WaitForKeys,
}

/// Nonces of admitted hellos, until they expire (the nonce retention after their timestamp).
/// Only verified hellos enter, so an outsider cannot fill it; a captured and replayed hello is
/// refused here, before it costs a fork.
#[derive(Default)]
pub(super) struct SeenNonces {
    expiry: HashMap<[u8; NONCE_LEN], u64>,
    /// Arrival order, for expiring and for the hard cap.
    order: VecDeque<([u8; NONCE_LEN], u64)>,
}

impl SeenNonces {
    /// Records `nonce` until `expires_ms`; `false` if it is already recorded and unexpired.
    pub(super) fn insert(&mut self, nonce: [u8; NONCE_LEN], expires_ms: u64, now_ms: u64) -> bool {
        self.expire(now_ms);
        if self.expiry.get(&nonce).is_some_and(|&e| e > now_ms) {
            return false;
        }
        while self.order.len() >= MAX_SEEN_NONCES {
            self.pop_oldest();
        }
        self.expiry.insert(nonce, expires_ms);
        self.order.push_back((nonce, expires_ms));
        true
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.expiry.len()
    }

    fn expire(&mut self, now_ms: u64) {
        while self.order.front().is_some_and(|&(_, e)| e <= now_ms) {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((nonce, expires)) = self.order.pop_front() {
            // Only if this entry is the one recorded (a re-insert after expiry replaces it).
            if self.expiry.get(&nonce) == Some(&expires) {
                self.expiry.remove(&nonce);
            }
        }
    }
}

/// The fixed inputs of a judgement.
pub(super) struct Rules<'a> {
    pub(super) window_ms: u64,
    /// How long after its timestamp a nonce is remembered.
    pub(super) retention_ms: u64,
    /// Any valid RSA public key: what an unknown name's signature is checked against, so that
    /// it costs what a known one does.
    pub(super) decoy_key: &'a [u8],
}

/// Judges one whole hello (the frame body) that arrived at `received_at_ms`. `keys_final`: the
/// keys were loaded after the hello arrived (or no more may wait), so an unknown name is
/// refused rather than waiting.
pub(super) fn judge(
    hello: &[u8],
    received_at_ms: u64,
    now_ms: u64,
    known: &Known,
    keys_final: bool,
    seen: &mut SeenNonces,
    rules: &Rules,
) -> Verdict {
    let checked = match CheckedHello::check(hello.to_vec(), received_at_ms, rules.window_ms) {
        Ok(checked) => checked,
        Err(refusal) => return Verdict::Refuse(refusal),
    };
    let verified = match checked.kind() {
        HelloKind::Enroll => match judge_invite(&checked, &known.invites, now_ms) {
            Some(Ok(())) => true,
            Some(Err(refusal)) => return Verdict::Refuse(refusal),
            None if !keys_final => return Verdict::WaitForKeys,
            None => return Verdict::Refuse(Refusal::InviteUnknown),
        },
        HelloKind::Login => match known.keys.get(&checked.hello.user) {
            Some(key) => checked.verify_signature(key),
            None if !keys_final => return Verdict::WaitForKeys,
            None => {
                // The same work as a known name with a bad signature: the answer's timing must
                // not say which users exist.
                let _ = checked.verify_signature(rules.decoy_key);
                false
            }
        },
    };
    if !verified {
        return Verdict::Refuse(Refusal::UnknownKey);
    }
    let expires = checked
        .hello
        .timestamp_ms
        .saturating_add(rules.retention_ms);
    if !seen.insert(checked.hello.nonce, expires, now_ms) {
        return Verdict::Refuse(Refusal::Replayed);
    }
    Verdict::Admit {
        user: checked.hello.user,
    }
}

/// What an enrollment hello's proof says, judged against every pending invitation: `None` if it
/// matches none; else whether the matched one admits it (for this name, unused, unexpired at
/// `now_ms`) or why not. Every invitation is tried, so the time taken does not say which one
/// matched.
pub(super) fn judge_invite(
    checked: &CheckedHello,
    invites: &[PendingInvite],
    now_ms: u64,
) -> Option<Result<(), Refusal>> {
    let mut matched = None;
    for invite in invites {
        if checked.verify_invite(&invite.token_hash) && matched.is_none() {
            matched = Some(invite);
        }
    }
    let invite = matched?;
    Some(if invite.user != checked.hello.user {
        Err(Refusal::InviteForAnotherUser)
    } else if invite.used {
        Err(Refusal::InviteUsed)
    } else if invite.expires_ms <= now_ms {
        Err(Refusal::InviteExpired)
    } else {
        Ok(())
    })
}

/// The refusal for a user who already holds `open` sessions (running or queued) under a cap
/// of `limit` per user (0: no cap), if any.
pub(super) fn cap_refusal(open: usize, limit: usize) -> Option<Refusal> {
    (limit != 0 && open >= limit).then(|| Refusal::TooManySessions {
        limit: u32::try_from(limit).unwrap_or(u32::MAX),
    })
}

/// When key loads run: on demand, at most one at a time and one every [`KEY_LOAD_INTERVAL`].
/// Loads are numbered; a hello that names an unknown user waits for the first load that starts
/// after it arrived ([`KeyLoads::next`]), since an earlier one may have read the store before
/// the user was added.
#[derive(Default)]
pub(super) struct KeyLoads {
    /// Loads started so far.
    started: u64,
    /// The number of the newest load whose keys are in use.
    done: u64,
    last_start: Option<Instant>,
    running: bool,
    /// A load was asked for (SIGHUP, or a hello waiting for one).
    wanted: bool,
}

impl KeyLoads {
    /// The start-up load, done before serving.
    pub(super) fn loaded_at_start(now: Instant) -> Self {
        Self {
            started: 1,
            done: 1,
            last_start: Some(now),
            ..Self::default()
        }
    }

    /// The number of the next load to start: what a hello arriving now must wait for.
    pub(super) fn next(&self) -> u64 {
        self.started + 1
    }

    /// Whether the keys in use come from load `load` or a later one.
    pub(super) fn has_done(&self, load: u64) -> bool {
        self.done >= load
    }

    /// Asks for a load as soon as the interval allows.
    pub(super) fn want(&mut self) {
        self.wanted = true;
    }

    /// When the wanted load may start, if one is wanted and none is running.
    pub(super) fn due(&self) -> Option<Instant> {
        if !self.wanted || self.running {
            return None;
        }
        Some(
            self.last_start
                .map_or_else(Instant::now, |t| t + KEY_LOAD_INTERVAL),
        )
    }

    /// Records that a load starts now; returns its number.
    pub(super) fn start(&mut self, now: Instant) -> u64 {
        self.started += 1;
        self.last_start = Some(now);
        self.running = true;
        self.wanted = false;
        self.started
    }

    /// Records that the running load ended. A failed one counts as done too: the hellos
    /// waiting on it are then refused (the store is unavailable), not held.
    pub(super) fn finish(&mut self) {
        self.running = false;
        self.done = self.started;
    }
}

#[cfg(test)]
mod tests;
