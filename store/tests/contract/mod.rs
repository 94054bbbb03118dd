//! The store's contract, written once and run against every backend (`tests/sqlite.rs`,
//! `tests/postgres.rs`): each behaviour is a function of a [`Backend`], which makes fresh
//! locations and tampers with them behind the store's back (a newer version, a foreign table,
//! a deleted body). Only these tests write SQL outside `store/src`.
//!
//! Add a behaviour by writing its function and naming it in [`for_each_behaviour!`]; both
//! backends then run it.

use std::cell::RefCell;
use std::ops::ControlFlow;
use std::sync::Barrier;

use forkmail_protocol::messages::{Draft, MailSummary, SentSummary};
use forkmail_store::{
    Attempt, Counts, ImportedMail, LoginFailures, PasswordUpdate, SendLimits, Store, StoreError,
    StoreLocation, StoredPassword, UserKey, UserRecord, CURRENT_VERSION,
};

/// Invokes `$m! { name, ... }` with every behaviour below: the one list both backends use.
macro_rules! for_each_behaviour {
    ($m:ident) => {
        $m! {
            send_is_all_or_nothing,
            send_gives_each_recipient_one_delivery,
            delete_is_per_recipient_and_the_last_takes_the_message,
            recipients_deleting_at_once_leave_no_orphan,
            ids_increase_and_are_never_reused,
            read_marks_read_only_for_that_reader,
            other_users_messages_and_impossible_ids_are_not_found,
            inbox_pages_by_page_len_and_stops_on_break,
            sent_lists_each_senders_mail_and_outlives_every_delete,
            sent_pages_by_page_len_and_stops_on_break,
            a_repeated_send_id_returns_the_first_id_and_stores_nothing,
            racing_sends_with_one_send_id_store_one_message,
            send_ids_older_than_the_retention_are_forgotten,
            a_replayed_nonce_is_refused,
            expired_nonces_are_purged,
            racing_sessions_record_a_nonce_once,
            login_attempts_count_lock_and_clear,
            racing_login_attempts_count_no_more_than_the_lock_allows,
            a_taken_user_name_is_refused,
            find_user_round_trips,
            user_keys_lists_every_user_in_name_order,
            import_is_all_or_nothing,
            check_integrity_passes_when_healthy_and_names_a_broken_invariant,
            create_gives_the_current_version,
            create_refuses_an_existing_store,
            migrate_is_idempotent,
            a_v1_store_needs_migrating_and_migrates,
            two_migrators_apply_each_migration_once,
            a_newer_store_is_refused_with_both_versions,
            an_empty_database_is_refused,
            a_foreign_database_is_refused,
            a_send_over_a_recipients_quota_is_refused_and_stores_nothing,
            a_delete_gives_the_quota_back,
            a_sender_over_the_rate_is_refused_with_when_to_retry,
            racing_sends_at_the_quota_edge_store_no_more_than_it_allows,
            racing_sends_at_the_rate_edge_store_no_more_than_it_allows,
            delete_many_is_all_or_nothing_and_names_every_missing_id,
            mark_unread_is_per_reader_and_all_or_nothing,
            update_password_replaces_the_hash_and_refuses_an_unknown_user,
            a_ticket_is_valid_for_its_user_until_it_expires,
            revoking_tickets_ends_every_ticket_of_that_user_only,
            a_password_change_revokes_tickets_and_a_rehash_keeps_them,
            issuing_a_ticket_purges_expired_ones,
            key_records_answer_in_order_with_none_for_unknown_and_unpublished,
            a_key_record_is_replaced_only_by_a_higher_serial,
            a_key_record_of_an_unknown_user_is_refused,
            racing_publishers_with_one_serial_store_one_record,
            invites_are_listed_until_a_while_after_use_or_expiry,
            an_invite_for_an_existing_user_is_refused,
            enroll_stores_the_user_and_record_and_burns_the_invite,
            every_failed_enrollment_stores_nothing_and_says_why,
            racing_enrollments_with_one_token_enroll_once,
        }
    };
}

mod keys;
pub use keys::*;
mod invites;
pub use invites::*;

/// What the suite needs of a backend besides the store itself.
pub trait Backend: Sync {
    /// A location with no store yet: where `create` succeeds.
    fn fresh(&self) -> StoreLocation;
    /// Runs SQL (one or more statements) on the location directly, bypassing the store.
    fn exec(&self, at: &StoreLocation, sql: &str);
    /// The first column of every row of `sql`, as integers.
    fn query_ints(&self, at: &StoreLocation, sql: &str) -> Vec<i64>;
    /// Makes the location an empty database: a 0-byte file, a database with no tables.
    fn make_empty(&self, at: &StoreLocation);
    /// Makes the location a store at schema version 1, as release 0.1.0 left it.
    fn make_v1(&self, at: &StoreLocation);
    /// Marks a current store as migrated by a newer build to `version`.
    fn mark_version(&self, at: &StoreLocation, version: u32);
}

pub const USERS: [&str; 3] = ["alice", "bob", "carol"];

pub fn user(name: &str) -> UserRecord {
    UserRecord {
        name: name.to_owned(),
        password: StoredPassword {
            kdf: "pbkdf2-sha512".into(),
            iterations: 600_000,
            salt: format!("salt of {name}").into_bytes(),
            hash: vec![0xA5; 64],
        },
        public_key: format!("key of {name}").into_bytes(),
    }
}

pub fn draft(to: &[&str], title: &str) -> Draft {
    Draft {
        to: to.iter().map(|s| s.to_string()).collect(),
        title: title.to_owned(),
        body: format!("body of {title}"),
    }
}

/// A new store with [`USERS`] in it.
pub fn store_with_users(b: &dyn Backend) -> (StoreLocation, Box<dyn Store>) {
    let at = b.fresh();
    let mut store = forkmail_store::create(&at).expect("create");
    for name in USERS {
        store.add_user(&user(name), 1).expect("add_user");
    }
    (at, store)
}

/// Every page the inbox hands out, as (ids, more).
pub fn pages(store: &mut dyn Store, who: &str, page_len: usize) -> Vec<(Vec<u64>, bool)> {
    let mut seen = Vec::new();
    store
        .inbox(who, page_len, &mut |entries, more| {
            seen.push((entries.iter().map(|e| e.id).collect(), more));
            ControlFlow::Continue(())
        })
        .expect("inbox");
    seen
}

pub fn inbox(store: &mut dyn Store, who: &str) -> Vec<MailSummary> {
    let mut all = Vec::new();
    store
        .inbox(who, 1000, &mut |entries, _| {
            all.extend(entries);
            ControlFlow::Continue(())
        })
        .expect("inbox");
    all
}

