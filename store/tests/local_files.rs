//! The SQLite store's file on disk: made 0600 with its `-wal` and `-shm`, and a connection that
//! refuses to write once its file was deleted or replaced.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use forkmail_protocol::messages::Draft;
use forkmail_store::sqlite::SqliteStore;
use forkmail_store::{SendLimits, Store, StoreError, StoredPassword, UserRecord};

fn user(name: &str) -> UserRecord {
    UserRecord {
        name: name.into(),
        password: StoredPassword {
            kdf: "pbkdf2-sha512".into(),
            iterations: 1,
            salt: vec![1; 16],
            hash: vec![2; 64],
        },
        public_key: vec![3; 8],
    }
}

fn draft() -> Draft {
    Draft {
        to: vec!["alice".into()],
        title: "hi".into(),
        body: "hello".into(),
    }
}

/// A store with user alice, and one mail sent, so the WAL and shared memory exist.
fn store_with_alice(path: &Path) -> SqliteStore {
    let mut store = SqliteStore::create(path).unwrap();
    store.add_user(&user("alice"), 0).unwrap();
    store.send("alice", &draft(), 0, &SendLimits::NONE).unwrap();
    store
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn the_database_and_its_wal_and_shm_are_0600_from_their_creation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mail.db");
    let store = store_with_alice(&path);
    for suffix in ["", "-wal", "-shm"] {
        let file = dir.path().join(format!("mail.db{suffix}"));
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    drop(store);
}

#[test]
fn create_refuses_an_existing_file_and_leaves_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mail.db");
    fs::write(&path, b"").unwrap();
    assert!(matches!(
        SqliteStore::create(&path),
        Err(StoreError::Exists(_))
    ));
    assert_eq!(fs::read(&path).unwrap(), b"");
}

#[test]
fn a_send_into_a_deleted_database_is_refused_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mail.db");
    let mut store = store_with_alice(&path);
    fs::remove_file(&path).unwrap();
    let err = store
        .send("alice", &draft(), 0, &SendLimits::NONE)
        .unwrap_err();
    assert!(matches!(err, StoreError::Replaced(_)), "{err}");
    assert!(err.to_string().contains("deleted"), "{err}");
    assert!(err.to_string().contains("nothing was saved"), "{err}");
    for refused in [
        store.delete("alice", 1).err(),
        store
            .send_once("alice", &[7; 16], &draft(), 0, 1, &SendLimits::NONE)
            .err(),
        store.record_nonce(b"n", 0, 1).err(),
        store.clear_login_failures("alice").err(),
        store.begin_login_attempt("alice", 0, &|_| 0).err(),
        store.add_user(&user("bob"), 0).err(),
    ] {
        assert!(
            matches!(refused, Some(StoreError::Replaced(_))),
            "{refused:?}"
        );
    }
}

#[test]
fn a_send_into_a_replaced_database_is_refused_and_the_new_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mail.db");
    let mut store = store_with_alice(&path);
    // Another store, with alice too, moved into place: the classic restore-from-backup.
    let other = dir.path().join("other.db");
    drop(store_with_alice(&other));
    fs::rename(&other, &path).unwrap();
    let err = store
        .send("alice", &draft(), 0, &SendLimits::NONE)
        .unwrap_err();
    assert!(matches!(err, StoreError::Replaced(_)), "{err}");
    assert!(err.to_string().contains("another file"), "{err}");
    let mut fresh = SqliteStore::open(&path).unwrap();
    assert_eq!(
        fresh.counts().unwrap().messages,
        1,
        "only the other store's own mail"
    );
}

fn wal_len(path: &Path) -> u64 {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
}

/// Issue 9: a reader holding an old snapshot pinned the WAL, which grew 2.6 -> 15.8 MB and
/// never shrank. With `journal_size_limit` it goes back once that reader is done and the WAL
/// has been checkpointed.
#[test]
fn the_wal_shrinks_back_to_its_limit_once_a_pinning_reader_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mail.db");
    let mut store = store_with_alice(&path);
    let big = Draft {
        body: "x".repeat(64 * 1024),
        ..draft()
    };
    let reader = rusqlite::Connection::open(&path).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let _: i64 = reader
        .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap();
    // 200 mails of 64 KiB while the reader's snapshot keeps every frame in the WAL.
    for _ in 0..200 {
        store.send("alice", &big, 0, &SendLimits::NONE).unwrap();
    }
    let pinned = wal_len(&path);
    assert!(
        pinned > 3 * forkmail_store::sqlite::JOURNAL_SIZE_LIMIT as u64,
        "the pinned WAL grew to {pinned} bytes"
    );
    reader.execute_batch("COMMIT").unwrap();
    drop(reader);
    // The keeper's next checkpoint (the server's WAL keeper process, which sends leave it to)
    // copies the whole WAL; the next commit starts it over, truncated to the limit.
    store.checkpoint().unwrap();
    for _ in 0..3 {
        store.send("alice", &draft(), 0, &SendLimits::NONE).unwrap();
    }
    let after = wal_len(&path);
    assert!(
        after <= forkmail_store::sqlite::JOURNAL_SIZE_LIMIT as u64,
        "the WAL is {after} bytes after the reader finished (was {pinned})"
    );
    eprintln!("WAL: {pinned} bytes while pinned, {after} after");
}

/// A floor no disk meets refuses new sends, storing nothing, but a repeat of a stored send
/// is still answered with its id: its client must not be told that nothing was sent.
#[test]
fn below_the_floor_a_new_send_is_refused_and_a_repeat_still_gets_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mail.db");
    let mut store = store_with_alice(&path);
    let id = store
        .send_once("alice", &[5; 16], &draft(), 1, 1000, &SendLimits::NONE)
        .unwrap();
    let floor = SendLimits {
        min_free_bytes: u64::MAX / 4,
        ..SendLimits::NONE
    };
    let before = store.counts().unwrap();
    assert_eq!(
        store
            .send_once("alice", &[5; 16], &draft(), 2, 1000, &floor)
            .unwrap(),
        id
    );
    for refused in [
        store.send("alice", &draft(), 2, &floor).unwrap_err(),
        store
            .send_once("alice", &[6; 16], &draft(), 2, 1000, &floor)
            .unwrap_err(),
    ] {
        assert!(matches!(refused, StoreError::DiskLow { .. }), "{refused:?}");
        assert!(refused.to_string().contains("disk is low"), "{refused}");
    }
    assert_eq!(store.counts().unwrap(), before);
}
