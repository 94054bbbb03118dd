//! Every security claim, demonstrated by performing the attack against the real forked server.
//! After each attack the server must still serve and the stored mail must be intact.
//! The catalogue and its defences are mapped in docs/SECURITY.md.

use std::io::Write;
use std::net::Shutdown;
use std::time::Duration;

use forkmail_protocol::frame::encode_frame;
use forkmail_protocol::messages::{
    AuthResult, AuthedClientHello, ClientHello, Draft, ErrorCode, Refusal, Request, Response,
    ServerReply,
};
use forkmail_protocol::{decode, now_millis, PROTOCOL_VERSION};
use forkmail_testkit::wire::{self, Wire};
use forkmail_testkit::{bin, copy_tree, count_rows, wait_until, DeployOptions, Deployment, Server};
use serde::Serialize;

const CLOSE: Duration = Duration::from_secs(15);

fn draft(to: &[&str], title: &str, body: &str) -> Draft {
    Draft {
        to: to.iter().map(|s| s.to_string()).collect(),
        title: title.into(),
        body: body.into(),
    }
}

/// The server still serves a normal session, and no child is left behind once it ends.
fn assert_healthy(dep: &Deployment, server: &Server) {
    wire::assert_serves(wire::login(dep, server.addr, "alice"), server);
}

fn setup() -> (Deployment, Server) {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&[]);
    (dep, server)
}

// 1. Replay ---------------------------------------------------------------------------------

#[test]
fn replay_whole_recorded_session_on_new_connection_is_refused() {
    let (dep, server) = setup();
    let mut s = wire::login(&dep, server.addr, "alice");
    assert!(matches!(
        s.request(&Request::Send(draft(&["bob"], "once", "x"))),
        Response::Sent { .. }
    ));
    assert_eq!(s.request(&Request::Quit), Response::Goodbye);
    let recorded = s.wire.sent.clone();

    let mut replay = Wire::connect(server.addr);
    for frame in &recorded {
        let _ = replay.send_frame(frame);
    }
    let reply = wire::server_reply(&replay.recv_frame().expect("refusal"));
    assert_eq!(reply, ServerReply::Refused(Refusal::Replayed));
    assert!(replay.closed_by_server(CLOSE));
    assert_eq!(count_rows(&dep.database(), "messages"), 1);
    assert_healthy(&dep, &server);
}

#[test]
fn replay_sealed_frame_inside_its_session_does_not_store_twice() {
    let (dep, server) = setup();
    let mut s = wire::login(&dep, server.addr, "alice");
    let frame = s.seal(&Request::Send(draft(&["bob"], "pay once", "10 EUR")));
    s.wire.send_frame(&frame).unwrap();
    assert!(matches!(s.response(), Response::Sent { .. }));
    s.wire.send_frame(&frame).unwrap();
    assert!(s.wire.closed_by_server(CLOSE));
    assert_eq!(count_rows(&dep.database(), "messages"), 1);
    assert_healthy(&dep, &server);
}

#[test]
fn replay_recorded_hello_to_a_different_child_is_refused() {
    let (dep, server) = setup();
    let first = wire::hello(&dep, server.addr, "alice");
    let recorded = first.hello.clone();
    // The first session stays open, so its child is alive and the replay gets another child.
    let _first = first.finish(&dep, "alice");
    assert!(wait_until(Duration::from_secs(5), || server
        .children()
        .len()
        == 1));
    let mut replay = Wire::connect(server.addr);
    replay.send_frame(&recorded).unwrap();
    let reply = wire::server_reply(&replay.recv_frame().expect("refusal"));
    assert_eq!(reply, ServerReply::Refused(Refusal::Replayed));
}

#[test]
fn reordered_frames_end_the_session() {
    let (dep, server) = setup();
    let mut s = wire::login(&dep, server.addr, "alice");
    let first = s.seal(&Request::Send(draft(&["bob"], "first", "1")));
    let second = s.seal(&Request::Send(draft(&["bob"], "second", "2")));
    s.wire.send_frame(&second).unwrap();
    s.wire.send_frame(&first).unwrap();
    assert!(s.wire.closed_by_server(CLOSE));
    assert_eq!(count_rows(&dep.database(), "messages"), 0);
    assert_healthy(&dep, &server);
}

