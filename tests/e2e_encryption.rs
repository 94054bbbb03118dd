//! End-to-end encryption (issue 11) against the real forked server and client: what reaches
//! the server's disk, who can decrypt, and what a reader is shown when the server (or whoever
//! holds its database) tampers with the ciphertexts, forges a sender or moves a header.
//!
//! The attacks are performed on the store behind the server's back, as a host administrator
//! or a stolen backup could: injected through the store's own methods (a mail "from alice"
//! that alice never sealed), or bytes flipped in `mail.db` itself.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use forkmail_client::e2e::mail::{self, OpenError};
use forkmail_protocol::messages::{Content, SealedDraft};
use forkmail_protocol::Draft;
use forkmail_store::SendLimits;
use forkmail_testkit::{db, sealing, Deployment, Server};
use serde_json::Value;

fn send(dep: &Deployment, server: &Server, from: &str, to: &str, title: &str, body: &str) {
    let out = dep
        .client(server, from)
        .args(["send", "--to", to, "--title", title])
        .run(body.as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn inbox_json(dep: &Deployment, server: &Server, user: &str) -> Vec<Value> {
    let out = dep.client(server, user).args(["inbox", "--json"]).ok(b"");
    serde_json::from_str::<Value>(&out)
        .expect("inbox --json is JSON")
        .as_array()
        .expect("an array")
        .clone()
}

fn read_json(dep: &Deployment, server: &Server, user: &str, id: u64) -> Value {
    let out = dep
        .client(server, user)
        .args(["read", &id.to_string(), "--json"])
        .ok(b"");
    serde_json::from_str(&out).expect("read --json is JSON")
}

fn read_text(dep: &Deployment, server: &Server, user: &str, id: u64) -> String {
    dep.client(server, user)
        .args(["read", &id.to_string()])
        .ok(b"")
}

/// Every file under `dir` (recursively) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = fs::read(&path) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    found
}

/// The id of the only mail in `user`'s inbox.
fn only_id(dep: &Deployment, server: &Server, user: &str) -> u64 {
    let inbox = inbox_json(dep, server, user);
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    inbox[0]["id"].as_u64().unwrap()
}

#[test]
fn no_sent_title_or_body_appears_in_any_database_file_wal_included() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&[]);
    // A session left open keeps a connection, so SQLite keeps the WAL (and -shm) the send
    // commits into instead of checkpointing and removing it when the sender's child exits.
    let held = forkmail_testkit::wire::login(&dep, server.addr, "bob");
    send(
        &dep,
        &server,
        "alice",
        "bob",
        "TITLEMARKER-7f3a",
        "BODYMARKER-91c2 the plan is on",
    );
    // The server has committed it: mail.db, its -wal and -shm hold whatever reached the disk.
    let server_dir = dep.server_dir();
    let names: Vec<String> = fs::read_dir(&server_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n == "mail.db-wal"), "{names:?}");
    for marker in ["TITLEMARKER-7f3a", "BODYMARKER-91c2"] {
        assert_eq!(
            files_containing(&server_dir, marker.as_bytes()),
            Vec::<String>::new(),
            "{marker} reached the server's disk"
        );
    }
    // The search finds what is stored in the clear: the routing metadata.
    assert!(!files_containing(&server_dir, b"alice").is_empty());
    // bob still reads it, verified.
    let id = only_id(&dep, &server, "bob");
    let mail = read_json(&dep, &server, "bob", id);
    assert_eq!(mail["title"], "TITLEMARKER-7f3a");
    assert_eq!(mail["verified"], true);
    // After a checkpoint and shutdown, the database file alone.
    drop(held);
    drop(server);
    for marker in ["TITLEMARKER-7f3a", "BODYMARKER-91c2"] {
        assert!(files_containing(&server_dir, marker.as_bytes()).is_empty());
    }
}

#[test]
fn no_sent_title_or_body_reaches_the_postgresql_data_directory() {
    let cluster = match forkmail_store::pgtest::Cluster::start() {
        Ok(cluster) => cluster,
        Err(skip) => return eprintln!("skipped: {}", skip.0),
    };
    let store = cluster.create_database("e2e_marker");
    let dep = Deployment::with_store(&["alice", "bob"], &store);
    let server = dep.start_server(&[]);
    send(
        &dep,
        &server,
        "alice",
        "bob",
        "PGTITLE-5d1e",
        "PGBODY-0a9b meet at noon",
    );
    let id = only_id(&dep, &server, "bob");
    assert_eq!(read_json(&dep, &server, "bob", id)["verified"], true);
    // The commit is in the WAL (pg_wal) by now: the data directory holds every byte written.
    let data = cluster.data_dir();
    for marker in ["PGTITLE-5d1e", "PGBODY-0a9b"] {
        assert!(
            files_containing(&data, marker.as_bytes()).is_empty(),
            "{marker} reached PostgreSQL's disk"
        );
    }
    assert!(
        !files_containing(&data, b"alice").is_empty(),
        "the search works"
    );
}

