//! The key directory end to end (PROTOCOL.md §9.1, SECURITY.md): records published by keygen
//! and at first login, pinned by the sender's client at first use, a key the server substitutes
//! caught before anything is sent, a rotation by its owner taken without asking, `keys
//! --accept` after a real change, and every `PublishKey` a session may not make refused by the
//! real forked server, which goes on serving.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use forkmail_keygen::agekey;
use forkmail_keygen::PublicKey;
use forkmail_protocol::e2e::{KeyOrigin, KeyRecord, SignedKeyRecord};
use forkmail_protocol::{now_millis, ErrorCode, Request, Response, MAX_KEY_RECORD_NAMES};
use forkmail_testkit::wire::{self, outsider_key, user_key};
use forkmail_testkit::{db, ClientCmd, Deployment, Server};
use ring::rand::SystemRandom;
use serde_json::Value;

fn json_of(out: &str) -> Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn send(dep: &Deployment, server: &Server, from: &str, to: &str, title: &str) -> Output {
    dep.client(server, from)
        .args(["send", "--to", to, "--title", title])
        .run(b"a body\n")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `user`'s login key's fingerprint, from the deployment's server side of the profile.
fn login_fingerprint(dep: &Deployment, user: &str) -> String {
    let key = user_key(dep, user);
    PublicKey {
        der: ring::signature::KeyPair::public_key(&key).as_ref().to_vec(),
    }
    .fingerprint()
}

/// `user`'s record as the directory holds it, verified with the user's login key.
fn directory_record(dep: &Deployment, user: &str) -> Option<KeyRecord> {
    let entries = db::open(&dep.store())
        .key_records(&[user.to_owned()])
        .expect("key records");
    let signed = entries.into_iter().next()?.record?;
    let der = ring::signature::KeyPair::public_key(&user_key(dep, user))
        .as_ref()
        .to_vec();
    Some(
        signed
            .verify_with(&der)
            .expect("signed by the user's login key"),
    )
}

/// What a server that holds the store can do: put in `user`'s place a record of a fresh age
/// identity, self-signed by a key of its own, with a higher serial.
fn substitute_key(dep: &Deployment, user: &str, serial: u64) {
    let (record, signed) = agekey::signed_record(
        user,
        serial,
        KeyOrigin::User,
        &agekey::generate(),
        outsider_key(),
        &SystemRandom::new(),
    )
    .unwrap();
    db::open(&dep.store())
        .publish_key(user, &record, &signed, now_millis())
        .expect("the store takes any record: it checks no signature");
}

fn contacts_toml(dep: &Deployment, user: &str) -> toml::Table {
    let path = dep.profile(user).join("contacts.toml");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", path.display());
    toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn recipients_in(age_key: &Path) -> Vec<String> {
    agekey::load(age_key)
        .unwrap()
        .iter()
        .map(|identity| identity.to_public().to_string())
        .collect()
}

#[test]
fn keygen_publishes_each_users_record_and_the_first_send_pins_the_recipients() {
    let dep = Deployment::new(&["alice", "bob"]);
    let bob = directory_record(&dep, "bob").expect("keygen published bob's record");
    assert_eq!((bob.serial, bob.origin), (1, KeyOrigin::Administrator));
    assert_eq!(
        recipients_in(&dep.profile("bob").join("age.key")),
        std::slice::from_ref(&bob.age_recipient)
    );
    let server = dep.start_server(&[]);
    let out = send(&dep, &server, "alice", "bob", "first");
    assert!(out.status.success(), "{}", stderr(&out));
    let pins = contacts_toml(&dep, "alice");
    let pin = pins["bob"].as_table().expect("bob is pinned");
    assert_eq!(
        pin["fingerprint"].as_str(),
        Some(login_fingerprint(&dep, "bob").as_str())
    );
    assert_eq!(
        pin["age_recipient"].as_str(),
        Some(bob.age_recipient.as_str())
    );
    assert_eq!(pin["serial"].as_integer(), Some(1));
    assert_eq!(pin["origin"].as_str(), Some("administrator"));
    assert!(pin["pinned"].as_str().is_some_and(|d| d.ends_with('Z')));
    assert!(!pins.contains_key("alice"), "nobody pins themselves");
}

#[test]
fn a_server_substituting_a_recipients_key_is_caught_and_nothing_is_sent() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&[]);
    let first = send(&dep, &server, "alice", "bob", "pins bob");
    assert!(first.status.success(), "{}", stderr(&first));
    let before = db::counts(&dep.store()).messages;
    substitute_key(&dep, "bob", 2);

    let out = send(&dep, &server, "alice", "bob", "must not go");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let pinned = login_fingerprint(&dep, "bob");
    let presented = PublicKey {
        der: ring::signature::KeyPair::public_key(outsider_key())
            .as_ref()
            .to_vec(),
    }
    .fingerprint();
    for needed in [
        "changed",
        pinned.as_str(),
        presented.as_str(),
        "forkmail keys --accept bob",
        "nothing was sent",
    ] {
        assert!(err.contains(needed), "no {needed:?} in: {err}");
    }
    assert_eq!(
        db::counts(&dep.store()).messages,
        before,
        "nothing was stored"
    );
    // The pin is untouched: the next send is refused too.
    let again = send(&dep, &server, "alice", "bob", "must not go either");
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert_eq!(
        contacts_toml(&dep, "alice")["bob"]["fingerprint"].as_str(),
        Some(pinned.as_str())
    );
    let listed = dep.client(&server, "alice").args(["keys"]).ok(b"");
    assert!(
        listed.contains("CHANGED") && listed.contains(&presented),
        "{listed}"
    );
}