pub fn sent(store: &mut dyn Store, who: &str) -> Vec<SentSummary> {
    let mut all = Vec::new();
    store
        .sent(who, 1000, &mut |entries, _| {
            all.extend(entries);
            ControlFlow::Continue(())
        })
        .expect("sent");
    all
}

fn mail_counts(c: Counts) -> (u64, u64, u64) {
    (c.messages, c.bodies, c.deliveries)
}

pub fn send_is_all_or_nothing(b: &dyn Backend) {
    let (_, mut store) = store_with_users(b);
    let err = store
        .send(
            "alice",
            &draft(&["bob", "nobody", "carol"], "t"),
            10,
            &SendLimits::NONE,
        )
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::UnknownRecipient(n) if n == "nobody"),
        "{err:?}"
    );
    assert_eq!(mail_counts(store.counts().unwrap()), (0, 0, 0));
    assert!(inbox(&mut *store, "bob").is_empty());
}

pub fn send_gives_each_recipient_one_delivery(b: &dyn Backend) {
    let (_, mut store) = store_with_users(b);
    let id = store
        .send(
            "alice",
            &draft(&["bob", "carol"], "hello"),
            10,
            &SendLimits::NONE,
        )
        .unwrap();
    for who in ["bob", "carol"] {
        let entries = inbox(&mut *store, who);
        assert_eq!(entries.len(), 1, "{who}");
        assert_eq!(
            (entries[0].id, entries[0].from.as_str(), entries[0].date_ms),
            (id, "alice", 10)
        );
        assert_eq!(
            (entries[0].title.as_str(), entries[0].read),
            ("hello", false)
        );
    }
    assert!(inbox(&mut *store, "alice").is_empty());
    assert_eq!(mail_counts(store.counts().unwrap()), (1, 1, 2));
    let mail = store.read("carol", id).unwrap();
    assert_eq!(mail.to, ["bob", "carol"]);
    assert_eq!(mail.body, "body of hello");
}

pub fn delete_is_per_recipient_and_the_last_takes_the_message(b: &dyn Backend) {
    let (_, mut store) = store_with_users(b);
    let id = store
        .send(
            "alice",
            &draft(&["bob", "carol"], "both"),
            10,
            &SendLimits::NONE,
        )
        .unwrap();
    store.delete("bob", id).unwrap();
    assert!(matches!(store.read("bob", id), Err(StoreError::NotFound(n)) if n == id));
    assert_eq!(store.read("carol", id).unwrap().title, "both");
    assert_eq!(mail_counts(store.counts().unwrap()), (1, 1, 1));
    store.delete("carol", id).unwrap();
    assert_eq!(mail_counts(store.counts().unwrap()), (0, 0, 0));
    assert!(matches!(
        store.delete("carol", id),
        Err(StoreError::NotFound(_))
    ));
}

/// Two recipients deleting their copies of the same messages at once: whichever is last
/// removes the message, so nothing is left behind.
pub fn recipients_deleting_at_once_leave_no_orphan(b: &dyn Backend) {
    const MESSAGES: usize = 50;
    let (at, mut store) = store_with_users(b);
    let ids: Vec<u64> = (0..MESSAGES)
        .map(|i| {
            store
                .send(
                    "alice",
                    &draft(&["bob", "carol"], &format!("d{i}")),
                    10,
                    &SendLimits::NONE,
                )
                .unwrap()
        })
        .collect();
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        for who in ["bob", "carol"] {
            let (ids, barrier, at) = (&ids, &barrier, &at);
            s.spawn(move || {
                let mut store = forkmail_store::open(at).expect("open");
                for &id in ids {
                    barrier.wait();
                    store.delete(who, id).unwrap();
                }
            });
        }
    });
    assert_eq!(mail_counts(store.counts().unwrap()), (0, 0, 0));
    store.check_integrity().unwrap();
}

pub fn ids_increase_and_are_never_reused(b: &dyn Backend) {
    let (_, mut store) = store_with_users(b);
    let ids: Vec<u64> = (0..3)
        .map(|i| {
            store
                .send(
                    "alice",
                    &draft(&["bob"], &format!("m{i}")),
                    10,
                    &SendLimits::NONE,
                )
                .unwrap()
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    store.delete("bob", ids[2]).unwrap();
    let next = store
        .send("alice", &draft(&["bob"], "m3"), 10, &SendLimits::NONE)
        .unwrap();
    assert!(next > ids[2], "id {next} after deleting {}", ids[2]);
    assert_eq!(store.read("bob", ids[1]).unwrap().title, "m1");
}

pub fn read_marks_read_only_for_that_reader(b: &dyn Backend) {
    let (_, mut store) = store_with_users(b);
    let id = store
        .send(
            "alice",
            &draft(&["bob", "carol"], "r"),
            10,
            &SendLimits::NONE,
        )
        .unwrap();
    store.read("bob", id).unwrap();
    assert!(inbox(&mut *store, "bob")[0].read);
    assert!(!inbox(&mut *store, "carol")[0].read);
    store.read("bob", id).unwrap();
    assert!(
        inbox(&mut *store, "bob")[0].read,
        "reading again keeps it read"
    );
}

/// Three of bob's mails, one of carol's only, and an impossible id: a batch naming carol's and
/// the impossible one deletes nothing and names both; the batch of bob's own (one repeated)
/// deletes them all, gives the quota back, and takes a message whose last delivery it was.
pub fn delete_many_is_all_or_nothing_and_names_every_missing_id(b: &dyn Backend) {
    let (_, mut store) = store_with_users(b);
    let ids: Vec<u64> = (0..3)
        .map(|i| {
            store
                .send(
                    "alice",
                    &draft(&["bob", "carol"], &format!("m{i}")),
                    10,
                    &SendLimits::NONE,
                )
                .unwrap()
        })
        .collect();
    let carols = store
        .send("alice", &draft(&["carol"], "c"), 10, &SendLimits::NONE)
        .unwrap();
    let huge = u64::MAX;
    let before = store.mailbox_bytes("bob").unwrap();
    let err = store
        .delete_many("bob", &[ids[0], huge, ids[1], carols])
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFoundMany(missing) if *missing == [huge, carols]),
        "{err:?}"
    );
    assert_eq!(inbox(&mut *store, "bob").len(), 3, "nothing was deleted");
    assert_eq!(store.mailbox_bytes("bob").unwrap(), before);
    store
        .delete_many("bob", &[ids[2], ids[0], ids[1], ids[0]])
        .unwrap();
    assert!(inbox(&mut *store, "bob").is_empty());
    assert_eq!(store.mailbox_bytes("bob").unwrap(), 0);
    assert_eq!(
        inbox(&mut *store, "carol").len(),
        4,
        "carol keeps her copies"
    );
    store.delete_many("carol", &ids).unwrap();
    assert_eq!(mail_counts(store.counts().unwrap()), (1, 1, 1));
    assert!(matches!(
        store.delete_many("bob", &[ids[0]]),
        Err(StoreError::NotFoundMany(missing)) if missing == [ids[0]]
    ));
}