#[test]
fn dropped_frame_ends_the_session() {
    let (dep, server) = setup();
    let mut s = wire::login(&dep, server.addr, "alice");
    let _dropped = s.seal(&Request::Inbox);
    let next = s.seal(&Request::Send(draft(&["bob"], "after a gap", "x")));
    s.wire.send_frame(&next).unwrap();
    assert!(s.wire.closed_by_server(CLOSE));
    assert_eq!(count_rows(&dep.database(), "messages"), 0);
}

#[test]
fn duplicated_frame_ends_the_session() {
    let (dep, server) = setup();
    let mut s = wire::login(&dep, server.addr, "alice");
    let frame = s.seal(&Request::Send(draft(&["bob"], "dup", "x")));
    s.wire
        .send_raw(&[encode_frame(&frame), encode_frame(&frame)].concat())
        .unwrap();
    assert!(matches!(s.response(), Response::Sent { .. }));
    assert!(s.wire.closed_by_server(CLOSE));
    assert_eq!(count_rows(&dep.database(), "messages"), 1);
}

#[test]
fn server_frame_reflected_back_ends_the_session() {
    let (dep, server) = setup();
    let mut s = wire::login(&dep, server.addr, "alice");
    s.request(&Request::Inbox);
    let reflected = s.wire.received.last().unwrap().clone();
    s.wire.send_frame(&reflected).unwrap();
    assert!(s.wire.closed_by_server(CLOSE));
    assert_healthy(&dep, &server);
}

// 2. Tampering ------------------------------------------------------------------------------

/// Sends a Send request whose framed bytes were altered by `tamper`, then closes our write side
/// so a frame made longer by the tampering ends in EOF rather than a wait.
fn send_tampered(dep: &Deployment, server: &Server, tamper: impl FnOnce(&mut Vec<u8>)) {
    let mut s = wire::login(dep, server.addr, "alice");
    let body = s.seal(&Request::Send(draft(
        &["bob"],
        "tampered",
        "transfer 10 EUR",
    )));
    let mut framed = encode_frame(&body);
    tamper(&mut framed);
    s.wire.send_raw(&framed).unwrap();
    let _ = s.wire.stream.shutdown(Shutdown::Write);
    assert!(s.wire.closed_by_server(CLOSE), "session survived tampering");
    assert_eq!(
        count_rows(&dep.database(), "messages"),
        0,
        "tampered mail was stored"
    );
}

#[test]
fn bit_flip_in_length_prefix_ends_the_session() {
    let (dep, server) = setup();
    for bit in [0, 1, 7, 15, 31] {
        send_tampered(&dep, &server, |f| f[3 - bit / 8] ^= 1 << (bit % 8));
    }
    assert_healthy(&dep, &server);
}

#[test]
fn bit_flip_in_ciphertext_and_tag_ends_the_session() {
    let (dep, server) = setup();
    // Header is bytes 0-3; the last 16 bytes are the GCM tag.
    for offset in [4usize, 5, 12, 20, usize::MAX - 15, usize::MAX] {
        send_tampered(&dep, &server, |f| {
            let i = if offset > f.len() {
                f.len() - (usize::MAX - offset) - 1
            } else {
                offset
            };
            f[i] ^= 0x80;
        });
    }
    assert_healthy(&dep, &server);
}

#[test]
fn truncated_frame_ends_the_session() {
    let (dep, server) = setup();
    send_tampered(&dep, &server, |f| f.truncate(f.len() - 5));
    send_tampered(&dep, &server, |f| f.truncate(2));
    assert_healthy(&dep, &server);
}

