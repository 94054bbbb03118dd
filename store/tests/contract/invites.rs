//! The contract of enrollment invitations and of the enrollment itself: one transaction that
//! either stores the user, the key record and burns the invitation, or changes nothing.

use std::sync::Barrier;

use forkmail_protocol::e2e::{KeyOrigin, KeyRecord, SignedKeyRecord};
use forkmail_protocol::encode;
use forkmail_store::{Invite, Store, StoreError, StoreLocation, INVITE_MEMORY_MS};

use super::{store_with_users, user, Backend};

const NOW: u64 = 1_700_000_000_000;
const DAY: u64 = 24 * 60 * 60 * 1000;

fn record_of(name: &str) -> (KeyRecord, SignedKeyRecord) {
    let record = KeyRecord {
        user: name.to_owned(),
        serial: 1,
        created_ms: NOW,
        origin: KeyOrigin::User,
        signing_key: format!("key of {name}").into_bytes(),
        age_recipient: "age1example".into(),
    };
    let signed = SignedKeyRecord {
        record: encode(&record),
        signature: vec![0x5A; 384],
    };
    (record, signed)
}

fn enroll(store: &mut dyn Store, name: &str, token: u8, now: u64) -> Result<(), StoreError> {
    let (record, signed) = record_of(name);
    store.enroll(&user(name), &[token; 32], &record, &signed, now)
}

fn key_records(b: &dyn Backend, at: &StoreLocation, name: &str) -> Vec<i64> {
    b.query_ints(
        at,
        &format!("SELECT serial FROM key_records WHERE user_name = '{name}'"),
    )
}

fn invite(store: &mut dyn Store, token: u8, now: u64) -> Option<Invite> {
    store
        .invites(now)
        .unwrap()
        .into_iter()
        .find(|i| i.token_hash == [token; 32])
}

pub fn invites_are_listed_until_a_while_after_use_or_expiry(b: &dyn Backend) {
    let (_at, mut store) = store_with_users(b);
    store
        .create_invite("dave", &[1; 32], NOW + DAY, NOW)
        .unwrap();
    store.create_invite("erin", &[2; 32], NOW + 1, NOW).unwrap();
    let listed = invite(&mut *store, 1, NOW).expect("listed");
    assert_eq!(
        listed,
        Invite {
            token_hash: [1; 32],
            user: "dave".into(),
            created_ms: NOW,
            expires_ms: NOW + DAY,
            used_ms: None,
        }
    );
    // An expired one stays listed for a while, so its holder hears "expired"; then it goes.
    assert!(invite(&mut *store, 2, NOW + DAY).is_some());
    assert!(invite(&mut *store, 2, NOW + 1 + INVITE_MEMORY_MS).is_none());
    // A used one likewise, with when it was used.
    enroll(&mut *store, "dave", 1, NOW + 5).unwrap();
    assert_eq!(
        invite(&mut *store, 1, NOW + 6).unwrap().used_ms,
        Some(NOW + 5)
    );
    assert!(invite(&mut *store, 1, NOW + 5 + INVITE_MEMORY_MS).is_none());
}

pub fn an_invite_for_an_existing_user_is_refused(b: &dyn Backend) {
    let (_at, mut store) = store_with_users(b);
    let err = store
        .create_invite("alice", &[1; 32], NOW + DAY, NOW)
        .unwrap_err();
    assert!(
        matches!(err, StoreError::UserExists(ref n) if n == "alice"),
        "{err}"
    );
    assert!(store.invites(NOW).unwrap().is_empty());
}