#[test]
fn a_server_serving_an_old_record_after_a_rotation_is_caught() {
    let dep = Deployment::new(&["alice", "bob"]);
    let old = db::open(&dep.store())
        .key_records(&["bob".to_owned()])
        .unwrap()
        .remove(0)
        .record
        .unwrap();
    let server = dep.start_server(&[]);
    dep.client(&server, "bob")
        .args(["keys", "--rotate"])
        .ok(b"");
    let first = send(&dep, &server, "alice", "bob", "pins bob's second record");
    assert!(first.status.success(), "{}", stderr(&first));
    // Rolling back to the identity bob rotated away from: signed by bob, but not newer.
    let stale: KeyRecord = old.decode_unverified().unwrap();
    let mut store = db::open(&dep.store());
    let replayed = KeyRecord { serial: 3, ..stale };
    // The serial column is the store's; the signed bytes still say serial 1.
    store
        .publish_key("bob", &replayed, &old, now_millis())
        .unwrap();
    drop(store);
    let out = send(&dep, &server, "alice", "bob", "must not go");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("forkmail keys --accept bob"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_rotation_by_the_recipient_is_taken_without_asking_and_old_identities_are_kept() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&[]);
    let first = send(&dep, &server, "alice", "bob", "before the rotation");
    assert!(first.status.success(), "{}", stderr(&first));
    let age_key = dep.profile("bob").join("age.key");
    let before = recipients_in(&age_key);

    let rotated = json_of(
        &dep.client(&server, "bob")
            .args(["keys", "--rotate", "--json"])
            .ok(b""),
    );
    assert_eq!(rotated["serial"], 2);
    assert_eq!(rotated["kept"], 1);
    assert_eq!(rotated["fingerprint"], login_fingerprint(&dep, "bob"));
    let after = recipients_in(&age_key);
    assert_eq!(after.len(), 2);
    assert_eq!(after[0], rotated["age_recipient"].as_str().unwrap());
    assert_eq!(after[1..], before[..], "the old identity is kept, second");
    let published = directory_record(&dep, "bob").unwrap();
    assert_eq!(published.serial, 2);
    assert_eq!(published.age_recipient, after[0]);

    let out = send(&dep, &server, "alice", "bob", "after the rotation");
    assert!(out.status.success(), "{}", stderr(&out));
    let pin = &contacts_toml(&dep, "alice")["bob"];
    assert_eq!(pin["serial"].as_integer(), Some(2));
    assert_eq!(pin["age_recipient"].as_str(), Some(after[0].as_str()));
    // bob still holds the identity the first mail was for.
    let identities = agekey::load(&age_key).unwrap();
    assert!(identities
        .iter()
        .any(|i| i.to_public().to_string() == before[0]));
}

#[test]
fn keys_accept_pins_a_changed_key_after_the_user_compared_it() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&[]);
    assert!(send(&dep, &server, "alice", "bob", "pins").status.success());
    substitute_key(&dep, "bob", 2);
    assert_eq!(
        send(&dep, &server, "alice", "bob", "refused").status.code(),
        Some(1)
    );
    let pinned = login_fingerprint(&dep, "bob");
    let accepted = dep
        .client(&server, "alice")
        .args(["keys", "--accept", "bob"])
        .ok(b"");
    let presented = PublicKey {
        der: ring::signature::KeyPair::public_key(outsider_key())
            .as_ref()
            .to_vec(),
    }
    .fingerprint();
    assert!(
        accepted.contains(&pinned) && accepted.contains(&presented),
        "both fingerprints: {accepted}"
    );
    let own = dep
        .client(&server, "alice")
        .args(["keys", "--accept", "alice"])
        .run(b"");
    assert_eq!(own.status.code(), Some(2), "{}", stderr(&own));
    let out = send(&dep, &server, "alice", "bob", "after accepting");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        contacts_toml(&dep, "alice")["bob"]["fingerprint"].as_str(),
        Some(presented.as_str())
    );
}

