use std::num::NonZeroU32;

use forkmail_keygen::password::{Kdf, PasswordHash};

use super::*;

fn store_with_users(names: &[&str]) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mail.db");
    let conn = db::create(&path).unwrap();
    for name in names {
        let record = UserRecord {
            name: name.to_string(),
            password: PasswordHash::new("pw", Kdf::Pbkdf2Sha512, NonZeroU32::new(1).unwrap()),
            public_key: vec![1, 2, 3],
        };
        db::insert_user(&conn, &record, 0).unwrap();
    }
    drop(conn);
    let store = Store::open(&path).unwrap();
    (dir, store)
}

fn draft(to: &[&str], title: &str) -> Draft {
    Draft {
        to: to.iter().map(|s| s.to_string()).collect(),
        title: title.into(),
        body: format!("body of {title}"),
    }
}

fn inbox(store: &Store, user: &str) -> Vec<MailSummary> {
    let mut all = Vec::new();
    store
        .inbox::<()>(user, 2, |page, _| {
            all.extend(page);
            Ok(())
        })
        .unwrap();
    all
}

#[test]
fn send_delivers_to_every_recipient() {
    let (_dir, mut store) = store_with_users(&["alice", "bob", "carol"]);
    let id = store
        .send("alice", &draft(&["bob", "carol"], "hi"), 5)
        .unwrap();
    for user in ["bob", "carol"] {
        let mail = store.read(user, id).unwrap();
        assert_eq!(mail.from, "alice");
        assert_eq!(mail.to, vec!["bob", "carol"]);
        assert_eq!(mail.body, "body of hi");
    }
    assert!(inbox(&store, "alice").is_empty());
}

#[test]
fn unknown_recipient_stores_nothing() {
    let (_dir, mut store) = store_with_users(&["alice", "bob"]);
    let err = store
        .send("alice", &draft(&["bob", "zed"], "x"), 5)
        .unwrap_err();
    assert!(matches!(err, StoreError::UnknownRecipient(ref n) if n == "zed"));
    assert!(inbox(&store, "bob").is_empty());
    let count: i64 = store
        .conn
        .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 0);
}

#[test]
fn delete_touches_only_one_mailbox_and_ids_stay_stable() {
    let (_dir, mut store) = store_with_users(&["alice", "bob", "carol"]);
    let a = store
        .send("alice", &draft(&["bob", "carol"], "a"), 1)
        .unwrap();
    let b = store.send("alice", &draft(&["bob"], "b"), 2).unwrap();
    let c = store.send("alice", &draft(&["bob"], "c"), 3).unwrap();
    store.delete("bob", a).unwrap();
    store.delete("bob", c).unwrap();
    let ids: Vec<u64> = inbox(&store, "bob").iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![b]);
    assert_eq!(store.read("carol", a).unwrap().title, "a");
    assert!(matches!(
        store.delete("bob", a),
        Err(StoreError::NotFound(_))
    ));
    // `c` had one recipient and is gone with its body; `a` still has carol.
    let count = |table: &str| -> i64 {
        store
            .conn
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!((count("messages"), count("bodies")), (2, 2));
    // A new message never reuses a deleted id, even the highest one.
    let d = store.send("alice", &draft(&["bob"], "d"), 4).unwrap();
    assert!(d > c);
}

#[test]
fn read_marks_read_and_respects_ownership() {
    let (_dir, mut store) = store_with_users(&["alice", "bob"]);
    let id = store.send("alice", &draft(&["bob"], "t"), 1).unwrap();
    assert!(!inbox(&store, "bob")[0].read);
    store.read("bob", id).unwrap();
    assert!(inbox(&store, "bob")[0].read);
    assert!(matches!(
        store.read("alice", id),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.read("bob", u64::MAX),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn inbox_pages_end_with_more_false() {
    let (_dir, mut store) = store_with_users(&["alice", "bob"]);
    for i in 0..5 {
        store
            .send("alice", &draft(&["bob"], &format!("m{i}")), i)
            .unwrap();
    }
    let mut flags = Vec::new();
    store
        .inbox::<()>("bob", 2, |page, more| {
            flags.push((page.len(), more));
            Ok(())
        })
        .unwrap();
    assert_eq!(flags, vec![(2, true), (2, true), (1, false)]);
}

#[test]
fn nonces_are_recorded_once_and_purged_after_expiry() {
    let (_dir, mut store) = store_with_users(&[]);
    assert!(store.record(b"n1", 0, 100).unwrap());
    assert!(!store.record(b"n1", 50, 100).unwrap());
    assert!(store.record(b"n2", 50, 300).unwrap());
    // At 101 the first has expired and is purged; the second is still remembered.
    assert!(store.record(b"n1", 101, 200).unwrap());
    assert!(!store.record(b"n2", 101, 300).unwrap());
}

#[test]
fn mail_is_still_committed_with_full_sync_after_recording_a_nonce() {
    let (_dir, mut store) = store_with_users(&[]);
    store.record(b"n", 0, 100).unwrap();
    let sync: i64 = store
        .conn
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sync, 2, "synchronous must be FULL (2) for mail");
}