#[test]
fn oversized_length_prefixes_are_refused_before_allocation() {
    let (dep, server) = setup();
    // After the handshake: 0xFFFFFFFF and one past the maximum.
    for len in [u32::MAX, forkmail_protocol::MAX_FRAME_LEN as u32 + 1] {
        let mut s = wire::login(&dep, server.addr, "alice");
        s.wire.send_raw(&len.to_be_bytes()).unwrap();
        assert!(s.wire.closed_by_server(CLOSE));
    }
    // Keyed but not yet authenticated: anything over the ClientAuth limit.
    let mut keyed = wire::hello(&dep, server.addr, "alice").finish(&dep, "alice");
    keyed
        .wire
        .send_raw(&(forkmail_protocol::MAX_AUTH_LEN as u32 + 1).to_be_bytes())
        .unwrap();
    assert!(keyed.wire.closed_by_server(CLOSE));
    // Before the handshake, in the parent: anything over the hello limit.
    for len in [u32::MAX, forkmail_protocol::MAX_HELLO_LEN as u32 + 1] {
        let mut w = Wire::connect(server.addr);
        w.send_raw(&len.to_be_bytes()).unwrap();
        assert!(w.closed_by_server(CLOSE));
    }
    assert!(server.wait_for_log("hello longer than allowed", Duration::from_secs(5)));
    assert_healthy(&dep, &server);
}

#[test]
fn garbage_and_empty_hellos_are_refused_as_malformed() {
    let (dep, server) = setup();
    for hello in [&[0xde, 0xad, 0xbe, 0xef][..], &[]] {
        let mut w = Wire::connect(server.addr);
        w.send_frame(hello).unwrap();
        let reply = wire::server_reply(&w.recv_frame().expect("refusal"));
        assert_eq!(reply, ServerReply::Refused(Refusal::Malformed));
    }
    assert_healthy(&dep, &server);
}

// 3. Freshness ------------------------------------------------------------------------------

/// A fresh hello for `user`, altered by `edit`, then signed with the user's key: everything
/// but the alteration is genuine.
fn hello_with(dep: &Deployment, user: &str, edit: impl FnOnce(&mut ClientHello)) -> Vec<u8> {
    let key = wire::user_key(dep, user);
    let rng = ring::rand::SystemRandom::new();
    let (_, bytes) =
        forkmail_protocol::handshake::ClientHandshake::start(user, &key, now_millis(), &rng)
            .unwrap();
    let mut hello: AuthedClientHello = decode(&bytes).unwrap();
    edit(&mut hello.hello);
    forkmail_protocol::handshake::encode_authed_hello(&hello.hello, &key, &rng).unwrap()
}

#[test]
fn stale_and_future_hellos_are_refused() {
    let (dep, server) = setup();
    for offset in [-31_000i64, 31_000, -3_600_000, 3_600_000] {
        let mut w = Wire::connect(server.addr);
        w.send_frame(&hello_with(&dep, "alice", |h| {
            h.timestamp_ms = (h.timestamp_ms as i64 + offset) as u64
        }))
        .unwrap();
        match wire::server_reply(&w.recv_frame().expect("refusal")) {
            ServerReply::Refused(Refusal::StaleTimestamp {
                skew_secs,
                window_secs,
            }) => {
                assert_eq!(window_secs, 30);
                assert!(
                    (skew_secs - offset / 1000).abs() <= 2,
                    "{skew_secs} vs {offset}"
                );
            }
            other => panic!("offset {offset}: {other:?}"),
        }
    }
    assert_healthy(&dep, &server);
}

#[test]
fn stale_and_future_frames_end_the_session() {
    let (dep, server) = setup();
    for offset in [-31_000i64, 31_000] {
        let mut s = wire::login(&dep, server.addr, "alice");
        let ts = (now_millis() as i64 + offset) as u64;
        let frame = s
            .channel
            .seal(&Request::Send(draft(&["bob"], "late", "x")), ts)
            .unwrap();
        s.wire.send_frame(&frame).unwrap();
        assert!(s.wire.closed_by_server(CLOSE));
    }
    assert_eq!(count_rows(&dep.database(), "messages"), 0);
    assert_healthy(&dep, &server);
}

// 4. Impersonation --------------------------------------------------------------------------

#[test]
fn protocol_version_downgrade_is_refused() {
    let (dep, server) = setup();
    // Only version 4 is spoken: a signed hello claiming any other version, the unsigned
    // hellos of versions 1 and 2 and version 3's signed one are refused naming it.
    let key = wire::user_key(&dep, "alice");
    let mut hellos: Vec<Vec<u8>> = [0u16, 1, 2, 3, 5, u16::MAX]
        .into_iter()
        .map(|version| hello_with(&dep, "alice", |h| h.version = version))
        .collect();
    for version in [1, 2, 3] {
        hellos.push(wire::hello_signed(server.addr, "alice", &key, version).hello);
    }
    for hello in hellos {
        let mut w = Wire::connect(server.addr);
        w.send_frame(&hello).unwrap();
        let reply = wire::server_reply(&w.recv_frame().expect("refusal"));
        assert_eq!(
            reply,
            ServerReply::Refused(Refusal::UnsupportedVersion {
                supported: PROTOCOL_VERSION
            })
        );
    }
    assert_healthy(&dep, &server);
}

