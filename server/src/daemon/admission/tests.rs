//! The parent's admission decisions, on hellos made by the real client code.

use std::sync::OnceLock;

use forkmail_keygen::keyfile::GeneratedKey;
use forkmail_protocol::handshake::ClientHandshake;
use forkmail_protocol::messages::{AuthedClientHello, HelloAuth};
use forkmail_protocol::{decode, encode};
use ring::rand::SystemRandom;
use ring::signature::RsaKeyPair;

use super::*;

const NOW: u64 = 1_700_000_000_000;
const WINDOW: u64 = 30_000;
const RETENTION: u64 = 120_000;

/// alice's and bob's key pairs and public keys, generated once.
fn keys() -> &'static [(RsaKeyPair, Vec<u8>); 2] {
    static KEYS: OnceLock<[(RsaKeyPair, Vec<u8>); 2]> = OnceLock::new();
    KEYS.get_or_init(|| {
        let make = || {
            let key = GeneratedKey::generate(2048).unwrap();
            (
                RsaKeyPair::from_pkcs8(&key.pkcs8_der).unwrap(),
                key.public.der,
            )
        };
        [make(), make()]
    })
}

/// The token hashes of the pending invitations: carol's (valid), dave's (used), erin's
/// (expired at `NOW`).
const CAROL: [u8; 32] = [1; 32];
const DAVE: [u8; 32] = [2; 32];
const ERIN: [u8; 32] = [3; 32];

fn known() -> Known {
    let invite = |token_hash, user: &str, expires_ms, used| PendingInvite {
        token_hash,
        user: user.into(),
        expires_ms,
        used,
    };
    Known {
        keys: [("alice", &keys()[0].1), ("bob", &keys()[1].1)]
            .into_iter()
            .map(|(name, key)| (name.to_owned(), key.clone()))
            .collect(),
        invites: vec![
            invite(CAROL, "carol", NOW + 1, false),
            invite(DAVE, "dave", NOW + 1, true),
            invite(ERIN, "erin", NOW, false),
        ],
    }
}

fn rules() -> Rules<'static> {
    Rules {
        window_ms: WINDOW,
        retention_ms: RETENTION,
        decoy_key: &keys()[1].1,
    }
}

/// A hello for `user` signed with `signer`'s key (0 alice, 1 bob) in `version`.
fn hello(user: &str, signer: usize, version: u16) -> Vec<u8> {
    let rng = SystemRandom::new();
    ClientHandshake::start_version(user, &keys()[signer].0, version, NOW, &rng)
        .unwrap()
        .1
}

/// An enrollment hello for `user` proving the invitation `token_hash`.
fn enroll_hello(user: &str, token_hash: &[u8; 32]) -> Vec<u8> {
    ClientHandshake::start_enroll(user, token_hash, NOW, &SystemRandom::new())
        .unwrap()
        .1
}

fn judge_now(hello: &[u8], keys_final: bool, seen: &mut SeenNonces) -> Verdict {
    judge(hello, NOW, NOW, &known(), keys_final, seen, &rules())
}

#[test]
fn a_hello_signed_by_its_user_is_admitted_once() {
    let mut seen = SeenNonces::default();
    let h = hello("alice", 0, 4);
    assert_eq!(
        judge_now(&h, false, &mut seen),
        Verdict::Admit {
            user: "alice".into()
        }
    );
    // The same bytes again: a captured hello replayed.
    assert_eq!(
        judge_now(&h, false, &mut seen),
        Verdict::Refuse(Refusal::Replayed)
    );
    assert_eq!(seen.len(), 1);
}

#[test]
fn unknown_user_and_wrong_key_get_one_answer_and_record_nothing() {
    let mut seen = SeenNonces::default();
    let wrong_key = hello("alice", 1, 4);
    let unknown = hello("mallory", 0, 4);
    let mut garbled: AuthedClientHello = decode(&hello("bob", 1, 4)).unwrap();
    let HelloAuth::Signed(signature) = &mut garbled.auth else {
        panic!("expected a signed hello");
    };
    signature[0] ^= 1;
    let garbled = encode(&garbled);
    for h in [&wrong_key, &unknown, &garbled] {
        assert_eq!(
            judge_now(h, true, &mut seen),
            Verdict::Refuse(Refusal::UnknownKey)
        );
    }
    assert_eq!(seen.len(), 0, "only verified hellos are remembered");
    // Before the keys are final, an unknown name waits for a load instead.
    assert_eq!(judge_now(&unknown, false, &mut seen), Verdict::WaitForKeys);
}