/// Marking unread clears only that reader's flag, is all or nothing, and is no error on a mail
/// that is unread already.
pub fn mark_unread_is_per_reader_and_all_or_nothing(b: &dyn Backend) {
    let (_, mut store) = store_with_users(b);
    let first = store
        .send(
            "alice",
            &draft(&["bob", "carol"], "u1"),
            10,
            &SendLimits::NONE,
        )
        .unwrap();
    let second = store
        .send("alice", &draft(&["bob"], "u2"), 10, &SendLimits::NONE)
        .unwrap();
    for (who, id) in [("bob", first), ("bob", second), ("carol", first)] {
        store.read(who, id).unwrap();
    }
    let read_flags = |store: &mut dyn Store, who: &str| -> Vec<bool> {
        inbox(store, who).iter().map(|m| m.read).collect()
    };
    let err = store
        .mark_unread("bob", &[first, second + 100])
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFoundMany(missing) if *missing == [second + 100]),
        "{err:?}"
    );
    assert_eq!(
        read_flags(&mut *store, "bob"),
        [true, true],
        "nothing changed"
    );
    store.mark_unread("bob", &[first]).unwrap();
    assert_eq!(read_flags(&mut *store, "bob"), [false, true]);
    assert_eq!(
        read_flags(&mut *store, "carol"),
        [true],
        "carol's flag stays"
    );
    store.mark_unread("bob", &[first, second]).unwrap();
    assert_eq!(read_flags(&mut *store, "bob"), [false, false]);
    assert!(matches!(
        store.mark_unread("carol", &[second]),
        Err(StoreError::NotFoundMany(missing)) if missing == [second]
    ));
}