#[test]
fn hello_naming_one_user_signed_with_another_users_key_is_denied() {
    let (dep, server) = setup();
    let keyed = wire::hello(&dep, server.addr, "alice").finish(&dep, "alice");
    let (_, result) = keyed.login_as(&dep, "bob", &dep.password("alice"));
    assert_eq!(result, AuthResult::Denied);
    let keyed = wire::hello(&dep, server.addr, "alice").finish(&dep, "alice");
    let (_, result) = keyed.login_as(&dep, "bob", &dep.password("bob"));
    assert_eq!(result, AuthResult::Denied);
}

#[test]
fn client_signature_from_another_session_is_denied() {
    let (dep, server) = setup();
    let key =
        forkmail_keygen::keyfile::load_private_key(&dep.profile("alice").join("user.key")).unwrap();
    let rng = ring::rand::SystemRandom::new();
    // Session A: alice's genuine signature, never sent.
    let a = wire::hello(&dep, server.addr, "alice").finish(&dep, "alice");
    let stolen =
        forkmail_protocol::handshake::client_auth(&a.established, &key, "alice-pw", &rng).unwrap();
    // Session B: the attacker, who knows the password but not the key, presents it.
    let mut b = wire::hello(&dep, server.addr, "alice").finish(&dep, "alice");
    let stolen = forkmail_protocol::AuthRequest::Password(stolen);
    let frame = b.established.channel.seal(&stolen, now_millis()).unwrap();
    b.wire.send_frame(&frame).unwrap();
    let reply = b.wire.recv_frame().unwrap();
    let result: AuthResult = b
        .established
        .channel
        .open_fresh(reply, now_millis(), 30_000)
        .unwrap();
    assert_eq!(result, AuthResult::Denied);
}

// 5. Credentials ----------------------------------------------------------------------------

#[test]
fn unknown_user_and_wrong_key_get_one_identical_answer_from_the_parent() {
    let (dep, server) = setup();
    let alice = wire::user_key(&dep, "alice");
    let bob = wire::user_key(&dep, "bob");
    let mut answers = Vec::new();
    for (user, key) in [
        ("alice", &bob),
        ("alice", wire::outsider_key()),
        ("mallory", &alice),
        ("../etc", &alice),
    ] {
        let mut hello = wire::hello_signed(server.addr, user, key, PROTOCOL_VERSION);
        let reply = hello.wire.recv_frame().expect("refusal");
        assert_eq!(
            wire::server_reply(&reply),
            ServerReply::Refused(Refusal::UnknownKey),
            "{user}"
        );
        assert!(hello.wire.closed_by_server(CLOSE), "{user}");
        answers.push(reply);
    }
    let mut bogus = Wire::connect(server.addr);
    bogus.send_frame(&wire::bogus_hello("alice", 384)).unwrap();
    answers.push(bogus.recv_frame().expect("refusal"));
    assert!(
        answers.windows(2).all(|w| w[0] == w[1]),
        "answers differ: {answers:?}"
    );
    assert_eq!(
        server.sessions_forked(),
        0,
        "no session was forked:\n{}",
        server.log()
    );
}

#[test]
fn wrong_password_and_wrong_key_after_a_signed_hello_get_one_identical_answer() {
    let (dep, server) = setup();
    let mut answers = Vec::new();
    for (key_user, password) in [("alice", "wrong"), ("bob", "alice-pw")] {
        let keyed = wire::hello(&dep, server.addr, "alice").finish(&dep, "alice");
        let (s, result) = keyed.login_as(&dep, key_user, password);
        assert_eq!(result, AuthResult::Denied, "{key_user}/{password}");
        answers.push(s.wire.received.last().unwrap().len());
    }
    assert!(
        answers.windows(2).all(|w| w[0] == w[1]),
        "answer sizes differ: {answers:?}"
    );
}