#[test]
fn someone_not_on_the_recipient_list_cannot_decrypt_the_stored_mail() {
    let dep = Deployment::new(&["alice", "bob", "carol"]);
    let server = dep.start_server(&[]);
    send(&dep, &server, "alice", "bob", "for bob only", "secret");
    let id = only_id(&dep, &server, "bob");
    // The sealed bytes as the store holds them, taken by someone with the database.
    let letter = db::open(&dep.store()).read_letter("bob", id).unwrap();
    let Content::Sealed { header, body } = &letter.content else {
        panic!("stored sealed: {:?}", letter.content)
    };
    let carol = sealing::identities(&dep.profile("carol"));
    assert_eq!(
        mail::decrypt_header(header, &carol).unwrap_err(),
        OpenError::Undecryptable
    );
    assert_eq!(
        mail::decrypt(body, &carol, 1 << 20).unwrap_err(),
        OpenError::Undecryptable
    );
    // The addressee and the sender can.
    for user in ["bob", "alice"] {
        let identities = sealing::identities(&dep.profile(user));
        assert_eq!(
            mail::decrypt(body, &identities, 1 << 20).unwrap(),
            b"secret"
        );
    }
    // Carol has no such mail to ask for either.
    let out = dep
        .client(&server, "carol")
        .args(["read", &id.to_string()])
        .run(b"");
    assert_eq!(out.status.code(), Some(1));
}

/// Stops nothing: makes the store write everything into `mail.db` itself (a truncating
/// checkpoint, through the store), so that bytes flipped in the file are what is read next.
fn checkpoint(dep: &Deployment) {
    db::open(&dep.store())
        .import(&mut std::iter::empty())
        .unwrap();
}

/// Flips one byte in the middle of every copy of `bytes[at..at + 32]` in `mail.db`.
fn flip_in_database(dep: &Deployment, bytes: &[u8], at: usize) {
    let path = dep.database();
    let mut file = fs::read(&path).unwrap();
    let needle = &bytes[at..at + 32];
    let mut flipped = 0;
    let mut i = 0;
    while i + needle.len() <= file.len() {
        if &file[i..i + needle.len()] == needle {
            file[i + 16] ^= 0x40;
            flipped += 1;
            i += needle.len();
        } else {
            i += 1;
        }
    }
    assert!(flipped > 0, "the ciphertext is in mail.db");
    fs::write(&path, file).unwrap();
}

#[test]
fn tampered_header_or_body_ciphertext_is_shown_as_not_decryptable_never_as_content() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&[]);
    send(&dep, &server, "alice", "bob", "header kept", "BODY-A kept");
    send(&dep, &server, "alice", "bob", "body kept", "BODY-B kept");
    let ids: Vec<u64> = inbox_json(&dep, &server, "bob")
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    drop(server);
    let sealed = |id: u64| match db::open(&dep.store())
        .read_letter("bob", id)
        .unwrap()
        .content
    {
        Content::Sealed { header, body } => (header, body),
        other => panic!("{other:?}"),
    };
    let (header_a, _) = sealed(ids[0]);
    let (_, body_b) = sealed(ids[1]);
    checkpoint(&dep);
    flip_in_database(&dep, &header_a, header_a.len() / 2);
    flip_in_database(&dep, &body_b, body_b.len() / 2);
    let server = dep.start_server(&[]);

    for id in ids.clone() {
        let mail = read_json(&dep, &server, "bob", id);
        assert_eq!(mail["encrypted"], true);
        assert_eq!(mail["verified"], false, "{mail}");
        assert_eq!(mail["title"], "");
        assert_eq!(mail["body"], "");
        assert_eq!(mail["problem"], "cannot be decrypted with your keys");
        let text = read_text(&dep, &server, "bob", id);
        assert!(
            text.contains("cannot be decrypted with your keys"),
            "{text}"
        );
        assert!(!text.contains("kept"), "{text}");
    }
    // bob's cache holds the title he verified before the tampering; without it, the listing
    // flags the damaged header itself.
    assert_eq!(inbox_json(&dep, &server, "bob")[0]["title"], "header kept");
    fs::remove_file(dep.profile("bob").join("cache/headers.bin")).unwrap();
    let inbox = inbox_json(&dep, &server, "bob");
    assert_eq!(inbox[0]["title"], "[cannot be decrypted with your keys]");
    assert_eq!(
        inbox[1]["title"], "body kept",
        "only the body was tampered with"
    );
}

