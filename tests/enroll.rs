//! Enrollment with keys made on the user's machine (issue 11 item 5, PROTOCOL.md §10), against
//! the real binaries: `forkmail-keygen invite` on the server side, `forkmail enroll` on the
//! user's, the forked server between them. Every bad case is performed and then checked in
//! the store: nothing stored, and the invitation still usable wherever it should be.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use forkmail_keygen::invite::InviteToken;
use forkmail_keygen::keyfile;
use forkmail_protocol::messages::{Refusal, ServerReply};
use forkmail_protocol::now_millis;
use forkmail_store::{Invite, Store};
use forkmail_testkit::wire::{self, Wire};
use forkmail_testkit::{bin, wait_until, ClientCmd, Deployment, Server};
use serde_json::Value;

/// A refusal or an answer "within a few seconds": generous, so a loaded CI machine passes.
const PROMPT: Duration = Duration::from_secs(20);

/// What `forkmail-keygen invite --json` printed.
struct Invitation {
    token: String,
    fingerprint: String,
    expires: String,
}

fn keygen(args: &[&str]) -> Output {
    Command::new(bin("forkmail-keygen"))
        .args(args)
        .env_remove("FORKMAIL_PASSWORD")
        .output()
        .expect("run forkmail-keygen")
}

fn invite_with(dep: &Deployment, user: &str, extra: &[&str]) -> Invitation {
    let root = dep.root().to_str().unwrap();
    let out = keygen(&[&["invite", root, user, "--json"], extra].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    Invitation {
        token: json["token"].as_str().unwrap().to_owned(),
        fingerprint: json["server_fingerprint"].as_str().unwrap().to_owned(),
        expires: json["expires"].as_str().unwrap().to_owned(),
    }
}

fn invite(dep: &Deployment, user: &str) -> Invitation {
    invite_with(dep, user, &[])
}

/// A new profile directory beside the deployment, not yet made.
fn new_profile(dep: &Deployment, name: &str) -> PathBuf {
    dep.scratch(&format!("enrolled-{name}"))
}

fn password(user: &str) -> String {
    format!("{user}'s own password")
}

/// `forkmail enroll` as `user` with `token`, checking the server against `fingerprint`.
fn enroll(server: &Server, profile: &Path, user: &str, token: &str, fingerprint: &str) -> Output {
    ClientCmd::new(profile, &server.addr.to_string())
        .password(&password(user))
        .args([
            "enroll",
            "--server-fingerprint",
            fingerprint,
            "--user",
            user,
            "--invite",
            token,
        ])
        .run(b"")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts a failure with exit status 1 whose message contains `says`.
fn assert_fails(out: &Output, says: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", stderr(out));
    assert!(
        stderr(out).contains(says),
        "expected {says:?} in: {}",
        stderr(out)
    );
}

fn store(dep: &Deployment) -> Box<dyn Store> {
    forkmail_store::open(&dep.store()).expect("open the deployment's store")
}

/// The stored invitation of `token`.
fn stored_invite(dep: &Deployment, token: &str) -> Invite {
    let hash = InviteToken::parse(token).unwrap().hash();
    store(dep)
        .invites(now_millis())
        .unwrap()
        .into_iter()
        .find(|i| i.token_hash == hash)
        .expect("the invitation is stored")
}

fn users(dep: &Deployment) -> u64 {
    store(dep).counts().unwrap().users
}

/// Nothing of a failed enrollment is left: no user, no profile, no staging directory.
fn assert_nothing_stored(dep: &Deployment, profile: &Path, users_before: u64, user: &str) {
    assert_eq!(users(dep), users_before, "no user was stored");
    assert!(store(dep).find_user(user).unwrap().is_none());
    assert!(
        !profile.exists(),
        "no half profile at {}",
        profile.display()
    );
    let parent = profile.parent().unwrap();
    let leftovers: Vec<_> = fs::read_dir(parent)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains(".enrolling-"))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn an_invited_user_enrolls_with_keys_made_on_their_machine_and_then_mails() {
    let dep = Deployment::new(&["alice"]);
    let server = dep.start_server(&[]);
    let invitation = invite(&dep, "carol");
    let profile = new_profile(&dep, "carol");
    let out = enroll(
        &server,
        &profile,
        "carol",
        &invitation.token,
        &invitation.fingerprint,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("enrolled carol on "),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The profile: keys private, the server key pinned is the deployment's.
    assert_eq!(mode(&profile), 0o700);
    assert_eq!(mode(&profile.join("user.key")), 0o600);
    assert_eq!(mode(&profile.join("age.key")), 0o600);
    let age_key = fs::read_to_string(profile.join("age.key")).unwrap();
    assert!(
        age_key.lines().any(|l| l.starts_with("AGE-SECRET-KEY-1")),
        "{age_key}"
    );
    let pinned = keyfile::load_public_key(&profile.join("server.pub")).unwrap();
    assert_eq!(pinned.fingerprint(), invitation.fingerprint);
    let profile_toml = fs::read_to_string(profile.join("profile.toml")).unwrap();
    assert!(profile_toml.contains("user = \"carol\""), "{profile_toml}");
    // The store: carol with the key her machine made, the invitation burnt.
    let carol = store(&dep)
        .find_user("carol")
        .unwrap()
        .expect("carol exists");
    let user_key = keyfile::load_any_public_key(&profile.join("user.key")).unwrap();
    assert_eq!(carol.public_key, user_key.der);
    assert!(stored_invite(&dep, &invitation.token).used_ms.is_some());
    assert!(server.log().contains("enrolled carol"), "{}", server.log());
    // Then carol is a user like any other.
    let carol_cmd =
        || ClientCmd::new(&profile, &server.addr.to_string()).password(&password("carol"));
    let inbox = carol_cmd().args(["inbox"]).ok(b"");
    assert!(inbox.contains("0 messages"), "{inbox}");
    let sent = dep
        .client(&server, "alice")
        .args(["send", "--to", "carol", "--title", "welcome"])
        .ok(b"glad you made your own keys\n");
    assert!(sent.starts_with("sent message "), "{sent}");
    let inbox = carol_cmd().args(["inbox"]).ok(b"");
    assert!(inbox.contains("welcome"), "{inbox}");
    let sent = carol_cmd()
        .args(["send", "--to", "alice", "--title", "thanks"])
        .ok(b"hello alice\n");
    assert!(sent.starts_with("sent message "), "{sent}");
}

#[test]
fn a_wrong_token_is_refused_by_the_parent_and_stores_nothing() {
    let dep = Deployment::new(&["alice"]);
    let server = dep.start_server(&[]);
    let invitation = invite(&dep, "carol");
    let before = users(&dep);
    let profile = new_profile(&dep, "carol");
    let wrong = InviteToken::generate().unwrap().to_text();
    let out = enroll(&server, &profile, "carol", &wrong, &invitation.fingerprint);
    assert_fails(&out, "the server knows no such invitation");
    assert_nothing_stored(&dep, &profile, before, "carol");
    assert_eq!(server.sessions_forked(), 0, "refused before any fork");
    // A malformed token never leaves the machine: a usage error.
    let out = enroll(
        &server,
        &profile,
        "carol",
        "fmi-short",
        &invitation.fingerprint,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--invite"), "{}", stderr(&out));
    // The real one still works.
    assert_eq!(stored_invite(&dep, &invitation.token).used_ms, None);
    let out = enroll(
        &server,
        &profile,
        "carol",
        &invitation.token,
        &invitation.fingerprint,
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn an_expired_token_is_refused_and_stores_nothing() {
    let dep = Deployment::new(&["alice"]);
    let server = dep.start_server(&[]);
    let invitation = invite_with(&dep, "carol", &["--ttl", "1s"]);
    let expires = chrono::DateTime::parse_from_rfc3339(&invitation.expires).unwrap();
    assert!(
        wait_until(PROMPT, || chrono::Utc::now() > expires),
        "the invitation never expired"
    );
    let before = users(&dep);
    let profile = new_profile(&dep, "carol");
    let out = enroll(
        &server,
        &profile,
        "carol",
        &invitation.token,
        &invitation.fingerprint,
    );
    assert_fails(&out, "the invitation has expired");
    assert_nothing_stored(&dep, &profile, before, "carol");
    assert_eq!(stored_invite(&dep, &invitation.token).used_ms, None);
}

#[test]
fn a_used_token_is_refused_the_second_time_and_stores_nothing_more() {
    let dep = Deployment::new(&["alice"]);
    let server = dep.start_server(&[]);
    let invitation = invite(&dep, "carol");
    let first = new_profile(&dep, "carol");
    let out = enroll(
        &server,
        &first,
        "carol",
        &invitation.token,
        &invitation.fingerprint,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let after_first = users(&dep);
    let carol = store(&dep).find_user("carol").unwrap();
    let second = new_profile(&dep, "carol-again");
    let out = enroll(
        &server,
        &second,
        "carol",
        &invitation.token,
        &invitation.fingerprint,
    );
    assert_fails(&out, "the invitation was already used");
    assert_eq!(users(&dep), after_first);
    assert!(!second.exists());
    // The first enrollment's user and key are untouched.
    assert_eq!(store(&dep).find_user("carol").unwrap(), carol);
}

#[test]
fn a_token_for_another_name_is_refused_and_stays_usable_for_its_own() {
    let dep = Deployment::new(&["alice"]);
    let server = dep.start_server(&[]);
    let invitation = invite(&dep, "carol");
    let before = users(&dep);
    let profile = new_profile(&dep, "dave");
    let out = enroll(
        &server,
        &profile,
        "dave",
        &invitation.token,
        &invitation.fingerprint,
    );
    assert_fails(&out, "the invitation was issued for another user name");
    assert_nothing_stored(&dep, &profile, before, "dave");
    assert_eq!(stored_invite(&dep, &invitation.token).used_ms, None);
    let profile = new_profile(&dep, "carol");
    let out = enroll(
        &server,
        &profile,
        "carol",
        &invitation.token,
        &invitation.fingerprint,
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_fingerprint_mismatch_sends_nothing_and_the_invite_stays_usable() {
    let dep = Deployment::new(&["alice"]);
    let server = dep.start_server(&[]);
    let invitation = invite(&dep, "carol");
    // The fingerprint of another deployment's server: what a man in the middle would present.
    let other = Deployment::new(&["alice"]);
    let wrong = keyfile::load_public_key(&other.server_dir().join("server.pub"))
        .unwrap()
        .fingerprint();
    let before = users(&dep);
    let profile = new_profile(&dep, "carol");
    let out = enroll(&server, &profile, "carol", &invitation.token, &wrong);
    assert_fails(&out, "nothing was sent and the invitation is still unused");
    // Both fingerprints are named, so the user can compare.
    assert!(stderr(&out).contains(&wrong), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&invitation.fingerprint),
        "{}",
        stderr(&out)
    );
    assert_nothing_stored(&dep, &profile, before, "carol");
    // The server never received an enrollment: only the hello, which the client then left.
    assert!(
        wait_until(PROMPT, || server.children().is_empty()),
        "{:?}",
        server.children()
    );
    assert!(
        !server.log().contains("enrollment received"),
        "{}",
        server.log()
    );
    assert_eq!(stored_invite(&dep, &invitation.token).used_ms, None);
    let out = enroll(
        &server,
        &profile,
        "carol",
        &invitation.token,
        &invitation.fingerprint,
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_name_that_became_a_user_cannot_enroll_and_keygen_invites_no_existing_user() {
    let dep = Deployment::new(&["alice"]);
    let server = dep.start_server(&[]);
    let invitation = invite(&dep, "dave");
    let root = dep.root().to_str().unwrap().to_owned();
    let added = Command::new(bin("forkmail-keygen"))
        .args(["add-user", &root, "dave"])
        .env("FORKMAIL_PASSWORD", "made by the administrator")
        .output()
        .unwrap();
    assert!(added.status.success(), "{}", stderr(&added));
    let dave = store(&dep).find_user("dave").unwrap();
    let before = users(&dep);
    let profile = new_profile(&dep, "dave");
    let out = enroll(
        &server,
        &profile,
        "dave",
        &invitation.token,
        &invitation.fingerprint,
    );
    assert_fails(&out, "a user of this name already exists");
    assert_eq!(users(&dep), before);
    assert!(!profile.exists());
    assert_eq!(store(&dep).find_user("dave").unwrap(), dave, "untouched");
    assert_eq!(stored_invite(&dep, &invitation.token).used_ms, None);
    let out = keygen(&["invite", &root, "alice"]);
    assert_fails(&out, "user alice already exists");
    assert!(out.stdout.is_empty(), "no token printed");
}

#[test]
fn an_existing_profile_is_never_overwritten() {
    let dep = Deployment::new(&["alice"]);
    let server = dep.start_server(&[]);
    let invitation = invite(&dep, "carol");
    let profile = new_profile(&dep, "carol");
    fs::create_dir(&profile).unwrap();
    fs::write(profile.join("notes.txt"), "mine").unwrap();
    let out = enroll(
        &server,
        &profile,
        "carol",
        &invitation.token,
        &invitation.fingerprint,
    );
    assert_fails(&out, "the profile directory exists and is not empty");
    assert_eq!(
        fs::read_to_string(profile.join("notes.txt")).unwrap(),
        "mine"
    );
    assert!(store(&dep).find_user("carol").unwrap().is_none());
    assert_eq!(stored_invite(&dep, &invitation.token).used_ms, None);
    assert_eq!(server.sessions_forked(), 0, "nothing was sent");
    // An empty directory is taken.
    fs::remove_file(profile.join("notes.txt")).unwrap();
    let out = enroll(
        &server,
        &profile,
        "carol",
        &invitation.token,
        &invitation.fingerprint,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(&profile.join("user.key")), 0o600);
}

#[test]
fn a_flood_of_bogus_enrollment_hellos_forks_nothing() {
    // Nobody without a key or an invitation may hold a slot: every hello with a made-up proof
    // is answered by the parent (after at most a key load), and no session is forked.
    const HELLOS: usize = 60;
    let dep = Deployment::new(&["alice"]);
    let server = dep.start_server(&[]);
    let _pending = invite(&dep, "carol");
    let mut wires: Vec<Wire> = (0..HELLOS)
        .map(|i| {
            let mut w = Wire::connect(server.addr);
            let user = if i % 2 == 0 { "carol" } else { "alice" };
            w.send_frame(&wire::bogus_invited_hello(user)).unwrap();
            w
        })
        .collect();
    for w in &mut wires {
        let reply = w.recv_frame().expect("a refusal");
        assert_eq!(
            wire::server_reply(&reply),
            ServerReply::Refused(Refusal::InviteUnknown)
        );
    }
    assert_eq!(server.sessions_forked(), 0, "{}", server.log());
    wire::assert_serves(wire::login(&dep, server.addr, "alice"), &server);
}

#[test]
fn keygen_invite_prints_one_token_line_or_json_and_refuses_bad_input() {
    let dep = Deployment::new(&["alice"]);
    let root = dep.root().to_str().unwrap().to_owned();
    // Plain: exactly one line, the token.
    let out = keygen(&["invite", &root, "carol"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "{text:?}");
    assert!(text.ends_with('\n'));
    let token = InviteToken::parse(text.trim_end()).expect("a token");
    assert_eq!(text.trim_end(), token.to_text());
    // JSON: the four fields; the expiry 24 h ahead by default, in RFC 3339 UTC; the
    // fingerprint the server's own.
    let before = chrono::Utc::now();
    let out = keygen(&["invite", &root, "dave", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let object = json.as_object().unwrap();
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["expires", "server_fingerprint", "token", "user"]);
    assert_eq!(json["user"], "dave");
    InviteToken::parse(json["token"].as_str().unwrap()).unwrap();
    let expires_text = json["expires"].as_str().unwrap();
    assert!(expires_text.ends_with('Z'), "{expires_text}");
    let expires = chrono::DateTime::parse_from_rfc3339(expires_text).unwrap();
    let ahead = expires.signed_duration_since(before).num_minutes();
    assert!(
        (24 * 60 - 2..=24 * 60 + 2).contains(&ahead),
        "{ahead} minutes"
    );
    let fingerprint = keyfile::load_public_key(&dep.server_dir().join("server.pub"))
        .unwrap()
        .fingerprint();
    assert_eq!(json["server_fingerprint"], fingerprint.as_str());
    // --ttl moves the expiry.
    let json: Value =
        serde_json::from_slice(&keygen(&["invite", &root, "erin", "--ttl", "7d", "--json"]).stdout)
            .unwrap();
    let expires = chrono::DateTime::parse_from_rfc3339(json["expires"].as_str().unwrap()).unwrap();
    let days = expires.signed_duration_since(before).num_hours();
    assert!((7 * 24 - 1..=7 * 24 + 1).contains(&days), "{days} hours");
    // Only hashes are stored: no token text or bytes in the database.
    let stored = store(&dep).invites(now_millis()).unwrap();
    assert_eq!(stored.len(), 3);
    assert!(stored.iter().any(|i| i.token_hash == token.hash()));
    let db = fs::read(dep.database()).unwrap();
    let wal = fs::read(dep.database().with_extension("db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(32).any(|w| w == token.bytes()),
            "raw token stored"
        );
        assert!(
            !bytes
                .windows(20)
                .any(|w| w == &token.to_text().as_bytes()[4..24]),
            "token text stored"
        );
    }
    // Bad NAME, bad --ttl: clear errors, nothing stored, no token printed.
    for (args, says, code) in [
        (vec!["invite", &root, "Bad Name"], "user \"Bad Name\"", 1),
        (
            vec!["invite", &root, "carol", "--ttl", "24"],
            "not a duration",
            2,
        ),
        (
            vec!["invite", &root, "carol", "--ttl", "0s"],
            "at least 1 s",
            2,
        ),
        (
            vec!["invite", &root, "carol", "--ttl", "1w"],
            "not a duration",
            2,
        ),
    ] {
        let out = keygen(&args);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let missing = dep.scratch("no-deployment-here");
    let out = keygen(&["invite", missing.to_str().unwrap(), "carol"]);
    assert_fails(&out, "no deployment here");
    assert_eq!(store(&dep).invites(now_millis()).unwrap().len(), 3);
}

#[test]
fn enrollment_hellos_count_against_the_names_session_cap() {
    // One person with a token cannot hold every slot either: the cap applies to the name.
    let dep = Deployment::new(&["alice"]);
    let server = dep.start_server(&["--max-sessions-per-user", "1"]);
    let invitation = invite(&dep, "carol");
    let hash = InviteToken::parse(&invitation.token).unwrap().hash();
    let mut first = wire::enroll_hello(server.addr, "carol", &hash);
    let reply = first.wire.recv_frame().expect("the server's hello");
    assert!(
        matches!(wire::server_reply(&reply), ServerReply::HelloWithKey(_)),
        "the first is admitted"
    );
    let mut second = wire::enroll_hello(server.addr, "carol", &hash);
    let reply = second.wire.recv_frame().expect("a refusal");
    assert_eq!(
        wire::server_reply(&reply),
        ServerReply::Refused(Refusal::TooManySessions { limit: 1 })
    );
    drop(first);
    // Nothing was enrolled by either, and the invitation is still good.
    assert!(store(&dep).find_user("carol").unwrap().is_none());
    assert!(wait_until(PROMPT, || server.children().is_empty()));
    let profile = new_profile(&dep, "carol");
    let out = enroll(
        &server,
        &profile,
        "carol",
        &invitation.token,
        &invitation.fingerprint,
    );
    assert!(out.status.success(), "{}", stderr(&out));
}