pub fn other_users_messages_and_impossible_ids_are_not_found(b: &dyn Backend) {
    let (_, mut store) = store_with_users(b);
    let id = store
        .send("alice", &draft(&["bob"], "private"), 10, &SendLimits::NONE)
        .unwrap();
    for who in ["carol", "alice"] {
        assert!(matches!(store.read(who, id), Err(StoreError::NotFound(n)) if n == id));
        assert!(matches!(store.delete(who, id), Err(StoreError::NotFound(n)) if n == id));
    }
    for huge in [i64::MAX as u64 + 1, u64::MAX] {
        assert!(matches!(store.read("bob", huge), Err(StoreError::NotFound(n)) if n == huge));
        assert!(matches!(store.delete("bob", huge), Err(StoreError::NotFound(n)) if n == huge));
    }
    assert!(matches!(
        store.read("bob", id + 1),
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.read("bob", id).unwrap().title, "private");
}

pub fn inbox_pages_by_page_len_and_stops_on_break(b: &dyn Backend) {
    let (_, mut store) = store_with_users(b);
    let ids: Vec<u64> = (0..5)
        .map(|i| {
            store
                .send(
                    "alice",
                    &draft(&["bob"], &format!("p{i}")),
                    10,
                    &SendLimits::NONE,
                )
                .unwrap()
        })
        .collect();
    assert_eq!(
        pages(&mut *store, "bob", 2),
        [
            (ids[0..2].to_vec(), true),
            (ids[2..4].to_vec(), true),
            (ids[4..5].to_vec(), false)
        ]
    );
    assert_eq!(
        pages(&mut *store, "bob", 5),
        [(ids.clone(), true), (vec![], false)],
        "a full last page is followed by an empty final one"
    );
    assert_eq!(pages(&mut *store, "bob", 6), [(ids.clone(), false)]);
    assert_eq!(
        pages(&mut *store, "carol", 2),
        [(vec![], false)],
        "an empty inbox still gets its final call"
    );
    let mut calls = 0;
    store
        .inbox("bob", 2, &mut |_, _| {
            calls += 1;
            ControlFlow::Break(())
        })
        .unwrap();
    assert_eq!(calls, 1, "Break stops the listing");
    // The store is usable after a listing stopped early.
    assert_eq!(inbox(&mut *store, "bob").len(), 5);
}

pub fn a_replayed_nonce_is_refused(b: &dyn Backend) {
    let (_, mut store) = store_with_users(b);
    assert!(store.record_nonce(b"nonce-1", 100, 10_000).unwrap());
    assert!(!store.record_nonce(b"nonce-1", 200, 10_000).unwrap());
    assert!(store.record_nonce(b"nonce-2", 200, 10_000).unwrap());
    assert_eq!(store.counts().unwrap().seen_nonces, 2);
}

pub fn expired_nonces_are_purged(b: &dyn Backend) {
    let (_, mut store) = store_with_users(b);
    assert!(store.record_nonce(b"old", 0, 1_000).unwrap());
    assert!(store.record_nonce(b"kept", 0, 5_000).unwrap());
    assert!(store.record_nonce(b"new", 2_000, 9_000).unwrap());
    assert_eq!(store.counts().unwrap().seen_nonces, 2, "old is purged");
    assert!(
        store.record_nonce(b"old", 2_000, 9_000).unwrap(),
        "an expired nonce is forgotten"
    );
    assert!(!store.record_nonce(b"kept", 2_000, 9_000).unwrap());
}

/// Two connections, two threads, one nonce per round: exactly one of them records it.
pub fn racing_sessions_record_a_nonce_once(b: &dyn Backend) {
    const ROUNDS: usize = 100;
    let (at, _store) = store_with_users(b);
    let barrier = Barrier::new(2);
    let wins: Vec<Vec<bool>> = std::thread::scope(|s| {
        let racers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut store = forkmail_store::open(&at).expect("open");
                    (0..ROUNDS)
                        .map(|round| {
                            barrier.wait();
                            let nonce = format!("nonce {round}");
                            store.record_nonce(nonce.as_bytes(), 1, 1_000_000).unwrap()
                        })
                        .collect()
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for (round, (a, b)) in wins[0].iter().zip(&wins[1]).enumerate() {
        assert!(a ^ b, "round {round}: {a} and {b}");
    }
    assert_eq!(wins[0].len(), ROUNDS);
}

pub fn login_attempts_count_lock_and_clear(b: &dyn Backend) {
    let (_, mut store) = store_with_users(b);
    assert_eq!(store.login_failures("bob").unwrap(), None);
    let asked = RefCell::new(Vec::new());
    // No lock for the first attempt, then n seconds for the n-th.
    let lock_for = |n: u32| {
        asked.borrow_mut().push(n);
        if n < 2 {
            0
        } else {
            u64::from(n) * 1_000
        }
    };
    let begin = |store: &mut Box<dyn Store>, now_ms| {
        store.begin_login_attempt("bob", now_ms, &lock_for).unwrap()
    };
    assert_eq!(begin(&mut store, 50_000), Attempt::Counted { failures: 1 });
    assert_eq!(begin(&mut store, 50_000), Attempt::Counted { failures: 2 });
    assert_eq!(*asked.borrow(), [1, 2], "lock_for gets the new count");
    let counted = Some(LoginFailures {
        failures: 2,
        locked_until_ms: 52_000,
    });
    assert_eq!(store.login_failures("bob").unwrap(), counted);
    // Locked: refused, and nothing counted or asked.
    for now_ms in [50_000, 51_999] {
        assert_eq!(
            begin(&mut store, now_ms),
            Attempt::Locked { until_ms: 52_000 }
        );
    }
    assert_eq!(store.login_failures("bob").unwrap(), counted);
    assert_eq!(*asked.borrow(), [1, 2], "a locked attempt asks for no lock");
    // The lock ends at its instant.
    assert_eq!(begin(&mut store, 52_000), Attempt::Counted { failures: 3 });
    assert_eq!(
        store
            .login_failures("bob")
            .unwrap()
            .map(|f| f.locked_until_ms),
        Some(55_000)
    );
    assert_eq!(store.login_failures("carol").unwrap(), None, "per user");
    assert_eq!(
        store.begin_login_attempt("carol", 50_000, &|_| 0).unwrap(),
        Attempt::Counted { failures: 1 },
        "bob's lock is not carol's"
    );
    store.clear_login_failures("bob").unwrap();
    assert_eq!(store.login_failures("bob").unwrap(), None);
    assert_eq!(
        begin(&mut store, 50_000),
        Attempt::Counted { failures: 1 },
        "counting starts again after a clear, even inside the old lock"
    );
}

/// Connections beginning attempts for one user at once lose no count and count no more than
/// the lock allows: with a lock earned at the `LIMIT`-th failure, exactly `LIMIT` of them are
/// counted (each may test a password), and every other one is refused as locked.
pub fn racing_login_attempts_count_no_more_than_the_lock_allows(b: &dyn Backend) {
    const RACERS: usize = 4;
    const EACH: usize = 25;
    const LIMIT: u32 = 60;
    let (at, mut store) = store_with_users(b);
    let barrier = Barrier::new(RACERS);
    let lock_for = |n: u32| if n >= LIMIT { 600_000 } else { 0 };
    let counted: Vec<Vec<u32>> = std::thread::scope(|s| {
        let racers: Vec<_> = (0..RACERS)
            .map(|_| {
                s.spawn(|| {
                    let mut store = forkmail_store::open(&at).expect("open");
                    barrier.wait();
                    (0..EACH)
                        .filter_map(|_| match store.begin_login_attempt("bob", 1, &lock_for) {
                            Ok(Attempt::Counted { failures }) => Some(failures),
                            Ok(Attempt::Locked { until_ms }) => {
                                assert_eq!(until_ms, 600_001);
                                None
                            }
                            Err(err) => panic!("{err}"),
                        })
                        .collect()
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let mut counted: Vec<u32> = counted.concat();
    counted.sort_unstable();
    assert_eq!(counted, (1..=LIMIT).collect::<Vec<_>>(), "each count once");
    assert_eq!(
        store.login_failures("bob").unwrap(),
        Some(LoginFailures {
            failures: LIMIT,
            locked_until_ms: 600_001
        })
    );
}

pub fn a_taken_user_name_is_refused(b: &dyn Backend) {
    let (_, mut store) = store_with_users(b);
    let mut impostor = user("alice");
    impostor.public_key = b"another key".to_vec();
    let err = store.add_user(&impostor, 2).unwrap_err();
    assert!(
        matches!(&err, StoreError::UserExists(n) if n == "alice"),
        "{err:?}"
    );
    assert_eq!(store.find_user("alice").unwrap(), Some(user("alice")));
    assert_eq!(store.counts().unwrap().users, 3);
}

pub fn find_user_round_trips(b: &dyn Backend) {
    let (_, mut store) = store_with_users(b);
    let mut dave = user("dave");
    dave.password.iterations = u32::MAX;
    dave.password.salt = (0..=255).collect();
    store.add_user(&dave, 5).unwrap();
    assert_eq!(store.find_user("dave").unwrap(), Some(dave));
    assert_eq!(store.find_user("bob").unwrap(), Some(user("bob")));
    assert_eq!(store.find_user("nobody").unwrap(), None);
}

pub fn user_keys_lists_every_user_in_name_order(b: &dyn Backend) {
    let (_, mut store) = store_with_users(b);
    let mut aaron = user("aaron");
    aaron.public_key = (0..=255).collect();
    store.add_user(&aaron, 5).unwrap();
    let keys = store.user_keys().unwrap();
    let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "name order");
    assert_eq!(names.len(), 4);
    assert!(keys.contains(&UserKey {
        name: "aaron".into(),
        public_key: aaron.public_key.clone()
    }));
    let alice = user("alice");
    assert!(keys.contains(&UserKey {
        name: alice.name,
        public_key: alice.public_key
    }));
}

pub fn import_is_all_or_nothing(b: &dyn Backend) {
    let (_, mut store) = store_with_users(b);
    let sent = store
        .send("alice", &draft(&["bob"], "before"), 10, &SendLimits::NONE)
        .unwrap();
    let mail = |to: &[&str], i: usize| ImportedMail {
        from: "carol".into(),
        sent_ms: 100 + i as u64,
        draft: draft(to, &format!("imported {i}")),
    };
    let mut bad = (0..3).map(|i| {
        if i == 2 {
            mail(&["bob", "nobody"], i)
        } else {
            mail(&["bob"], i)
        }
    });
    let err = store.import(&mut bad).unwrap_err();
    assert!(
        matches!(&err, StoreError::UnknownRecipient(n) if n == "nobody"),
        "{err:?}"
    );
    assert_eq!(
        mail_counts(store.counts().unwrap()),
        (1, 1, 1),
        "nothing imported"
    );
    let mut good = (0..3).map(|i| mail(&["bob", "alice"], i));
    assert_eq!(store.import(&mut good).unwrap(), 3);
    assert_eq!(mail_counts(store.counts().unwrap()), (4, 4, 7));
    let listed = inbox(&mut *store, "bob");
    let ids: Vec<u64> = listed.iter().map(|e| e.id).collect();
    assert_eq!(ids[0], sent);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let titles: Vec<&str> = listed.iter().map(|e| e.title.as_str()).collect();
    assert_eq!(
        titles,
        ["before", "imported 0", "imported 1", "imported 2"],
        "ids follow the import's order"
    );
    let read = store.read("alice", ids[2]).unwrap();
    assert_eq!((read.from.as_str(), read.date_ms), ("carol", 101));
    assert_eq!(read.to, ["bob", "alice"]);
    let next = store
        .send("alice", &draft(&["bob"], "after"), 10, &SendLimits::NONE)
        .unwrap();
    assert!(next > ids[3], "send continues after the imported ids");
}

pub fn check_integrity_passes_when_healthy_and_names_a_broken_invariant(b: &dyn Backend) {
    let (at, mut store) = store_with_users(b);
    let a = store
        .send(
            "alice",
            &draft(&["bob", "carol"], "a"),
            10,
            &SendLimits::NONE,
        )
        .unwrap();
    store
        .send("alice", &draft(&["bob"], "b"), 10, &SendLimits::NONE)
        .unwrap();
    store.delete("bob", a).unwrap();
    store.check_integrity().unwrap();
    b.exec(&at, "DELETE FROM bodies");
    let err = store.check_integrity().unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt(m) if m.contains("2 messages without a body")),
        "{err}"
    );
}

pub fn create_gives_the_current_version(b: &dyn Backend) {
    let (at, mut store) = store_with_users(b);
    assert_eq!(store.schema_version().unwrap(), CURRENT_VERSION);
    let recorded = b.query_ints(
        &at,
        "SELECT version FROM schema_migrations ORDER BY version",
    );
    let every: Vec<i64> = (1..=i64::from(CURRENT_VERSION)).collect();
    assert_eq!(recorded, every);
    drop(store);
    assert_eq!(
        forkmail_store::open(&at).unwrap().schema_version().unwrap(),
        CURRENT_VERSION
    );
}

pub fn create_refuses_an_existing_store(b: &dyn Backend) {
    let (at, mut store) = store_with_users(b);
    store
        .send("alice", &draft(&["bob"], "kept"), 10, &SendLimits::NONE)
        .unwrap();
    let err = forkmail_store::create(&at).err().expect("create refuses");
    assert!(matches!(err, StoreError::Exists(_)), "{err:?}");
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(store.counts().unwrap().messages, 1);
}

pub fn migrate_is_idempotent(b: &dyn Backend) {
    let (at, _store) = store_with_users(b);
    for _ in 0..2 {
        let m = forkmail_store::migrate(&at).unwrap();
        assert_eq!((m.from, m.to), (CURRENT_VERSION, CURRENT_VERSION));
    }
    let recorded = b.query_ints(&at, "SELECT count(*) FROM schema_migrations");
    assert_eq!(recorded, [i64::from(CURRENT_VERSION)]);
}

pub fn a_v1_store_needs_migrating_and_migrates(b: &dyn Backend) {
    let at = b.fresh();
    b.make_v1(&at);
    let err = forkmail_store::open(&at).err().expect("open refuses v1");
    assert!(
        matches!(err, StoreError::NeedsMigration { found: 1, needed, .. } if needed == CURRENT_VERSION),
        "{err:?}"
    );
    let m = forkmail_store::migrate(&at).unwrap();
    assert_eq!((m.from, m.to), (1, CURRENT_VERSION));
    let mut store = forkmail_store::open(&at).unwrap();
    assert_eq!(store.schema_version().unwrap(), CURRENT_VERSION);
    store.add_user(&user("bob"), 1).unwrap();
    store
        .send("bob", &draft(&["bob"], "works"), 1, &SendLimits::NONE)
        .unwrap();
}

/// Two servers starting together on an old store: both succeed, each migration once.
pub fn two_migrators_apply_each_migration_once(b: &dyn Backend) {
    let at = b.fresh();
    b.make_v1(&at);
    let barrier = Barrier::new(2);
    let results: Vec<_> = std::thread::scope(|s| {
        let migrators: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    forkmail_store::migrate(&at)
                })
            })
            .collect();
        migrators.into_iter().map(|m| m.join().unwrap()).collect()
    });
    let mut froms = Vec::new();
    for result in results {
        let m = result.expect("both migrators succeed");
        assert_eq!(m.to, CURRENT_VERSION);
        froms.push(m.from);
    }
    froms.sort();
    // One started from 1; the other waited for the lock and found the work done, or (with
    // more than one pending migration) continued from where the first had got to.
    assert!(
        froms[0] == 1 && froms[1] > 1,
        "one migrated from 1, the other later: {froms:?}"
    );
    let recorded = b.query_ints(
        &at,
        "SELECT version FROM schema_migrations ORDER BY version",
    );
    let every: Vec<i64> = (1..=i64::from(CURRENT_VERSION)).collect();
    assert_eq!(recorded, every, "exactly one row per version");
}

pub fn a_newer_store_is_refused_with_both_versions(b: &dyn Backend) {
    let (at, store) = store_with_users(b);
    drop(store);
    let newer = CURRENT_VERSION + 1;
    b.mark_version(&at, newer);
    for err in [
        forkmail_store::open(&at).err().expect("open refuses"),
        forkmail_store::migrate(&at).expect_err("migrate refuses"),
    ] {
        assert!(
            matches!(err, StoreError::TooNew { found, supported, .. }
                if found == newer && supported == CURRENT_VERSION),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains(&format!("schema version {newer}"))
                && text.contains(&format!("supports ({CURRENT_VERSION})")),
            "{text}"
        );
    }
}

pub fn an_empty_database_is_refused(b: &dyn Backend) {
    let at = b.fresh();
    b.make_empty(&at);
    for err in [
        forkmail_store::open(&at).err().expect("open refuses"),
        forkmail_store::migrate(&at).expect_err("migrate refuses"),
    ] {
        let text = err.to_string();
        assert!(matches!(err, StoreError::NotForkmail { .. }), "{err:?}");
        assert!(
            text.contains("not a forkmail database") && text.contains("empty"),
            "{text}"
        );
        assert!(
            text.contains("forkmail-keygen init"),
            "says what to do: {text}"
        );
    }
}

pub fn a_foreign_database_is_refused(b: &dyn Backend) {
    let at = b.fresh();
    b.make_empty(&at);
    b.exec(&at, "CREATE TABLE customers (id INTEGER PRIMARY KEY)");
    b.exec(&at, "INSERT INTO customers (id) VALUES (7)");
    for err in [
        forkmail_store::open(&at).err().expect("open refuses"),
        forkmail_store::migrate(&at).expect_err("migrate refuses"),
        forkmail_store::create(&at).err().expect("create refuses"),
    ] {
        let text = err.to_string();
        if !matches!(err, StoreError::Exists(_)) {
            assert!(
                text.contains("not a forkmail database") && text.contains("customers"),
                "{text}"
            );
        }
    }
    assert_eq!(
        b.query_ints(&at, "SELECT id FROM customers"),
        [7],
        "left untouched"
    );
}

pub fn sent_lists_each_senders_mail_and_outlives_every_delete(b: &dyn Backend) {
    let (_, mut store) = store_with_users(b);
    let first = store
        .send(
            "alice",
            &draft(&["bob", "carol"], "to both"),
            10,
            &SendLimits::NONE,
        )
        .unwrap();
    let other = store
        .send("bob", &draft(&["alice"], "from bob"), 20, &SendLimits::NONE)
        .unwrap();
    let second = store
        .send(
            "alice",
            &draft(&["carol"], "to carol"),
            30,
            &SendLimits::NONE,
        )
        .unwrap();
    assert!(
        store
            .send(
                "alice",
                &draft(&["nobody"], "refused"),
                40,
                &SendLimits::NONE
            )
            .is_err(),
        "a refused send leaves no record"
    );
    let expected = vec![
        SentSummary {
            id: first,
            to: vec!["bob".into(), "carol".into()],
            date_ms: 10,
            title: "to both".into(),
        },
        SentSummary {
            id: second,
            to: vec!["carol".into()],
            date_ms: 30,
            title: "to carol".into(),
        },
    ];
    assert_eq!(sent(&mut *store, "alice"), expected);
    assert_eq!(
        sent(&mut *store, "bob")
            .iter()
            .map(|m| m.id)
            .collect::<Vec<_>>(),
        [other]
    );
    assert!(sent(&mut *store, "carol").is_empty());
    // Every recipient deletes: the message goes, the sender's record stays.
    store.delete("bob", first).unwrap();
    store.delete("carol", first).unwrap();
    store.delete("carol", second).unwrap();
    assert_eq!(mail_counts(store.counts().unwrap()), (1, 1, 1));
    assert_eq!(sent(&mut *store, "alice"), expected);
    assert_eq!(store.counts().unwrap().sent, 3);
    store.check_integrity().unwrap();
}

pub fn sent_pages_by_page_len_and_stops_on_break(b: &dyn Backend) {
    let (_, mut store) = store_with_users(b);
    let ids: Vec<u64> = (0..5)
        .map(|i| {
            store
                .send(
                    "alice",
                    &draft(&["bob"], &format!("s{i}")),
                    10,
                    &SendLimits::NONE,
                )
                .unwrap()
        })
        .collect();
    let mut seen = Vec::new();
    store
        .sent("alice", 2, &mut |entries, more| {
            seen.push((entries.iter().map(|e| e.id).collect::<Vec<_>>(), more));
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(
        seen,
        [
            (ids[0..2].to_vec(), true),
            (ids[2..4].to_vec(), true),
            (ids[4..5].to_vec(), false)
        ]
    );
    let mut calls = 0;
    store
        .sent("carol", 2, &mut |entries, more| {
            calls += 1;
            assert!(
                entries.is_empty() && !more,
                "an empty list gets its final call"
            );
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(calls, 1);
    let mut calls = 0;
    store
        .sent("alice", 2, &mut |_, _| {
            calls += 1;
            ControlFlow::Break(())
        })
        .unwrap();
    assert_eq!(calls, 1, "Break stops the listing");
}

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

pub fn a_repeated_send_id_returns_the_first_id_and_stores_nothing(b: &dyn Backend) {
    let (_, mut store) = store_with_users(b);
    let mail = draft(&["bob", "carol"], "once");
    let id = store
        .send_once(
            "alice",
            b"0123456789abcdef",
            &mail,
            10,
            DAY_MS,
            &SendLimits::NONE,
        )
        .unwrap();
    for at in [11, 10 + DAY_MS - 1] {
        assert_eq!(
            store
                .send_once(
                    "alice",
                    b"0123456789abcdef",
                    &mail,
                    at,
                    DAY_MS,
                    &SendLimits::NONE
                )
                .unwrap(),
            id,
            "a repeat at {at} answers the first id"
        );
    }
    assert_eq!(
        mail_counts(store.counts().unwrap()),
        (1, 1, 2),
        "stored once"
    );
    assert_eq!(sent(&mut *store, "alice").len(), 1);
    // Another sender may use the same id; another id of the same sender is another mail.
    let bobs = store
        .send_once(
            "bob",
            b"0123456789abcdef",
            &mail_to_alice(),
            12,
            DAY_MS,
            &SendLimits::NONE,
        )
        .unwrap();
    let again = store
        .send_once(
            "alice",
            b"fedcba9876543210",
            &mail,
            13,
            DAY_MS,
            &SendLimits::NONE,
        )
        .unwrap();
    assert!(bobs != id && again != id && bobs != again);
    // A refused send records nothing: the same id may then carry a corrected draft.
    let bad = draft(&["nobody"], "typo");
    assert!(matches!(
        store.send_once(
            "carol",
            b"cccccccccccccccc",
            &bad,
            14,
            DAY_MS,
            &SendLimits::NONE
        ),
        Err(StoreError::UnknownRecipient(_))
    ));
    let fixed = store
        .send_once(
            "carol",
            b"cccccccccccccccc",
            &draft(&["bob"], "typo"),
            15,
            DAY_MS,
            &SendLimits::NONE,
        )
        .unwrap();
    assert_eq!(store.read("bob", fixed).unwrap().title, "typo");
    // The recipients deleting the mail does not make a repeat store it again.
    store.delete("bob", id).unwrap();
    store.delete("carol", id).unwrap();
    assert_eq!(
        store
            .send_once(
                "alice",
                b"0123456789abcdef",
                &mail,
                16,
                DAY_MS,
                &SendLimits::NONE
            )
            .unwrap(),
        id
    );
    assert!(inbox(&mut *store, "bob").iter().all(|m| m.id != id));
    store.check_integrity().unwrap();
}

fn mail_to_alice() -> Draft {
    draft(&["alice"], "from bob")
}

/// Two connections, two threads, one send id per round: one message per round, and both are
/// answered with its id.
pub fn racing_sends_with_one_send_id_store_one_message(b: &dyn Backend) {
    const ROUNDS: usize = 30;
    let (at, mut store) = store_with_users(b);
    let barrier = Barrier::new(2);
    let ids: Vec<Vec<u64>> = std::thread::scope(|s| {
        let racers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut store = forkmail_store::open(&at).expect("open");
                    (0..ROUNDS)
                        .map(|round| {
                            let send_id = format!("race {round:>11}");
                            let mail = draft(&["bob"], &format!("r{round}"));
                            barrier.wait();
                            store
                                .send_once(
                                    "alice",
                                    send_id.as_bytes(),
                                    &mail,
                                    10,
                                    DAY_MS,
                                    &SendLimits::NONE,
                                )
                                .unwrap()
                        })
                        .collect()
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(ids[0], ids[1], "both racers get the one id");
    assert_eq!(store.counts().unwrap().messages, ROUNDS as u64);
    store.check_integrity().unwrap();
}

pub fn send_ids_older_than_the_retention_are_forgotten(b: &dyn Backend) {
    let (_, mut store) = store_with_users(b);
    let mail = draft(&["bob"], "old");
    let first = store
        .send_once(
            "alice",
            b"aaaaaaaaaaaaaaaa",
            &mail,
            1_000,
            DAY_MS,
            &SendLimits::NONE,
        )
        .unwrap();
    let later = 1_000 + DAY_MS + 1;
    let second = store
        .send_once(
            "alice",
            b"aaaaaaaaaaaaaaaa",
            &mail,
            later,
            DAY_MS,
            &SendLimits::NONE,
        )
        .unwrap();
    assert_ne!(first, second, "past the retention the id is forgotten");
    assert_eq!(store.counts().unwrap().messages, 2);
}

/// The bytes a draft adds to each recipient's mailbox.
fn size(d: &Draft) -> u64 {
    (d.title.len() + d.body.len()) as u64
}

pub fn a_send_over_a_recipients_quota_is_refused_and_stores_nothing(b: &dyn Backend) {
    let (_at, mut store) = store_with_users(b);
    let one = draft(&["bob"], "m");
    let limits = SendLimits {
        quota_bytes: 2 * size(&one),
        ..SendLimits::NONE
    };
    store.send("alice", &one, 10, &limits).unwrap();
    store.send("alice", &one, 10, &limits).unwrap();
    assert_eq!(store.mailbox_bytes("bob").unwrap(), 2 * size(&one));
    let before = store.counts().unwrap();
    let err = store
        .send("alice", &draft(&["carol", "bob"], "m"), 10, &limits)
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::MailboxFull { recipient, quota_bytes } if recipient == "bob" && *quota_bytes == limits.quota_bytes),
        "{err:?}"
    );
    let err = store
        .send_once("alice", &[1; 16], &draft(&["bob"], "m"), 10, 1000, &limits)
        .unwrap_err();
    assert!(matches!(err, StoreError::MailboxFull { .. }), "{err:?}");
    assert_eq!(store.counts().unwrap(), before, "nothing stored for anyone");
    assert_eq!(store.mailbox_bytes("carol").unwrap(), 0);
    assert!(inbox(&mut *store, "carol").is_empty());
    // A mail no larger than what is left still fits; the unlimited quota takes anything.
    store
        .send("alice", &draft(&["carol"], "m"), 10, &limits)
        .unwrap();
    store
        .send("alice", &draft(&["bob"], "m"), 10, &SendLimits::NONE)
        .unwrap();
    store.check_integrity().unwrap();
}

pub fn a_delete_gives_the_quota_back(b: &dyn Backend) {
    let (_at, mut store) = store_with_users(b);
    let one = draft(&["bob", "carol"], "m");
    let limits = SendLimits {
        quota_bytes: size(&one),
        ..SendLimits::NONE
    };
    let id = store.send("alice", &one, 10, &limits).unwrap();
    assert!(matches!(
        store.send("alice", &one, 10, &limits),
        Err(StoreError::MailboxFull { .. })
    ));
    // Bob's delete frees bob's mailbox only: carol still holds her copy.
    store.delete("bob", id).unwrap();
    assert_eq!(store.mailbox_bytes("bob").unwrap(), 0);
    assert_eq!(store.mailbox_bytes("carol").unwrap(), size(&one));
    let err = store.send("alice", &one, 10, &limits).unwrap_err();
    assert!(
        matches!(&err, StoreError::MailboxFull { recipient, .. } if recipient == "carol"),
        "{err:?}"
    );
    store
        .send("alice", &draft(&["bob"], "m"), 10, &limits)
        .unwrap();
    store.delete("carol", id).unwrap();
    assert_eq!(store.mailbox_bytes("carol").unwrap(), 0);
    store.check_integrity().unwrap();
}

pub fn a_sender_over_the_rate_is_refused_with_when_to_retry(b: &dyn Backend) {
    let (_at, mut store) = store_with_users(b);
    let limits = SendLimits {
        max_per_minute: 3,
        ..SendLimits::NONE
    };
    let t0 = 1_000_000;
    let first = store
        .send_once(
            "alice",
            &[9; 16],
            &draft(&["bob"], "a"),
            t0,
            600_000,
            &limits,
        )
        .unwrap();
    store
        .send("alice", &draft(&["bob"], "b"), t0 + 10_000, &limits)
        .unwrap();
    store
        .send("alice", &draft(&["bob"], "c"), t0 + 20_000, &limits)
        .unwrap();
    let before = store.counts().unwrap();
    let err = store
        .send("alice", &draft(&["bob"], "d"), t0 + 30_000, &limits)
        .unwrap_err();
    match &err {
        StoreError::RateLimited {
            sender,
            max_per_minute: 3,
            retry_after_ms,
        } => {
            assert_eq!(sender, "alice");
            assert_eq!(*retry_after_ms, 30_000, "when the first leaves the window");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.counts().unwrap(), before, "nothing stored");
    // A repeat of a stored send is answered with its id, whatever the rate.
    assert_eq!(
        store
            .send_once(
                "alice",
                &[9; 16],
                &draft(&["bob"], "a"),
                t0 + 30_000,
                600_000,
                &limits
            )
            .unwrap(),
        first
    );
    // Others are not held back, and alice may send again once the first send is a minute old.
    store
        .send("bob", &draft(&["alice"], "x"), t0 + 30_000, &limits)
        .unwrap();
    store
        .send("alice", &draft(&["bob"], "e"), t0 + 60_001, &limits)
        .unwrap();
}

/// Opens one store per thread (as forked children do) and sends one mail from each at once;
/// returns how many were stored and every refusal.
fn race_sends(
    at: &StoreLocation,
    senders: &[&str],
    to: &[&str],
    limits: &SendLimits,
) -> (usize, Vec<StoreError>) {
    let barrier = Barrier::new(senders.len());
    let results: Vec<Result<u64, StoreError>> = std::thread::scope(|s| {
        let threads: Vec<_> = senders
            .iter()
            .enumerate()
            .map(|(i, &from)| {
                let barrier = &barrier;
                s.spawn(move || {
                    let mut store = forkmail_store::open(at).expect("open");
                    barrier.wait();
                    store.send(from, &draft(to, &format!("r{i}")), 10_000, limits)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let stored = results.iter().filter(|r| r.is_ok()).count();
    (
        stored,
        results.into_iter().filter_map(Result::err).collect(),
    )
}

pub fn racing_sends_at_the_quota_edge_store_no_more_than_it_allows(b: &dyn Backend) {
    let (at, mut store) = store_with_users(b);
    // Titles r0..r7 are all two bytes: room for exactly three.
    let limits = SendLimits {
        quota_bytes: 3 * size(&draft(&["bob"], "r0")),
        ..SendLimits::NONE
    };
    let senders = [
        "alice", "carol", "alice", "carol", "alice", "carol", "alice", "carol",
    ];
    let (stored, refused) = race_sends(&at, &senders, &["carol", "bob"], &limits);
    assert_eq!(stored, 3, "{refused:?}");
    assert!(
        refused
            .iter()
            .all(|e| matches!(e, StoreError::MailboxFull { .. })),
        "{refused:?}"
    );
    assert_eq!(store.mailbox_bytes("bob").unwrap(), limits.quota_bytes);
    assert_eq!(inbox(&mut *store, "bob").len(), 3);
    store.check_integrity().unwrap();
}

pub fn racing_sends_at_the_rate_edge_store_no_more_than_it_allows(b: &dyn Backend) {
    let (at, mut store) = store_with_users(b);
    let limits = SendLimits {
        max_per_minute: 3,
        ..SendLimits::NONE
    };
    let (stored, refused) = race_sends(&at, &["alice"; 8], &["bob"], &limits);
    assert_eq!(stored, 3, "{refused:?}");
    assert!(
        refused
            .iter()
            .all(|e| matches!(e, StoreError::RateLimited { .. })),
        "{refused:?}"
    );
    assert_eq!(sent(&mut *store, "alice").len(), 3);
}

/// An Argon2id hash as the server's re-hash stores it.
fn argon2id_password() -> StoredPassword {
    StoredPassword {
        kdf: "argon2id-m19456-p1".into(),
        iterations: 2,
        salt: b"sixteen byte slt".to_vec(),
        hash: vec![0x5A; 32],
    }
}

pub fn update_password_replaces_the_hash_and_refuses_an_unknown_user(b: &dyn Backend) {
    let (_, mut store) = store_with_users(b);
    let new = argon2id_password();
    store
        .update_password("bob", &new, PasswordUpdate::Rehash)
        .unwrap();
    let bob = store.find_user("bob").unwrap().unwrap();
    assert_eq!(bob.password, new);
    assert_eq!(
        bob.public_key,
        user("bob").public_key,
        "only the hash changes"
    );
    assert_eq!(
        store.find_user("alice").unwrap().unwrap().password,
        user("alice").password,
        "other users keep theirs"
    );
    assert!(matches!(
        store.update_password("nobody", &new, PasswordUpdate::Change),
        Err(StoreError::UnknownRecipient(name)) if name == "nobody"
    ));
}

pub fn a_ticket_is_valid_for_its_user_until_it_expires(b: &dyn Backend) {
    let (_, mut store) = store_with_users(b);
    let ticket = [7u8; 32];
    store.issue_ticket("bob", &ticket, 1_000, 61_000).unwrap();
    assert!(store.ticket_valid("bob", &ticket, 1_000).unwrap());
    assert!(
        store.ticket_valid("bob", &ticket, 60_999).unwrap(),
        "valid as often as its lifetime allows"
    );
    assert!(
        !store.ticket_valid("bob", &ticket, 61_000).unwrap(),
        "expired"
    );
    assert!(
        !store.ticket_valid("alice", &ticket, 1_000).unwrap(),
        "bob's ticket is not alice's"
    );
    assert!(!store.ticket_valid("bob", &[8u8; 32], 1_000).unwrap());
}

pub fn revoking_tickets_ends_every_ticket_of_that_user_only(b: &dyn Backend) {
    let (_, mut store) = store_with_users(b);
    store.issue_ticket("bob", &[1; 32], 1_000, 90_000).unwrap();
    store.issue_ticket("bob", &[2; 32], 1_000, 90_000).unwrap();
    store
        .issue_ticket("carol", &[3; 32], 1_000, 90_000)
        .unwrap();
    assert_eq!(store.revoke_tickets("bob").unwrap(), 2);
    assert!(!store.ticket_valid("bob", &[1; 32], 2_000).unwrap());
    assert!(!store.ticket_valid("bob", &[2; 32], 2_000).unwrap());
    assert!(store.ticket_valid("carol", &[3; 32], 2_000).unwrap());
    assert_eq!(store.revoke_tickets("bob").unwrap(), 0);
}

pub fn a_password_change_revokes_tickets_and_a_rehash_keeps_them(b: &dyn Backend) {
    let (_, mut store) = store_with_users(b);
    store.issue_ticket("bob", &[1; 32], 1_000, 90_000).unwrap();
    store
        .update_password("bob", &argon2id_password(), PasswordUpdate::Rehash)
        .unwrap();
    assert!(store.ticket_valid("bob", &[1; 32], 2_000).unwrap());
    store
        .update_password("bob", &user("bob").password, PasswordUpdate::Change)
        .unwrap();
    assert!(!store.ticket_valid("bob", &[1; 32], 2_000).unwrap());
}

pub fn issuing_a_ticket_purges_expired_ones(b: &dyn Backend) {
    let (at, mut store) = store_with_users(b);
    store.issue_ticket("bob", &[1; 32], 1_000, 5_000).unwrap();
    store.issue_ticket("carol", &[2; 32], 1_000, 9_000).unwrap();
    store
        .issue_ticket("alice", &[3; 32], 6_000, 20_000)
        .unwrap();
    assert_eq!(
        b.query_ints(&at, "SELECT count(*) FROM tickets"),
        [2],
        "bob's expired ticket went, carol's live one stayed"
    );
    assert!(store.ticket_valid("carol", &[2; 32], 6_000).unwrap());
}
