//! Upgrading a store made by release 0.1.0 (`fixtures/v0.1.0`, see fixtures/README.md): every
//! user, password hash, mail, read flag and id survives, and ids are never reused afterwards.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use forkmail_protocol::messages::{Draft, MailSummary};
use forkmail_store::{
    Migrated, SendLimits, Store, StoreError, StoreLocation, CURRENT_VERSION, MIGRATIONS,
};

fn fixture_copy(dir: &Path) -> StoreLocation {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/v0.1.0/server/mail.db");
    let path: PathBuf = dir.join("mail.db");
    std::fs::copy(&fixture, &path).expect("fixtures/v0.1.0/server/mail.db is in the checkout");
    StoreLocation::Sqlite(path)
}

fn inbox(store: &mut dyn Store, user: &str) -> Vec<MailSummary> {
    let mut all = Vec::new();
    store
        .inbox(user, 2, &mut |page, _| {
            all.extend(page);
            ControlFlow::Continue(())
        })
        .unwrap();
    all
}

fn summary(list: &[MailSummary]) -> Vec<(u64, &str, &str, bool)> {
    list.iter()
        .map(|m| (m.id, m.from.as_str(), m.title.as_str(), m.read))
        .collect()
}

#[test]
fn a_010_store_is_refused_until_migrated_then_opens() {
    let dir = tempfile::tempdir().unwrap();
    let location = fixture_copy(dir.path());
    match forkmail_store::open(&location) {
        Err(StoreError::NeedsMigration {
            found: 1, needed, ..
        }) => {
            assert_eq!(needed, CURRENT_VERSION)
        }
        other => panic!("expected NeedsMigration from 1, got {:?}", other.err()),
    }
    assert_eq!(
        forkmail_store::migrate(&location).unwrap(),
        Migrated {
            from: 1,
            to: CURRENT_VERSION
        }
    );
    // A second run has nothing left to do.
    assert_eq!(
        forkmail_store::migrate(&location).unwrap(),
        Migrated {
            from: CURRENT_VERSION,
            to: CURRENT_VERSION
        }
    );
    let mut store = forkmail_store::open(&location).unwrap();
    assert_eq!(store.schema_version().unwrap(), CURRENT_VERSION);
    store.check_integrity().unwrap();
}