#[test]
fn unsigned_old_and_stale_hellos_are_refused_before_any_key_is_used() {
    let mut seen = SeenNonces::default();
    for version in [1, 2, 3] {
        assert_eq!(
            judge_now(&hello("alice", 0, version), false, &mut seen),
            Verdict::Refuse(Refusal::UnsupportedVersion { supported: 4 })
        );
    }
    let h = hello("alice", 0, 4);
    let late = NOW + WINDOW + 1;
    assert!(matches!(
        judge(&h, late, late, &known(), false, &mut seen, &rules()),
        Verdict::Refuse(Refusal::StaleTimestamp { .. })
    ));
    assert_eq!(
        judge_now(b"\x04garbage", false, &mut seen),
        Verdict::Refuse(Refusal::Malformed)
    );
    assert_eq!(seen.len(), 0);
}

#[test]
fn an_enrollment_hello_proving_a_pending_invitation_for_its_name_is_admitted_once() {
    let mut seen = SeenNonces::default();
    let h = enroll_hello("carol", &CAROL);
    assert_eq!(
        judge_now(&h, false, &mut seen),
        Verdict::Admit {
            user: "carol".into()
        }
    );
    assert_eq!(
        judge_now(&h, false, &mut seen),
        Verdict::Refuse(Refusal::Replayed)
    );
}

#[test]
fn enrollment_hellos_are_told_apart_and_an_unknown_proof_waits_for_one_load() {
    let mut seen = SeenNonces::default();
    for (h, refusal) in [
        (
            enroll_hello("mallory", &CAROL),
            Refusal::InviteForAnotherUser,
        ),
        (enroll_hello("dave", &DAVE), Refusal::InviteUsed),
        (enroll_hello("erin", &ERIN), Refusal::InviteExpired),
    ] {
        assert_eq!(judge_now(&h, false, &mut seen), Verdict::Refuse(refusal));
    }
    // A token this parent does not know may be newer than its last load: it waits for one,
    // then is refused. A proof made for another name's hello matches nothing either.
    let unknown = enroll_hello("carol", &[9; 32]);
    assert_eq!(judge_now(&unknown, false, &mut seen), Verdict::WaitForKeys);
    assert_eq!(
        judge_now(&unknown, true, &mut seen),
        Verdict::Refuse(Refusal::InviteUnknown)
    );
    let mut moved: AuthedClientHello = decode(&enroll_hello("carol", &CAROL)).unwrap();
    moved.hello.user = "mallory".into();
    assert_eq!(
        judge_now(&encode(&moved), true, &mut seen),
        Verdict::Refuse(Refusal::InviteUnknown)
    );
    // An enrollment proof never stands in for a user's signature, nor the reverse.
    let mut as_alice: AuthedClientHello = decode(&hello("alice", 0, 4)).unwrap();
    as_alice.auth = HelloAuth::Invited { proof: [0; 32] };
    assert_eq!(
        judge_now(&encode(&as_alice), true, &mut seen),
        Verdict::Refuse(Refusal::InviteUnknown)
    );
    assert_eq!(seen.len(), 0, "only admitted hellos are remembered");
}

#[test]
fn seen_nonces_expire_and_stay_bounded() {
    let mut seen = SeenNonces::default();
    assert!(seen.insert([1; NONCE_LEN], 100, 0));
    assert!(!seen.insert([1; NONCE_LEN], 100, 99));
    // Expired: forgotten, and may be recorded again (the store still has the final say).
    assert!(seen.insert([1; NONCE_LEN], 300, 100));
    assert_eq!(seen.len(), 1);
    let mut seen = SeenNonces::default();
    for i in 0..MAX_SEEN_NONCES + 10 {
        let mut nonce = [0; NONCE_LEN];
        nonce[..8].copy_from_slice(&(i as u64).to_le_bytes());
        assert!(seen.insert(nonce, u64::MAX, 0));
    }
    assert_eq!(seen.len(), MAX_SEEN_NONCES);
}

#[test]
fn the_cap_counts_open_sessions_and_zero_means_none() {
    assert_eq!(cap_refusal(0, 2), None);
    assert_eq!(cap_refusal(1, 2), None);
    assert_eq!(
        cap_refusal(2, 2),
        Some(Refusal::TooManySessions { limit: 2 })
    );
    assert_eq!(cap_refusal(1000, 0), None);
}

#[test]
fn key_loads_are_spaced_and_a_hello_waits_for_one_that_starts_after_it() {
    let t0 = Instant::now();
    let mut loads = KeyLoads::loaded_at_start(t0);
    assert_eq!(loads.due(), None, "nothing wanted");
    let wait_for = loads.next();
    assert!(!loads.has_done(wait_for));
    loads.want();
    assert_eq!(loads.due(), Some(t0 + KEY_LOAD_INTERVAL));
    let n = loads.start(t0 + KEY_LOAD_INTERVAL);
    assert_eq!(n, wait_for);
    // A hello arriving while that load runs waits for the one after.
    let later = loads.next();
    assert!(later > n);
    loads.want();
    assert_eq!(loads.due(), None, "one load at a time");
    loads.finish();
    assert!(loads.has_done(wait_for));
    assert!(!loads.has_done(later));
    assert_eq!(loads.due(), Some(t0 + 2 * KEY_LOAD_INTERVAL));
}
