//! Login tickets and password re-hashing (issue 12, PROTOCOL.md §11), against the real forked
//! server: a one-shot command after a password login presents the ticket with the user key and
//! the server runs no password hash; a ticket is refused without the user's key, after its
//! lifetime, after a lock-out and after `forkmail logout`; the client keeps it 0600 where the
//! issue says and falls back to the password when it is refused. PBKDF2 hashes from before
//! Argon2id keep verifying and are re-hashed at the next password login (a 0.1.0 deployment's
//! too), and Argon2id hashes verify.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use forkmail_keygen::password::{HashPolicy, Kdf, PasswordHash};
use forkmail_protocol::{AuthResult, Request, Response, TICKET_LEN};
use forkmail_testkit::client::ClientCmd;
use forkmail_testkit::{db, wait_until, wire, Deployment, Server};

const ACCEPTED_BY_TICKET: &str = "login ticket accepted; password not tested";

/// The ticket files in `dir` (a profile, or `$XDG_RUNTIME_DIR/forkmail`).
fn ticket_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("ticket-"))
        })
        .collect()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A password login over the wire; returns the ticket the server issued with it.
fn ticket_for(dep: &Deployment, server: &Server, user: &str) -> [u8; TICKET_LEN] {
    let (session, result) = wire::hello(dep, server.addr, user)
        .finish(dep, user)
        .password_login(dep, user, &dep.password(user));
    drop(session);
    match result {
        AuthResult::AcceptedWithTicket {
            ticket,
            lifetime_secs,
        } => {
            assert!(lifetime_secs > 0);
            ticket
        }
        other => panic!("a password login should be given a ticket, got {other:?}"),
    }
}

/// A ticket login of `user` (hello and transcript signature by `user`'s own key).
fn ticket_login(
    dep: &Deployment,
    server: &Server,
    user: &str,
    ticket: &[u8; TICKET_LEN],
) -> AuthResult {
    let key = wire::user_key(dep, user);
    let (_, result) = wire::hello(dep, server.addr, user)
        .finish(dep, user)
        .ticket_login(&key, ticket);
    result
}

#[test]
fn a_second_command_logs_in_with_the_ticket_and_the_server_runs_no_password_hash() {
    let dep = Deployment::new(&["alice"]);
    let server = dep.start_server(&[]);
    dep.client(&server, "alice").args(["inbox"]).ok(b"");
    let files = ticket_files(&dep.profile("alice"));
    assert_eq!(files.len(), 1, "one ticket file in the profile: {files:?}");
    assert!(!server.log().contains(ACCEPTED_BY_TICKET));
    // A wrong password is never looked at: the ticket and the key log in.
    let out = ClientCmd::new(&dep.profile("alice"), &server.addr.to_string())
        .password("not alice's password")
        .args(["inbox"])
        .run(b"");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        server.wait_for_log(ACCEPTED_BY_TICKET, Duration::from_secs(10)),
        "the server says the password was not tested: {}",
        server.log()
    );
    // Without FORKMAIL_PASSWORD and without a terminal, a password prompt would fail: nothing
    // asks for one.
    let out = ClientCmd::new(&dep.profile("alice"), &server.addr.to_string())
        .args(["inbox"])
        .run(b"");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nothing counted against the account by the wrong password.
    assert_eq!(
        db::open(&dep.store()).login_failures("alice").unwrap(),
        None
    );
}