#[test]
fn upgrading_010_keeps_every_user_mail_read_flag_and_id() {
    let dir = tempfile::tempdir().unwrap();
    let location = fixture_copy(dir.path());
    forkmail_store::migrate(&location).unwrap();
    let mut store = forkmail_store::open(&location).unwrap();
    let store = &mut *store;

    for name in ["alice", "bob", "carol"] {
        let user = store.find_user(name).unwrap().expect("user kept");
        assert_eq!(user.password.kdf, "pbkdf2-sha512");
        assert_eq!(user.password.iterations, 1000);
        assert_eq!(
            (user.password.salt.len(), user.password.hash.len()),
            (16, 64)
        );
        assert!(user.public_key.len() > 200, "DER RSA public key kept");
    }
    assert_eq!(
        summary(&inbox(store, "bob")),
        [
            (1, "alice", "Lunch", true),
            (2, "alice", "To both of you", false)
        ]
    );
    assert_eq!(
        summary(&inbox(store, "carol")),
        [
            (2, "alice", "To both of you", true),
            (5, "bob", "For Carol only", false)
        ]
    );
    assert_eq!(
        summary(&inbox(store, "alice")),
        [(3, "carol", "Re: plans", false)]
    );
    // The sent lists are backfilled from the messages still stored. Alice also sent 4, but
    // its only recipient (bob) deleted it under 0.1.0, which removed the message: nothing is
    // left to recover it from, so it is not listed.
    let sent = |store: &mut dyn Store, user: &str| {
        let mut all = Vec::new();
        store
            .sent(user, 2, &mut |page, _| {
                all.extend(page);
                ControlFlow::Continue(())
            })
            .unwrap();
        all.into_iter()
            .map(|m| (m.id, m.to.join(";"), m.title))
            .collect::<Vec<_>>()
    };
    let owned = |list: &[(u64, &str, &str)]| {
        list.iter()
            .map(|&(id, to, title)| (id, to.to_owned(), title.to_owned()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        sent(store, "alice"),
        owned(&[(1, "bob", "Lunch"), (2, "bob;carol", "To both of you")])
    );
    assert_eq!(sent(store, "carol"), owned(&[(3, "alice", "Re: plans")]));
    assert_eq!(sent(store, "bob"), owned(&[(5, "carol", "For Carol only")]));
    let mail = store.read("bob", 2).unwrap();
    assert_eq!(mail.to, ["bob", "carol"]);
    assert_eq!(mail.body, "Line one\nLine two with ünïcödé ✉\n");
    // Bob deleted message 4: gone, and its id is never handed out again.
    assert!(matches!(store.read("bob", 4), Err(StoreError::NotFound(4))));
    let draft = Draft {
        to: vec!["alice".into()],
        title: "after the upgrade".into(),
        body: "hi".into(),
    };
    assert_eq!(store.send("bob", &draft, 1, &SendLimits::NONE).unwrap(), 6);
    // Carol's counted password failure is still counted.
    let failures = store.login_failures("carol").unwrap().expect("kept");
    assert_eq!(failures.failures, 1);
    let counts = store.counts().unwrap();
    assert_eq!(
        (counts.users, counts.messages, counts.deliveries),
        (3, 5, 6),
        "messages 1, 2, 3, 5 and 6; deliveries bob 1, 2; carol 2, 5; alice 3, 6"
    );
    store.check_integrity().unwrap();
}

#[test]
fn two_processes_migrating_010_together_apply_each_migration_once() {
    let dir = tempfile::tempdir().unwrap();
    let location = fixture_copy(dir.path());
    let results: Vec<Migrated> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| forkmail_store::migrate(&location).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Exactly one migrator started from 1; every other found the work done or in progress and
    // continued from where it was.
    assert_eq!(
        results.iter().filter(|m| m.from == 1).count(),
        1,
        "{results:?}"
    );
    assert!(results.iter().all(|m| m.to == CURRENT_VERSION));
    let mut store = forkmail_store::open(&location).unwrap();
    assert_eq!(store.schema_version().unwrap(), CURRENT_VERSION);
    store.check_integrity().unwrap();
}

/// What a mailbox holds by the quota's measure, added up from the mail itself.
fn bytes_in_inbox(store: &mut dyn Store, user: &str) -> u64 {
    inbox(store, user)
        .iter()
        .map(|m| {
            let mail = store.read(user, m.id).unwrap();
            (mail.title.len() + mail.body.len()) as u64
        })
        .sum()
}

#[test]
fn upgrading_010_counts_every_mailbox_from_the_mail_already_stored() {
    let dir = tempfile::tempdir().unwrap();
    let location = fixture_copy(dir.path());
    forkmail_store::migrate(&location).unwrap();
    let mut store = forkmail_store::open(&location).unwrap();
    let store = &mut *store;
    for name in ["alice", "bob", "carol"] {
        let counted = store.mailbox_bytes(name).unwrap();
        assert!(counted > 0, "{name} has mail");
        assert_eq!(counted, bytes_in_inbox(store, name), "{name}");
    }
    // Bob's message 2 has non-ASCII text: bytes, not characters.
    let mail = store.read("bob", 2).unwrap();
    assert!(mail.body.len() > mail.body.chars().count());
    store.check_integrity().unwrap();
}

#[test]
fn upgrading_a_version_4_store_counts_every_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mail.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    for m in &MIGRATIONS[..4] {
        conn.execute_batch(m.sqlite).unwrap();
    }
    conn.execute_batch(
        "PRAGMA user_version = 4;
         INSERT INTO schema_migrations (version, name, applied_ms) VALUES (2, 'v2', 0), (3, 'v3', 0), (4, 'v4', 0);
         INSERT INTO users (name, kdf, iterations, salt, hash, public_key, created_ms) VALUES
             ('alice', 'pbkdf2-sha512', 1000, X'00', X'00', X'00', 0),
             ('bob', 'pbkdf2-sha512', 1000, X'00', X'00', X'00', 0),
             ('carol', 'pbkdf2-sha512', 1000, X'00', X'00', X'00', 0);
         INSERT INTO messages (id, sender, recipients, sent_ms, title) VALUES
             (1, 'alice', 'bob;carol', 1, 'to both'), (2, 'carol', 'bob', 2, 'ünï');
         INSERT INTO bodies (message_id, body) VALUES (1, 'twelve bytes'), (2, '✉');
         INSERT INTO deliveries (recipient, message_id) VALUES ('bob', 1), ('carol', 1), ('bob', 2);
         INSERT INTO sent (message_id, sender, recipients, sent_ms, title)
             SELECT id, sender, recipients, sent_ms, title FROM messages;",
    )
    .unwrap();
    drop(conn);
    let location = StoreLocation::Sqlite(path);
    assert_eq!(
        forkmail_store::migrate(&location).unwrap(),
        Migrated {
            from: 4,
            to: CURRENT_VERSION
        }
    );
    let mut store = forkmail_store::open(&location).unwrap();
    // "to both" + "twelve bytes" = 7 + 12; "ünï" + "✉" = 5 + 3.
    assert_eq!(store.mailbox_bytes("bob").unwrap(), 19 + 8);
    assert_eq!(store.mailbox_bytes("carol").unwrap(), 19);
    assert_eq!(store.mailbox_bytes("alice").unwrap(), 0);
    store.check_integrity().unwrap();
    store.delete("bob", 1).unwrap();
    assert_eq!(
        store.mailbox_bytes("bob").unwrap(),
        8,
        "a delete gives the space back"
    );
    store.check_integrity().unwrap();
}

#[test]
fn an_upgraded_010_store_has_an_empty_key_directory_that_takes_records() {
    use forkmail_protocol::e2e::{KeyOrigin, KeyRecord, SignedKeyRecord};

    let dir = tempfile::tempdir().unwrap();
    let location = fixture_copy(dir.path());
    forkmail_store::migrate(&location).unwrap();
    let mut store = forkmail_store::open(&location).unwrap();
    let names: Vec<String> = ["alice", "bob", "carol"].map(String::from).to_vec();
    let entries = store.key_records(&names).unwrap();
    assert!(
        entries.iter().all(|e| e.record.is_none()),
        "0.1.0 had no key records: {entries:?}"
    );
    let bob = store.find_user("bob").unwrap().unwrap();
    let record = KeyRecord {
        user: "bob".into(),
        serial: 1,
        created_ms: 1,
        origin: KeyOrigin::Administrator,
        signing_key: bob.public_key,
        age_recipient: "age1bob".into(),
    };
    let signed = SignedKeyRecord {
        record: forkmail_protocol::encode(&record),
        signature: vec![1; 256],
    };
    store.publish_key("bob", &record, &signed, 2).unwrap();
    let entries = store.key_records(&names).unwrap();
    assert_eq!(entries[1].record.as_ref(), Some(&signed));
    assert!(entries[0].record.is_none() && entries[2].record.is_none());
    store.check_integrity().unwrap();
}

#[test]
fn a_010_store_takes_invitations_and_enrollments_once_upgraded() {
    use forkmail_protocol::e2e::{KeyOrigin, KeyRecord, SignedKeyRecord};

    let dir = tempfile::tempdir().unwrap();
    let location = fixture_copy(dir.path());
    forkmail_store::migrate(&location).unwrap();
    let mut store = forkmail_store::open(&location).unwrap();
    let now = 1_800_000_000_000;
    assert!(store.invites(now).unwrap().is_empty(), "no invitations yet");
    // Its users cannot be invited again; a new name can, and enrolls.
    assert!(matches!(
        store.create_invite("alice", &[1; 32], now + 1000, now),
        Err(StoreError::UserExists(_))
    ));
    store
        .create_invite("dave", &[2; 32], now + 1000, now)
        .unwrap();
    let mut dave = store.find_user("alice").unwrap().unwrap();
    dave.name = "dave".into();
    let record = KeyRecord {
        user: "dave".into(),
        serial: 1,
        created_ms: now,
        origin: KeyOrigin::User,
        signing_key: dave.public_key.clone(),
        age_recipient: "age1example".into(),
    };
    let signed = SignedKeyRecord {
        record: forkmail_protocol::encode(&record),
        signature: vec![1; 256],
    };
    store
        .enroll(&dave, &[2; 32], &record, &signed, now + 1)
        .unwrap();
    assert_eq!(store.find_user("dave").unwrap(), Some(dave));
    assert_eq!(store.invites(now + 2).unwrap()[0].used_ms, Some(now + 1));
    store.check_integrity().unwrap();
}

#[test]
fn an_upgraded_010_store_takes_tickets_and_a_rehashed_password() {
    let dir = tempfile::tempdir().unwrap();
    let location = fixture_copy(dir.path());
    forkmail_store::migrate(&location).unwrap();
    let mut store = forkmail_store::open(&location).unwrap();
    let alice = store.find_user("alice").unwrap().unwrap();
    assert_eq!(
        (alice.password.kdf.as_str(), alice.password.iterations),
        ("pbkdf2-sha512", 1000),
        "0.1.0 stored PBKDF2"
    );
    store.issue_ticket("alice", &[9; 32], 1_000, 2_000).unwrap();
    assert!(store.ticket_valid("alice", &[9; 32], 1_500).unwrap());
    let rehashed = forkmail_store::StoredPassword {
        kdf: "argon2id-m19456-p1".into(),
        iterations: 2,
        salt: vec![1; 16],
        hash: vec![2; 32],
    };
    store
        .update_password("alice", &rehashed, forkmail_store::PasswordUpdate::Rehash)
        .unwrap();
    let alice_now = store.find_user("alice").unwrap().unwrap();
    assert_eq!(alice_now.password, rehashed);
    assert_eq!(alice_now.public_key, alice.public_key);
    assert!(store.ticket_valid("alice", &[9; 32], 1_500).unwrap());
    store.check_integrity().unwrap();
}