#[test]
fn repeated_wrong_passwords_lock_the_account_across_children_until_it_expires() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&["--lockout-after", "3", "--lockout-secs", "3"]);
    let attempt = |password: &str| {
        let keyed = wire::hello(&dep, server.addr, "alice").finish(&dep, "alice");
        keyed.login_as(&dep, "alice", password).1
    };
    // Each attempt is a new connection, so a new child process.
    for _ in 0..3 {
        assert_eq!(attempt("guess"), AuthResult::Denied);
    }
    // Locked: even the right password is refused, and the key holder is told for how long.
    assert!(matches!(
        attempt("alice-pw"),
        AuthResult::Locked {
            remaining_secs: 1..=3
        }
    ));
    assert!(
        server.wait_for_log("password not tested", Duration::from_secs(5)),
        "{}",
        server.log()
    );
    // Another user is unaffected.
    let keyed = wire::hello(&dep, server.addr, "bob").finish(&dep, "bob");
    assert_eq!(
        keyed.login_as(&dep, "bob", "bob-pw").1,
        AuthResult::Accepted
    );
    // After the lock-out the right password works and clears the count, its own included.
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(attempt("alice-pw"), AuthResult::Accepted);
    assert_eq!(count_rows(&dep.database(), "login_failures"), 0);
}

/// How many tested passwords, and how many refusals of a locked account, the server logged
/// (each once by the session's child; the parent repeats it as the session's end).
fn verdicts_logged(server: &Server) -> (usize, usize) {
    let log = server.log();
    let refusals = || log.lines().filter(|line| line.contains("login failed: "));
    (
        refusals()
            .filter(|line| line.contains("password tested and"))
            .count(),
        refusals()
            .filter(|line| line.contains("password not tested"))
            .count(),
    )
}

/// A password check slow enough for racing attempts to overlap, as at production cost.
fn slow_kdf_deployment() -> Deployment {
    Deployment::with_options(
        &["alice", "bob"],
        DeployOptions {
            kdf_iterations: 20_000,
            ..DeployOptions::FAST
        },
    )
}