#[test]
fn the_ticket_file_is_0600_in_the_runtime_dir_and_named_for_the_user_and_server() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&[]);
    let runtime = dep.scratch("run-user");
    fs::create_dir(&runtime).unwrap();
    fs::set_permissions(&runtime, fs::Permissions::from_mode(0o700)).unwrap();
    for user in ["alice", "bob"] {
        dep.client(&server, user)
            .env("XDG_RUNTIME_DIR", &runtime)
            .args(["inbox"])
            .ok(b"");
    }
    let dir = runtime.join("forkmail");
    assert_eq!(mode(&dir), 0o700);
    let files = ticket_files(&dir);
    assert_eq!(files.len(), 2, "one per user: {files:?}");
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    let fingerprint =
        forkmail_keygen::keyfile::load_public_key(&dep.profile("alice").join("server.pub"))
            .unwrap();
    let short: String = ring::digest::digest(&ring::digest::SHA256, &fingerprint.der).as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(dir.join(format!("ticket-alice-{short}.txt")).exists());
    assert!(dir.join(format!("ticket-bob-{short}.txt")).exists());
    assert!(
        ticket_files(&dep.profile("alice")).is_empty(),
        "not in the profile when XDG_RUNTIME_DIR is set"
    );
    // The file holds the ticket, which the store does not: it keeps only its SHA-256.
    let text = fs::read_to_string(dir.join(format!("ticket-alice-{short}.txt"))).unwrap();
    let hex = text.lines().nth(1).unwrap();
    assert_eq!(hex.len(), 2 * TICKET_LEN);
    let raw = fs::read(dep.database()).unwrap();
    let ticket: Vec<u8> = (0..TICKET_LEN)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    assert!(
        !raw.windows(TICKET_LEN).any(|w| w == ticket),
        "the database never holds a ticket itself"
    );
}

#[test]
fn a_ticket_is_refused_without_the_users_key() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&[]);
    let ticket = ticket_for(&dep, &server, "alice");
    assert_eq!(
        ticket_login(&dep, &server, "alice", &ticket),
        AuthResult::Accepted
    );
    // Someone holding alice's ticket file but not her key: the hello they can sign (with any
    // other key) is refused before a session even starts.
    let refused = wire::hello_signed(server.addr, "alice", wire::outsider_key(), 4)
        .wire
        .recv_frame()
        .unwrap();
    assert!(
        matches!(
            wire::server_reply(&refused),
            forkmail_protocol::ServerReply::Refused(forkmail_protocol::Refusal::UnknownKey)
        ),
        "{:?}",
        wire::server_reply(&refused)
    );
    // And past the hello, the transcript signature must be alice's too: bob's key over alice's
    // session with alice's ticket is denied, as is a fresh key's.
    let bobs = wire::user_key(&dep, "bob");
    for key in [&bobs, wire::outsider_key()] {
        let (_, result) = wire::hello(&dep, server.addr, "alice")
            .finish(&dep, "alice")
            .ticket_login(key, &ticket);
        assert_eq!(result, AuthResult::Denied);
    }
    // A ticket is its user's: bob, with his own key, cannot use alice's.
    assert_eq!(
        ticket_login(&dep, &server, "bob", &ticket),
        AuthResult::Denied
    );
    // None of this was counted as a password failure, and alice's ticket still works.
    assert_eq!(
        db::open(&dep.store()).login_failures("alice").unwrap(),
        None
    );
    assert_eq!(
        ticket_login(&dep, &server, "alice", &ticket),
        AuthResult::Accepted
    );
}

#[test]
fn a_ticket_is_refused_after_its_lifetime() {
    let dep = Deployment::new(&["alice"]);
    let server = dep.start_server(&["--ticket-lifetime", "1"]);
    let (_, result) = wire::hello(&dep, server.addr, "alice")
        .finish(&dep, "alice")
        .password_login(&dep, "alice", &dep.password("alice"));
    let AuthResult::AcceptedWithTicket {
        ticket,
        lifetime_secs,
    } = result
    else {
        panic!("no ticket: {result:?}");
    };
    assert_eq!(lifetime_secs, 1);
    // Past the lifetime (generously): the server refuses it.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        ticket_login(&dep, &server, "alice", &ticket),
        AuthResult::Denied
    );
}

