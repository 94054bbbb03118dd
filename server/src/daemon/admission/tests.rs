//! The parent's admission decisions, on hellos made by the real client code.

use std::sync::OnceLock;

use forkmail_keygen::keyfile::GeneratedKey;
use forkmail_protocol::handshake::ClientHandshake;
use forkmail_protocol::messages::SignedClientHello;
use forkmail_protocol::{decode, encode, PROTOCOL_VERSION};
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

fn key_map() -> KeyMap {
    [("alice", &keys()[0].1), ("bob", &keys()[1].1)]
        .into_iter()
        .map(|(name, key)| (name.to_owned(), key.clone()))
        .collect()
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

fn judge_now(hello: &[u8], keys_final: bool, seen: &mut SeenNonces) -> Verdict {
    judge(hello, NOW, NOW, &key_map(), keys_final, seen, &rules())
}

#[test]
fn a_hello_signed_by_its_user_is_admitted_once() {
    let mut seen = SeenNonces::default();
    let h = hello("alice", 0, PROTOCOL_VERSION);
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
    let wrong_key = hello("alice", 1, PROTOCOL_VERSION);
    let unknown = hello("mallory", 0, PROTOCOL_VERSION);
    let mut garbled: SignedClientHello = decode(&hello("bob", 1, PROTOCOL_VERSION)).unwrap();
    garbled.signature[0] ^= 1;
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
            Verdict::Refuse(Refusal::UnsupportedVersion {
                supported: PROTOCOL_VERSION
            })
        );
    }
    let h = hello("alice", 0, PROTOCOL_VERSION);
    let late = NOW + WINDOW + 1;
    assert!(matches!(
        judge(&h, late, late, &key_map(), false, &mut seen, &rules()),
        Verdict::Refuse(Refusal::StaleTimestamp { .. })
    ));
    assert_eq!(
        judge_now(b"\x04garbage", false, &mut seen),
        Verdict::Refuse(Refusal::Malformed)
    );
    assert_eq!(seen.len(), 0);
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