/// Logs in as alice with her key, `passwords.len()` sessions at once: every handshake is done
/// first, then all the passwords are sent together.
fn race_logins(dep: &Deployment, server: &Server, passwords: &[&str]) -> Vec<AuthResult> {
    let barrier = std::sync::Barrier::new(passwords.len());
    std::thread::scope(|s| {
        let racers: Vec<_> = passwords
            .iter()
            .map(|&password| {
                let barrier = &barrier;
                s.spawn(move || {
                    let keyed = wire::hello(dep, server.addr, "alice").finish(dep, "alice");
                    barrier.wait();
                    keyed.login_as(dep, "alice", password).1
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    })
}

/// Regression: every racing attempt used to pass the lock check before any was counted, so
/// attempts sent together tested more passwords than `--lockout-after` allows (twelve of
/// these twelve, before the fix).
#[test]
fn concurrent_wrong_passwords_with_the_key_test_no_more_than_lockout_after() {
    let dep = slow_kdf_deployment();
    let server = dep.start_server(&[
        "--lockout-after",
        "4",
        "--lockout-secs",
        "600",
        "--max-sessions",
        "12",
        // Twelve sessions of one user at once.
        "--max-sessions-per-user",
        "0",
    ]);
    let results = race_logins(&dep, &server, &["guess"; 12]);
    let denied = results.iter().filter(|&r| *r == AuthResult::Denied).count();
    let locked = results
        .iter()
        .filter(|r| matches!(r, AuthResult::Locked { .. }))
        .count();
    assert_eq!((denied, locked), (4, 8), "{results:?}");
    let failures = forkmail_testkit::db::open(&dep.store())
        .login_failures("alice")
        .unwrap()
        .expect("counted");
    assert_eq!(failures.failures, 4);
    assert!(
        wait_until(Duration::from_secs(10), || verdicts_logged(&server)
            == (4, 8)),
        "{}",
        server.log()
    );
}

/// Regression: a correct password raced with wrong ones used to be tested, and accepted, while
/// the wrong ones locked the account. Here the count is at the limit: nothing is tested, the
/// right password included, and nothing more is counted. (Measured one failure short of it,
/// eight racing attempts with one right password: before the fix four to seven wrong passwords
/// were tested and the right one accepted four times in five; now one is tested and the right
/// one is `Locked`, unless it is the one counted.)
#[test]
fn a_correct_password_raced_with_wrong_ones_at_the_limit_is_refused_as_locked() {
    let dep = slow_kdf_deployment();
    let server = dep.start_server(&[
        "--lockout-after",
        "4",
        "--lockout-secs",
        "600",
        "--max-sessions-per-user",
        "0",
    ]);
    for _ in 0..4 {
        let keyed = wire::hello(&dep, server.addr, "alice").finish(&dep, "alice");
        assert_eq!(keyed.login_as(&dep, "alice", "guess").1, AuthResult::Denied);
    }
    let results = race_logins(&dep, &server, &["guess", "guess", "alice-pw", "guess"]);
    assert!(
        results.iter().all(|r| matches!(
            r,
            AuthResult::Locked {
                remaining_secs: 590..=600
            }
        )),
        "{results:?}"
    );
    let failures = forkmail_testkit::db::open(&dep.store())
        .login_failures("alice")
        .unwrap()
        .expect("counted");
    assert_eq!(failures.failures, 4, "a locked attempt counts nothing");
    assert!(
        wait_until(Duration::from_secs(10), || verdicts_logged(&server)
            == (4, 4)),
        "{}",
        server.log()
    );
}

#[test]
fn a_locked_account_is_told_to_the_key_holder_only_and_the_client_prints_the_minutes() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&["--lockout-after", "2", "--lockout-secs", "600"]);
    for _ in 0..2 {
        let out = dep
            .client(&server, "alice")
            .password("guess")
            .args(["inbox"])
            .run(b"");
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("wrong password"), "{stderr}");
    }
    let out = dep.client(&server, "alice").args(["inbox"]).run(b"");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("account locked for 10 more minutes after too many wrong passwords"),
        "{stderr}"
    );
    // Whoever lacks alice's key learns nothing: a hello not signed by her key is refused by
    // the parent as an unknown key, whatever the account's state; with her hello but another
    // key in the login, the same Denied as any wrong credential.
    let mut outsider =
        wire::hello_signed(server.addr, "alice", wire::outsider_key(), PROTOCOL_VERSION);
    assert_eq!(
        wire::server_reply(&outsider.wire.recv_frame().expect("refusal")),
        ServerReply::Refused(Refusal::UnknownKey)
    );
    let keyed = wire::hello(&dep, server.addr, "alice").finish(&dep, "alice");
    let (_, result) = keyed.login_as(&dep, "bob", "alice-pw");
    assert_eq!(result, AuthResult::Denied);
}

#[test]
fn attempts_without_the_users_key_cannot_lock_the_user_out() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&["--lockout-after", "2", "--lockout-secs", "600"]);
    for _ in 0..4 {
        let keyed = wire::hello(&dep, server.addr, "alice").finish(&dep, "alice");
        assert_eq!(keyed.login_as(&dep, "bob", "guess").1, AuthResult::Denied);
    }
    assert_eq!(
        count_rows(&dep.database(), "login_failures"),
        0,
        "nothing counted"
    );
    let keyed = wire::hello(&dep, server.addr, "alice").finish(&dep, "alice");
    assert_eq!(
        keyed.login_as(&dep, "alice", "alice-pw").1,
        AuthResult::Accepted
    );
}

// 6. Exhaustion -----------------------------------------------------------------------------

#[test]
fn hundred_silent_connections_do_not_keep_a_real_user_out() {
    let (dep, server) = setup();
    let idle: Vec<Wire> = (0..100).map(|_| Wire::connect(server.addr)).collect();
    // A real user is served while all hundred are still connected.
    let mut s = wire::login(&dep, server.addr, "alice");
    assert_eq!(s.request(&Request::Quit), Response::Goodbye);
    drop(s);
    drop(idle);
    assert_healthy(&dep, &server);
}