#[test]
fn no_tickets_with_a_lifetime_of_zero() {
    let dep = Deployment::new(&["alice"]);
    let server = dep.start_server(&["--ticket-lifetime", "0"]);
    let (_, result) = wire::hello(&dep, server.addr, "alice")
        .finish(&dep, "alice")
        .password_login(&dep, "alice", &dep.password("alice"));
    assert_eq!(result, AuthResult::Accepted);
    dep.client(&server, "alice").args(["inbox"]).ok(b"");
    assert!(ticket_files(&dep.profile("alice")).is_empty());
}

#[test]
fn a_ticket_is_refused_after_a_lock_out() {
    let dep = Deployment::new(&["alice"]);
    let server = dep.start_server(&["--lockout-after", "1", "--lockout-secs", "1"]);
    let ticket = ticket_for(&dep, &server, "alice");
    // One wrong password (with alice's key) locks the account...
    let (_, result) = wire::hello(&dep, server.addr, "alice")
        .finish(&dep, "alice")
        .password_login(&dep, "alice", "wrong");
    assert_eq!(result, AuthResult::Denied);
    // ... and while it is locked, the ticket does not get around the lock ...
    assert!(matches!(
        ticket_login(&dep, &server, "alice", &ticket),
        AuthResult::Locked { .. }
    ));
    // ... nor after it: the lock-out revoked it.
    assert!(wait_until(Duration::from_secs(10), || {
        db::open(&dep.store())
            .login_failures("alice")
            .unwrap()
            .is_none_or(|f| f.locked_until_ms <= forkmail_protocol::now_millis())
    }));
    assert_eq!(
        ticket_login(&dep, &server, "alice", &ticket),
        AuthResult::Denied
    );
    assert!(
        server.log().contains("login tickets revoked"),
        "{}",
        server.log()
    );
}

#[test]
fn a_ticket_is_refused_after_logout_and_the_client_falls_back_to_the_password() {
    let dep = Deployment::new(&["alice"]);
    let server = dep.start_server(&[]);
    let profile = dep.profile("alice");
    dep.client(&server, "alice").args(["inbox"]).ok(b"");
    let file = ticket_files(&profile).pop().expect("a ticket file");
    let kept = fs::read(&file).unwrap();
    let out = dep.client(&server, "alice").args(["logout"]).ok(b"");
    assert!(out.starts_with("logged out"), "{out}");
    assert!(!file.exists(), "logout deletes the ticket file");
    assert!(server.log().contains("logout: "), "{}", server.log());
    // The old ticket, put back: the server refuses it, the client deletes it and logs in with
    // the password instead (a wrong one here: the login fails, saying so).
    fs::write(&file, &kept).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    let out = ClientCmd::new(&profile, &server.addr.to_string())
        .password("wrong")
        .args(["inbox"])
        .run(b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("login failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!file.exists(), "a refused ticket is deleted");
    // Put back once more, with the right password: transparent, and a new ticket is saved.
    fs::write(&file, &kept).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    dep.client(&server, "alice").args(["inbox"]).ok(b"");
    let now = ticket_files(&profile);
    assert_eq!(now.len(), 1);
    assert_ne!(fs::read(&now[0]).unwrap(), kept, "a new ticket");
}

#[test]
fn logout_on_the_wire_revokes_every_ticket_of_the_user_only() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&[]);
    let first = ticket_for(&dep, &server, "alice");
    let second = ticket_for(&dep, &server, "alice");
    let bobs = ticket_for(&dep, &server, "bob");
    let mut session = wire::login(&dep, server.addr, "alice");
    assert_eq!(session.request(&Request::Logout), Response::LoggedOut);
    assert_eq!(session.request(&Request::Quit), Response::Goodbye);
    for ticket in [first, second] {
        assert_eq!(
            ticket_login(&dep, &server, "alice", &ticket),
            AuthResult::Denied
        );
    }
    assert_eq!(
        ticket_login(&dep, &server, "bob", &bobs),
        AuthResult::Accepted
    );
}