#[test]
fn keys_json_lists_you_first_then_each_contact_with_fingerprint_origin_and_state() {
    let dep = Deployment::new(&["alice", "bob", "carol"]);
    let server = dep.start_server(&[]);
    assert!(send(&dep, &server, "alice", "bob;carol", "pins")
        .status
        .success());
    substitute_key(&dep, "carol", 2);
    let listed = json_of(
        &dep.client(&server, "alice")
            .args(["keys", "--json"])
            .ok(b""),
    );
    let rows = listed.as_array().expect("an array");
    assert_eq!(rows.len(), 3, "{listed}");
    assert_eq!(rows[0]["user"], "alice");
    assert_eq!(rows[0]["state"], "you");
    assert_eq!(rows[0]["fingerprint"], login_fingerprint(&dep, "alice"));
    assert_eq!(rows[1]["user"], "bob");
    assert_eq!(rows[1]["state"], "pinned");
    assert_eq!(rows[2]["user"], "carol");
    assert_eq!(rows[2]["state"], "changed");
    assert_eq!(rows[2]["fingerprint"], login_fingerprint(&dep, "carol"));
    assert!(rows[2]["presented"]
        .as_str()
        .unwrap()
        .starts_with("SHA256:"));
    for row in &rows[1..] {
        for field in ["fingerprint", "age_recipient", "origin", "pinned"] {
            assert!(row[field].is_string(), "{field} in {row}");
        }
        assert_eq!(row["origin"], "administrator");
        assert_eq!(row["serial"], 1);
    }
}

#[test]
fn a_profile_from_010_gets_an_age_key_and_a_published_record_at_first_login() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/v0.1.0");
    let dep = Deployment::from_fixture(&fixture, &["alice", "bob", "carol"]);
    let age_key = dep.profile("bob").join("age.key");
    assert!(!age_key.exists(), "0.1.0 made no age identities");
    let server = dep.start_server(&[]);
    // The fixture's passwords are its own (fixtures/README.md).
    let client = |user: &str| {
        ClientCmd::new(&dep.profile(user), &server.addr.to_string())
            .password(&format!("{user}-fixture-pw"))
    };
    client("bob").args(["inbox"]).ok(b"");
    let mode = std::fs::metadata(&age_key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let record = directory_record(&dep, "bob").expect("published at login");
    assert_eq!(
        (record.serial, record.origin),
        (1, KeyOrigin::Administrator)
    );
    assert_eq!(recipients_in(&age_key), [record.age_recipient]);
    // A second login publishes nothing new.
    client("bob").args(["inbox"]).ok(b"");
    assert_eq!(directory_record(&dep, "bob").unwrap().serial, 1);
    // Mail to bob can now be addressed; to carol, who never logged in since, it cannot.
    let out = client("alice")
        .args(["send", "--to", "bob", "--title", "to a migrated user"])
        .run(b"hi\n");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = client("alice")
        .args(["send", "--to", "carol", "--title", "not yet"])
        .run(b"hi\n");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("log in once"), "{}", stderr(&out));
}

/// A record of `user` with `serial`, `signing_key` and a fresh age identity, signed with `key`.
fn record_signed(
    user: &str,
    serial: u64,
    signing_key: Vec<u8>,
    key: &ring::signature::RsaKeyPair,
) -> SignedKeyRecord {
    let record = KeyRecord {
        user: user.to_owned(),
        serial,
        created_ms: now_millis(),
        origin: KeyOrigin::User,
        signing_key,
        age_recipient: agekey::generate().to_public().to_string(),
    };
    SignedKeyRecord::sign(&record, key, &SystemRandom::new()).unwrap()
}

fn refused(response: Response, what: &str) -> String {
    match response {
        Response::Error {
            code: ErrorCode::InvalidRequest,
            message,
        } => message,
        other => panic!("{what}: answered {other:?}"),
    }
}

