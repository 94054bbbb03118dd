//! The key directory's contract: records answered in the order asked, replaced only by a
//! higher serial, atomically against racing publishers.

use std::sync::Barrier;

use forkmail_protocol::e2e::{KeyOrigin, KeyRecord, SignedKeyRecord};
use forkmail_protocol::encode;
use forkmail_store::StoreError;

use super::{store_with_users, Backend};

/// A record of `user` with `serial`: the store checks no signature, so any bytes will do.
fn record(user: &str, serial: u64) -> (KeyRecord, SignedKeyRecord) {
    let record = KeyRecord {
        user: user.to_owned(),
        serial,
        created_ms: 7,
        origin: KeyOrigin::Administrator,
        signing_key: format!("key of {user}").into_bytes(),
        age_recipient: format!("age1{user}{serial}"),
    };
    let signed = SignedKeyRecord {
        record: encode(&record),
        signature: format!("signature {serial}").into_bytes(),
    };
    (record, signed)
}

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

pub fn key_records_answer_in_order_with_none_for_unknown_and_unpublished(b: &dyn Backend) {
    let (_, mut store) = store_with_users(b);
    let (alice, alice_signed) = record("alice", 1);
    store
        .publish_key("alice", &alice, &alice_signed, 10)
        .unwrap();
    let (carol, carol_signed) = record("carol", 3);
    store
        .publish_key("carol", &carol, &carol_signed, 10)
        .unwrap();
    let asked = names(&["carol", "nobody", "bob", "alice", "carol"]);
    let entries = store.key_records(&asked).unwrap();
    let users: Vec<&str> = entries.iter().map(|e| e.user.as_str()).collect();
    assert_eq!(users, ["carol", "nobody", "bob", "alice", "carol"]);
    assert_eq!(entries[0].record.as_ref(), Some(&carol_signed));
    assert_eq!(entries[1].record, None, "no such user");
    assert_eq!(entries[2].record, None, "bob published nothing");
    assert_eq!(entries[3].record.as_ref(), Some(&alice_signed));
    assert_eq!(entries[4].record.as_ref(), Some(&carol_signed));
    assert!(store.key_records(&[]).unwrap().is_empty());
}

pub fn a_key_record_is_replaced_only_by_a_higher_serial(b: &dyn Backend) {
    let (_, mut store) = store_with_users(b);
    let (first, first_signed) = record("bob", 2);
    store.publish_key("bob", &first, &first_signed, 10).unwrap();
    for serial in [0, 1, 2] {
        let (stale, stale_signed) = record("bob", serial);
        let err = store
            .publish_key("bob", &stale, &stale_signed, 11)
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::StaleKeyRecord { user, current: 2, offered }
                if user == "bob" && *offered == serial),
            "serial {serial}: {err:?}"
        );
    }
    let current = |store: &mut dyn forkmail_store::Store| {
        store.key_records(&names(&["bob"])).unwrap()[0]
            .record
            .clone()
    };
    assert_eq!(current(&mut *store), Some(first_signed), "nothing changed");
    let (next, next_signed) = record("bob", 5);
    store.publish_key("bob", &next, &next_signed, 12).unwrap();
    assert_eq!(current(&mut *store), Some(next_signed));
    let (huge, huge_signed) = record("bob", u64::MAX);
    assert!(matches!(
        store.publish_key("bob", &huge, &huge_signed, 13),
        Err(StoreError::StaleKeyRecord { .. })
    ));
}

pub fn a_key_record_of_an_unknown_user_is_refused(b: &dyn Backend) {
    let (_, mut store) = store_with_users(b);
    let (ghost, ghost_signed) = record("ghost", 1);
    let err = store
        .publish_key("ghost", &ghost, &ghost_signed, 10)
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::UnknownRecipient(n) if n == "ghost"),
        "{err:?}"
    );
    assert_eq!(
        store.key_records(&names(&["ghost"])).unwrap()[0].record,
        None
    );
}

pub fn racing_publishers_with_one_serial_store_one_record(b: &dyn Backend) {
    const ROUNDS: u64 = 30;
    let (at, _store) = store_with_users(b);
    let barrier = Barrier::new(2);
    let wins: Vec<Vec<bool>> = std::thread::scope(|s| {
        let racers: Vec<_> = (0..2)
            .map(|racer| {
                let (at, barrier) = (&at, &barrier);
                s.spawn(move || {
                    let mut store = forkmail_store::open(at).expect("open");
                    (1..=ROUNDS)
                        .map(|serial| {
                            let (mut rec, _) = record("alice", serial);
                            rec.age_recipient = format!("age1racer{racer}");
                            let signed = SignedKeyRecord {
                                record: encode(&rec),
                                signature: vec![racer],
                            };
                            barrier.wait();
                            match store.publish_key("alice", &rec, &signed, serial) {
                                Ok(()) => true,
                                Err(StoreError::StaleKeyRecord { .. }) => false,
                                Err(err) => panic!("serial {serial}: {err}"),
                            }
                        })
                        .collect()
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for (round, (a, b)) in wins[0].iter().zip(&wins[1]).enumerate() {
        assert!(a ^ b, "serial {}: {a} and {b}", round + 1);
    }
}