/// `user`'s stored hash as the store has it now.
fn stored(dep: &Deployment, user: &str) -> PasswordHash {
    let record = db::open(&dep.store()).find_user(user).unwrap().unwrap();
    PasswordHash::from_stored(user, &record.password).unwrap()
}

#[test]
fn a_pbkdf2_password_is_rehashed_to_argon2id_at_login_and_both_verify() {
    let dep = Deployment::new(&["alice", "bob"]);
    assert_eq!(stored(&dep, "alice").kdf, Kdf::Pbkdf2Sha512);
    dep.set_password_policy(&HashPolicy::DEFAULT).unwrap();
    // Tickets off: every login below tests the password.
    let server = dep.start_server(&["--ticket-lifetime", "0"]);
    // A wrong password re-hashes nothing.
    let (_, result) = wire::hello(&dep, server.addr, "alice")
        .finish(&dep, "alice")
        .password_login(&dep, "alice", "wrong");
    assert_eq!(result, AuthResult::Denied);
    assert_eq!(stored(&dep, "alice").kdf, Kdf::Pbkdf2Sha512);
    // The old PBKDF2 hash verifies, and is replaced by an Argon2id one.
    dep.client(&server, "alice").args(["inbox"]).ok(b"");
    let now = stored(&dep, "alice");
    assert_eq!(now.kdf.name(), "argon2id-m19456-p1");
    assert_eq!(now.iterations.get(), 2);
    assert!(now.verify(&dep.password("alice")));
    assert!(
        server
            .log()
            .contains("password re-hashed from pbkdf2-sha512"),
        "{}",
        server.log()
    );
    assert_eq!(
        stored(&dep, "bob").kdf,
        Kdf::Pbkdf2Sha512,
        "bob has not logged in"
    );
    // The Argon2id hash verifies at the next login; a wrong password is still refused.
    dep.client(&server, "alice").args(["inbox"]).ok(b"");
    let out = ClientCmd::new(&dep.profile("alice"), &server.addr.to_string())
        .password("wrong")
        .args(["inbox"])
        .run(b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stored(&dep, "alice"),
        now,
        "re-hashed once, not at every login"
    );
}

#[test]
fn a_rehash_keeps_the_users_tickets() {
    let dep = Deployment::new(&["alice"]);
    let server = dep.start_server(&[]);
    let ticket = ticket_for(&dep, &server, "alice");
    drop(server);
    dep.set_password_policy(&HashPolicy {
        kdf: Kdf::argon2id(64, 1).unwrap(),
        iterations: std::num::NonZeroU32::MIN,
    })
    .unwrap();
    let server = dep.start_server(&[]);
    ticket_for(&dep, &server, "alice");
    assert_eq!(stored(&dep, "alice").kdf.name(), "argon2id-m64-p1");
    assert_eq!(
        ticket_login(&dep, &server, "alice", &ticket),
        AuthResult::Accepted
    );
}

#[test]
fn the_010_fixture_users_are_rehashed_at_their_next_login() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/v0.1.0");
    let dep = Deployment::from_fixture(&fixture, &["alice", "bob", "carol"]);
    dep.set_password_policy(&HashPolicy::DEFAULT).unwrap();
    let server = dep.start_server(&[]);
    assert_eq!(
        stored(&dep, "alice").kdf,
        Kdf::Pbkdf2Sha512,
        "as 0.1.0 made it"
    );
    let (_, result) = wire::hello(&dep, server.addr, "alice")
        .finish(&dep, "alice")
        .login_as(&dep, "alice", "alice-fixture-pw");
    assert_eq!(result, AuthResult::Accepted);
    let alice = stored(&dep, "alice");
    assert_eq!(alice.kdf, HashPolicy::DEFAULT.kdf);
    assert!(alice.verify("alice-fixture-pw"));
    assert_eq!(stored(&dep, "bob").kdf, Kdf::Pbkdf2Sha512);
}