#[test]
fn publish_key_is_refused_unless_it_is_the_users_own_next_record_and_the_server_keeps_serving() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&[]);
    let alice_key = user_key(&dep, "alice");
    let alice_der = ring::signature::KeyPair::public_key(&alice_key)
        .as_ref()
        .to_vec();
    let bob_key = user_key(&dep, "bob");
    let bob_der = ring::signature::KeyPair::public_key(&bob_key)
        .as_ref()
        .to_vec();
    let outsider_der = ring::signature::KeyPair::public_key(outsider_key())
        .as_ref()
        .to_vec();
    let mut garbage = record_signed("alice", 2, alice_der.clone(), &alice_key);
    garbage.record = b"\xff\xff\xff not a record".to_vec();
    let mut oversized = record_signed("alice", 2, alice_der.clone(), &alice_key);
    oversized.record = vec![0; 4096];
    let mut bad_signature = record_signed("alice", 2, alice_der.clone(), &alice_key);
    bad_signature.signature[0] ^= 1;
    let attacks = [
        (
            "bob's record, signed by bob, from alice's session",
            record_signed("bob", 2, bob_der, &bob_key),
            "own user",
        ),
        (
            "alice's record with the current serial",
            record_signed("alice", 1, alice_der.clone(), &alice_key),
            "higher serial",
        ),
        (
            "alice's record with an outsider's signing key, self-signed",
            record_signed("alice", 2, outsider_der, outsider_key()),
            "login key",
        ),
        (
            "alice's record claiming her key, signed by an outsider",
            record_signed("alice", 2, alice_der.clone(), outsider_key()),
            "signature",
        ),
        ("a bit-flipped signature", bad_signature, "signature"),
        ("garbage bytes", garbage, "cannot be decoded"),
        ("an oversized record", oversized, "at most"),
    ];
    let before = db::open(&dep.store())
        .key_records(&["alice".to_owned(), "bob".to_owned()])
        .unwrap();
    let mut session = wire::login(&dep, server.addr, "alice");
    for (what, record, said) in attacks {
        let message = refused(session.request(&Request::PublishKey { record }), what);
        assert!(message.contains(said), "{what}: {message}");
        assert!(
            message.contains("nothing was published"),
            "{what}: {message}"
        );
    }
    for names in [vec![], vec!["bob".to_owned(); MAX_KEY_RECORD_NAMES + 1]] {
        let count = names.len();
        let message = refused(
            session.request(&Request::KeyRecords { names }),
            "a KeyRecords request of the wrong size",
        );
        assert!(message.contains("1 to"), "{count}: {message}");
    }
    let after = db::open(&dep.store())
        .key_records(&["alice".to_owned(), "bob".to_owned()])
        .unwrap();
    assert_eq!(before, after, "no record changed");
    // The genuine next record is taken, and the session goes on.
    let next = record_signed("alice", 2, alice_der, &alice_key);
    assert_eq!(
        session.request(&Request::PublishKey { record: next }),
        Response::Published
    );
    assert_eq!(directory_record(&dep, "alice").unwrap().serial, 2);
    wire::assert_serves(session, &server);
}

#[test]
fn keys_runs_on_the_repls_own_session_and_a_rotation_shows_at_once() {
    use std::time::Duration;

    use forkmail_testkit::bin;
    use forkmail_testkit::pty::Terminal;

    const SHOWN: Duration = Duration::from_secs(20);
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&[]);
    assert!(send(&dep, &server, "alice", "bob", "pins bob")
        .status
        .success());
    let (state, home) = (dep.scratch("state"), dep.scratch("home"));
    let password = dep.password("alice");
    let profile = dep.profile("alice");
    let mut term = Terminal::spawn(
        &bin("forkmail"),
        &[
            "--profile",
            profile.to_str().unwrap(),
            "--server",
            &server.addr.to_string(),
        ],
        &[
            ("FORKMAIL_PASSWORD", password.as_str()),
            ("XDG_STATE_HOME", state.to_str().unwrap()),
            ("HOME", home.to_str().unwrap()),
        ],
        &["VISUAL", "EDITOR"],
    );
    assert!(term.wait_for("alice> ", SHOWN), "{}", term.screen());
    term.type_keys("keys\r");
    let bob = login_fingerprint(&dep, "bob");
    assert!(term.wait_for(&bob, SHOWN), "{}", term.screen());
    term.type_keys("keys --rotate\r");
    assert!(
        term.wait_for("published key record 2", SHOWN),
        "{}",
        term.screen()
    );
    term.type_keys("keys\r");
    assert!(
        term.wait_for("key record 2 (administrator)  you", SHOWN),
        "{}",
        term.screen()
    );
    term.type_keys("quit\r");
    let (status, screen) = term.finish(SHOWN);
    assert!(status.is_some_and(|s| s.success()), "{screen}");
    assert_eq!(directory_record(&dep, "alice").unwrap().serial, 2);
}