/// Puts `sealed` in `to`'s inbox as a mail from `from`, through the store (as the holder of
/// the database could); returns its id.
fn inject(dep: &Deployment, from: &str, sealed: &SealedDraft, tag: u8) -> u64 {
    db::open(&dep.store())
        .send_sealed_once(
            from,
            &[tag; 16],
            sealed,
            forkmail_protocol::now_millis(),
            1000,
            &SendLimits::NONE,
        )
        .unwrap()
}

fn draft(to: &str, title: &str, body: &str) -> Draft {
    Draft {
        to: vec![to.to_owned()],
        title: title.to_owned(),
        body: body.to_owned(),
    }
}

#[test]
fn a_forged_sender_is_flagged_whether_injected_or_sent() {
    let dep = Deployment::new(&["alice", "bob", "carol"]);
    let server = dep.start_server(&[]);
    // Everyone has logged in once, so that each has published a key record.
    for user in ["alice", "bob", "carol"] {
        inbox_json(&dep, &server, user);
    }
    // Bob seals a mail whose signed header says it is alice's, and it is stored as alice's.
    let forged = sealing::seal_as(&dep, "bob", "alice", &draft("carol", "pay bob", "FORGED"));
    let id = inject(&dep, "alice", &forged, 1);
    let mail = read_json(&dep, &server, "carol", id);
    assert_eq!(mail["from"], "alice");
    assert_eq!(
        (&mail["verified"], &mail["encrypted"]),
        (&Value::Bool(false), &Value::Bool(true))
    );
    assert!(
        mail["problem"]
            .as_str()
            .unwrap()
            .starts_with("signature does NOT verify: do not trust it"),
        "{mail}"
    );
    assert_eq!(mail["body"], "");
    let text = read_text(&dep, &server, "carol", id);
    assert!(
        text.contains("signature does NOT verify: do not trust it"),
        "{text}"
    );
    assert!(
        !text.contains("FORGED") && !text.contains("pay bob"),
        "{text}"
    );
    let listed = inbox_json(&dep, &server, "carol");
    assert!(
        listed[0]["title"]
            .as_str()
            .unwrap()
            .starts_with("[signature does NOT verify"),
        "{listed:?}"
    );
    // Nor is it quoted in a reply.
    let out = dep
        .client(&server, "carol")
        .args(["reply", &id.to_string()])
        .run(b"ok");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("signature does NOT verify"), "{stderr}");
    assert_eq!(
        inbox_json(&dep, &server, "alice").len(),
        0,
        "nothing was sent"
    );
    // The same forgery through bob's own session: the server says it is bob's, the header
    // says alice's.
    let mut session = forkmail_testkit::wire::login(&dep, server.addr, "bob");
    let forged = sealing::seal_as(&dep, "bob", "alice", &draft("carol", "from alice", "x"));
    let response = session.request(&forkmail_protocol::Request::SendSealed {
        send_id: [2; 16],
        draft: forged,
    });
    let forkmail_protocol::Response::Sent { id } = response else {
        panic!("the server cannot tell: {response:?}")
    };
    let mail = read_json(&dep, &server, "carol", id);
    assert_eq!(mail["from"], "bob");
    assert_eq!(mail["verified"], false);
    assert!(
        mail["problem"]
            .as_str()
            .unwrap()
            .contains("the signed header says alice"),
        "{mail}"
    );
}

#[test]
fn a_header_moved_to_another_message_is_flagged() {
    let dep = Deployment::new(&["alice", "bob", "carol"]);
    let server = dep.start_server(&[]);
    for user in ["alice", "bob", "carol"] {
        inbox_json(&dep, &server, user);
    }
    let first = sealing::seal_as(&dep, "alice", "alice", &draft("bob", "first", "BODY ONE"));
    let second = sealing::seal_as(&dep, "alice", "alice", &draft("bob", "second", "BODY TWO"));
    // The first mail's header on the second mail's body.
    let moved = SealedDraft {
        header: first.header.clone(),
        ..second.clone()
    };
    let id = inject(&dep, "alice", &moved, 1);
    let mail = read_json(&dep, &server, "bob", id);
    assert_eq!(mail["verified"], false);
    assert!(
        mail["problem"]
            .as_str()
            .unwrap()
            .contains("the body is not the one that was signed"),
        "{mail}"
    );
    assert_eq!(mail["body"], "");
    // Alice's header served as a mail from carol: the listing already flags it.
    let as_carol = inject(&dep, "carol", &first, 2);
    let listed = inbox_json(&dep, &server, "bob");
    let entry = listed
        .iter()
        .find(|e| e["id"].as_u64() == Some(as_carol))
        .unwrap();
    assert_eq!(entry["from"], "carol");
    assert!(
        entry["title"]
            .as_str()
            .unwrap()
            .starts_with("[signature does NOT verify"),
        "{entry}"
    );
    assert_eq!(read_json(&dep, &server, "bob", as_carol)["verified"], false);
}