#[test]
fn one_byte_a_second_cannot_hold_a_slot() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&["--handshake-timeout", "2"]);
    let hello = wire::hello(&dep, server.addr, "alice").hello;
    let mut trickles: Vec<Wire> = (0..20).map(|_| Wire::connect(server.addr)).collect();
    let framed = encode_frame(&hello);
    for byte in framed.iter().take(3) {
        for t in &mut trickles {
            let _ = t.send_raw(&[*byte]);
        }
        // Real users get in between the trickles.
        let mut s = wire::login(&dep, server.addr, "alice");
        assert_eq!(s.request(&Request::Quit), Response::Goodbye);
        std::thread::sleep(Duration::from_millis(1000));
    }
    // The handshake deadline has passed for every trickle: the parent dropped them.
    for t in &mut trickles {
        assert!(t.closed_by_server(CLOSE));
    }
    assert_healthy(&dep, &server);
}

#[test]
fn keyed_connection_that_never_authenticates_loses_its_slot_at_the_deadline() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&["--handshake-timeout", "2", "--max-sessions", "1"]);
    // Takes the only slot: a complete hello, then silence instead of ClientAuth.
    let mut keyed = wire::hello(&dep, server.addr, "alice").finish(&dep, "alice");
    assert!(
        keyed.wire.closed_by_server(CLOSE),
        "the child waited past the deadline"
    );
    // The slot is free again.
    assert_healthy(&dep, &server);
}

#[test]
fn client_that_never_reads_cannot_block_its_child_forever() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&["--write-timeout", "2"]);
    let mut s = wire::login(&dep, server.addr, "alice");
    let body = "𝄞".repeat(1_000_000);
    let id = match s.request(&Request::Send(draft(&["alice"], "big", &body))) {
        Response::Sent { id } => id,
        other => panic!("{other:?}"),
    };
    // Ask for the 4 MB mail again and again and never read: the child's writes block.
    s.wire
        .stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    for _ in 0..20 {
        let frame = s.seal(&Request::Read { id });
        if s.wire.send_frame(&frame).is_err() {
            break;
        }
    }
    assert!(
        wait_until(Duration::from_secs(30), || server.children().is_empty()),
        "the child is still blocked: {:?}",
        server.children()
    );
    drop(s);
    assert_healthy(&dep, &server);
}

#[test]
fn flood_of_garbage_bytes_is_dropped() {
    let (dep, server) = setup();
    for seed in 0..5u8 {
        let mut w = Wire::connect(server.addr);
        let garbage: Vec<u8> = (0..1_000_000u32)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect();
        let _ = w.stream.write_all(&garbage);
        assert!(w.closed_by_server(CLOSE));
    }
    assert_healthy(&dep, &server);
}

#[test]
fn client_closing_mid_frame_leaves_nothing_behind() {
    let (dep, server) = setup();
    let mut s = wire::login(&dep, server.addr, "alice");
    let body = s.seal(&Request::Send(draft(
        &["bob"],
        "half",
        &"x".repeat(100_000),
    )));
    let framed = encode_frame(&body);
    s.wire.send_raw(&framed[..framed.len() / 2]).unwrap();
    drop(s);
    assert_healthy(&dep, &server);
    assert_eq!(count_rows(&dep.database(), "messages"), 0);
}

// 7. Hostile content ------------------------------------------------------------------------

#[test]
fn hostile_recipient_lists_are_refused_and_store_nothing() {
    let (dep, server) = setup();
    let long = "a".repeat(10_000);
    let cases: Vec<Vec<&str>> = vec![
        vec!["../etc/passwd"],
        vec!["bob/../../x"],
        vec!["/bob"],
        vec!["bo\0b"],
        vec!["bob\n"],
        vec!["\x1b[31mbob"],
        vec![&long],
        vec!["bob", "bob"],
        vec![],
    ];
    let mut s = wire::login(&dep, server.addr, "alice");
    for to in cases {
        let response = s.request(&Request::Send(draft(&to, "t", "b")));
        assert!(
            matches!(
                response,
                Response::Error {
                    code: ErrorCode::InvalidRequest,
                    ..
                }
            ),
            "{to:?}: {response:?}"
        );
    }
    assert_eq!(count_rows(&dep.database(), "messages"), 0);
    let dir_entries = std::fs::read_dir(dep.root()).unwrap().count();
    assert_eq!(
        dir_entries, 2,
        "only server/ and clients/ in the deployment"
    );
}