pub fn enroll_stores_the_user_and_record_and_burns_the_invite(b: &dyn Backend) {
    let (at, mut store) = store_with_users(b);
    store
        .create_invite("dave", &[1; 32], NOW + DAY, NOW)
        .unwrap();
    enroll(&mut *store, "dave", 1, NOW + 10).unwrap();
    assert_eq!(store.find_user("dave").unwrap(), Some(user("dave")));
    assert_eq!(key_records(b, &at, "dave"), [1]);
    assert_eq!(
        b.query_ints(
            &at,
            "SELECT COUNT(*) FROM key_records WHERE origin = 'user'"
        ),
        [1]
    );
    assert_eq!(
        invite(&mut *store, 1, NOW + 11).unwrap().used_ms,
        Some(NOW + 10)
    );
    assert!(store.user_keys().unwrap().iter().any(|k| k.name == "dave"));
    store.check_integrity().unwrap();
}

pub fn every_failed_enrollment_stores_nothing_and_says_why(b: &dyn Backend) {
    let (at, mut store) = store_with_users(b);
    store
        .create_invite("dave", &[1; 32], NOW + DAY, NOW)
        .unwrap();
    store
        .create_invite("erin", &[2; 32], NOW + 100, NOW)
        .unwrap();
    store
        .create_invite("frank", &[3; 32], NOW + DAY, NOW)
        .unwrap();
    store.add_user(&user("frank"), NOW + 1).unwrap();
    let users_before = store.counts().unwrap().users;
    // Unknown token, a token for another name, an expired one, a user made meanwhile.
    type Expected = fn(&StoreError) -> bool;
    let cases: [(&str, u8, u64, Expected); 4] = [
        ("dave", 9, NOW + 10, |e| {
            matches!(e, StoreError::InviteUnknown)
        }),
        ("mallory", 1, NOW + 10, |e| {
            matches!(e, StoreError::InviteForAnotherUser)
        }),
        ("erin", 2, NOW + 100, |e| {
            matches!(e, StoreError::InviteExpired)
        }),
        ("frank", 3, NOW + 10, |e| {
            matches!(e, StoreError::UserExists(_))
        }),
    ];
    for (name, token, now, expected) in cases {
        let err = enroll(&mut *store, name, token, now).unwrap_err();
        assert!(expected(&err), "{name}: {err}");
        assert_eq!(store.counts().unwrap().users, users_before, "{name}");
        assert!(key_records(b, &at, name).is_empty(), "{name}");
    }
    for token in [1, 2, 3] {
        assert_eq!(invite(&mut *store, token, NOW).unwrap().used_ms, None);
    }
    // The invitation still works for its own name; then it is used up.
    enroll(&mut *store, "dave", 1, NOW + 20).unwrap();
    let err = enroll(&mut *store, "dave", 1, NOW + 30).unwrap_err();
    assert!(matches!(err, StoreError::InviteUsed), "{err}");
    assert_eq!(store.counts().unwrap().users, users_before + 1);
    assert_eq!(key_records(b, &at, "dave"), [1]);
}

pub fn racing_enrollments_with_one_token_enroll_once(b: &dyn Backend) {
    const ROUNDS: u8 = 20;
    let (at, mut store) = store_with_users(b);
    for round in 0..ROUNDS {
        store
            .create_invite(&format!("user{round}"), &[round; 32], NOW + DAY, NOW)
            .unwrap();
    }
    let barrier = Barrier::new(2);
    let results: Vec<Vec<Result<(), String>>> = std::thread::scope(|s| {
        let racers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut store = forkmail_store::open(&at).expect("open");
                    (0..ROUNDS)
                        .map(|round| {
                            barrier.wait();
                            let name = format!("user{round}");
                            enroll(&mut *store, &name, round, NOW + 1).map_err(|e| e.to_string())
                        })
                        .collect()
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for (round, (a, b)) in results[0].iter().zip(&results[1]).enumerate() {
        assert!(a.is_ok() ^ b.is_ok(), "round {round}: {a:?} and {b:?}");
        let lost = a.as_ref().err().or(b.as_ref().err()).unwrap();
        assert!(lost.contains("already used"), "round {round}: {lost}");
    }
    assert_eq!(
        store.counts().unwrap().users,
        3 + u64::from(ROUNDS),
        "one user per invitation"
    );
}