#[test]
fn plaintext_mail_from_010_reads_marked_not_encrypted() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/v0.1.0");
    let dep = Deployment::from_fixture(&fixture, &["alice", "bob", "carol"]);
    let server = dep.start_server(&[]);
    let client = |user: &str| {
        forkmail_testkit::ClientCmd::new(&dep.profile(user), &server.addr.to_string())
            .password(&format!("{user}-fixture-pw"))
    };
    let mail: Value =
        serde_json::from_str(&client("bob").args(["read", "2", "--json"]).ok(b"")).unwrap();
    assert_eq!(mail["title"], "To both of you");
    assert_eq!(mail["body"], "Line one\nLine two with ünïcödé ✉\n");
    assert_eq!(mail["encrypted"], false);
    assert_eq!(mail["verified"], false);
    assert!(mail.get("problem").is_none(), "{mail}");
    let text = client("bob").args(["read", "2"]).ok(b"");
    assert!(
        text.contains("Signed:  none: stored in plaintext before end-to-end encryption"),
        "{text}"
    );
    // New mail on the migrated deployment is sealed, beside the old.
    let out = client("alice")
        .args(["send", "--to", "bob", "--title", "after the upgrade"])
        .run(b"sealed now");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inbox: Value =
        serde_json::from_str(&client("bob").args(["inbox", "--json"]).ok(b"")).unwrap();
    let newest = inbox.as_array().unwrap().last().unwrap().clone();
    assert_eq!(newest["title"], "after the upgrade");
    let id = newest["id"].as_u64().unwrap().to_string();
    let mail: Value =
        serde_json::from_str(&client("bob").args(["read", &id, "--json"]).ok(b"")).unwrap();
    assert_eq!(
        (&mail["encrypted"], &mail["verified"]),
        (&Value::Bool(true), &Value::Bool(true))
    );
}

#[test]
fn the_header_cache_is_private_and_a_second_listing_fetches_no_headers() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&[]);
    for i in 0..5 {
        send(&dep, &server, "alice", "bob", &format!("cached {i}"), "b");
    }
    let options = dep
        .connect_options("bob", &server.addr.to_string())
        .unwrap();
    let titles = |session: &mut forkmail_client::Session| -> Vec<String> {
        session
            .inbox()
            .unwrap()
            .into_iter()
            .map(|m| m.title)
            .collect()
    };
    let mut first = forkmail_client::Session::connect(&options).unwrap();
    let listed = titles(&mut first);
    assert_eq!(listed.len(), 5);
    assert_eq!(
        first.headers_fetched(),
        5,
        "a first listing fetches every header"
    );
    first.quit().unwrap();
    let cache = dep.profile("bob").join("cache/headers.bin");
    assert_eq!(fs::metadata(&cache).unwrap().mode() & 0o777, 0o600);
    assert_eq!(
        fs::metadata(cache.parent().unwrap()).unwrap().mode() & 0o777,
        0o700
    );
    // A new session (a new process would do the same: it reads the file).
    let mut second = forkmail_client::Session::connect(&options).unwrap();
    assert_eq!(titles(&mut second), listed);
    assert_eq!(
        second.headers_fetched(),
        0,
        "a second listing fetches no headers"
    );
    // One more mail: only its header is fetched.
    send(&dep, &server, "alice", "bob", "cached 5", "b");
    assert_eq!(titles(&mut second).len(), 6);
    assert_eq!(second.headers_fetched(), 1);
    second.quit().unwrap();
    // A damaged cache is discarded with a note, and the listing is still right.
    let mut bytes = fs::read(&cache).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    fs::write(&cache, bytes).unwrap();
    let out = dep
        .client(&server, "bob")
        .args(["inbox", "--json"])
        .run(b"");
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("header cache") && stderr.contains("discarded"),
        "{stderr}"
    );
    let inbox: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(inbox.as_array().unwrap().len(), 6);
    assert_eq!(inbox[5]["title"], "cached 5");
    // The sent folder is cached too, from the sender's side.
    let sent = dep
        .client(&server, "alice")
        .args(["sent", "--json"])
        .ok(b"");
    assert!(sent.contains("cached 5"), "{sent}");
}