#[test]
fn titles_with_slashes_newlines_and_escapes_are_stored_verbatim_and_shown_safely() {
    let (dep, server) = setup();
    let title = "a/b\\c\n\r\t\x1b[2J\x1b]0;pwned\x07 ../";
    let body = "line\n\x1b[31mred\x1b[0m\x00end";
    let mut s = wire::login(&dep, server.addr, "alice");
    let id = match s.request(&Request::Send(draft(&["bob"], title, body))) {
        Response::Sent { id } => id,
        other => panic!("{other:?}"),
    };
    let mut b = wire::login(&dep, server.addr, "bob");
    match b.request(&Request::Read { id }) {
        Response::Mail(mail) => {
            assert_eq!(mail.title, title);
            assert_eq!(mail.body, body);
        }
        other => panic!("{other:?}"),
    }
    for args in [
        vec!["inbox".to_string()],
        vec!["read".to_string(), id.to_string()],
    ] {
        let out = dep.client(&server, "bob").args(&args).ok(b"");
        assert!(!out.contains('\x1b'), "{args:?} printed a raw ESC: {out:?}");
        assert!(
            !out.contains('\x07') && !out.contains('\x00') && !out.contains('\r'),
            "{args:?}: {out:?}"
        );
    }
}

#[test]
fn invalid_utf8_is_refused_at_decode() {
    #[derive(Serialize)]
    enum RawRequest {
        Send(RawDraft),
    }
    #[derive(Serialize)]
    struct RawDraft {
        to: Vec<String>,
        title: Vec<u8>,
        body: String,
    }
    let (dep, server) = setup();
    let mut s = wire::login(&dep, server.addr, "alice");
    let raw = RawRequest::Send(RawDraft {
        to: vec!["bob".into()],
        title: vec![0xff, 0xfe, b'x'],
        body: "b".into(),
    });
    let frame = s.channel.seal(&raw, now_millis()).unwrap();
    s.wire.send_frame(&frame).unwrap();
    assert!(s.wire.closed_by_server(CLOSE));
    assert_eq!(count_rows(&dep.database(), "messages"), 0);
    assert_healthy(&dep, &server);
}

// 8. Local files ----------------------------------------------------------------------------

#[test]
fn client_refuses_a_private_key_others_can_read_and_says_how_to_fix_it() {
    use std::os::unix::fs::PermissionsExt;
    let (dep, server) = setup();
    let key = dep.profile("alice").join("user.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = dep.client(&server, "alice").args(["inbox"]).run(b"");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("chmod 600 {}", key.display())),
        "{stderr}"
    );
}

#[test]
fn client_reports_corrupt_missing_and_wrong_type_files_in_one_line() {
    let (dep, server) = setup();
    let profile = dep.profile("alice");
    type BreakFile<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, BreakFile)> = vec![
        (
            "user.key",
            Box::new(|| std::fs::write(profile.join("user.key"), "garbage").unwrap()),
        ),
        (
            "server.pub",
            Box::new(|| {
                std::fs::copy(profile.join("user.key"), profile.join("server.pub"))
                    .map(drop)
                    .unwrap()
            }),
        ),
        (
            "server.pub",
            Box::new(|| std::fs::remove_file(profile.join("server.pub")).unwrap()),
        ),
        (
            "profile.toml",
            Box::new(|| std::fs::write(profile.join("profile.toml"), "user = 3").unwrap()),
        ),
    ];
    for (file, break_it) in cases {
        let backup = dep.scratch("backup");
        let _ = std::fs::remove_dir_all(&backup);
        copy_tree(&profile, &backup).unwrap();
        break_it();
        let out = dep.client(&server, "alice").args(["inbox"]).run(b"");
        assert_eq!(out.status.code(), Some(1), "{file}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(file), "{file}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        std::fs::remove_dir_all(&profile).unwrap();
        copy_tree(&backup, &profile).unwrap();
    }
    let out = std::process::Command::new(bin("forkmail"))
        .args(["--profile", "/nonexistent/profile", "inbox"])
        .env("FORKMAIL_PASSWORD", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/profile"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
}
