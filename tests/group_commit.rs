//! Group commit on SQLite (store/src/sqlite/commit.rs): a send commits without an fsync under
//! the write lock, then the child fsyncs the WAL outside it and only then answers `Sent`. These
//! tests perform the faults against the real forked server, through the debug build's
//! `FORKMAIL_TEST_WAL_SYNC` hook: a session child SIGKILLed between its commit and its fsync,
//! and an fsync that fails. What they can truly show is the order of events: no `Sent` ever
//! leaves a child before its WAL fsync returned (so before the mail is on disk, as far as the
//! kernel can say), other writers are not held up meanwhile, and a repeat of the send is then
//! answered with the stored mail's id, once synced. A power cut itself cannot be performed here;
//! the argument for why a returned fsync makes the send durable is in commit.rs.

use std::path::Path;
use std::time::Duration;

use forkmail_protocol::messages::{Draft, ErrorCode, Request, Response};
use forkmail_testkit::{bin, sealing, wait_until, wire, Deployment, Server, ServerConfig};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const HOOK: &str = "FORKMAIL_TEST_WAL_SYNC";

/// The server on `dep` with the WAL-sync hook set to `hook`; `None` in a release build, which
/// has no hook (the tests then have nothing to inject and say so).
fn server_with_hook(dep: &Deployment, hook: &str) -> Option<Server> {
    if !cfg!(debug_assertions) {
        eprintln!("skipped: {HOOK} exists only in debug builds of forkmail-server");
        return None;
    }
    let config = ServerConfig {
        env: vec![(HOOK.to_owned(), hook.to_owned())],
        ..ServerConfig::new(&bin("forkmail-server"), &dep.server_dir())
    };
    Some(Server::launch(&config).expect("start the server"))
}

/// A sealed send to bob by `from`, as the client makes it (the server stores only sealed mail).
fn send_once(dep: &Deployment, from: &str, send_id: &[u8; 16], title: &str) -> Request {
    let draft = Draft {
        to: vec!["bob".into()],
        title: title.into(),
        body: "a body".into(),
    };
    Request::SendSealed {
        send_id: *send_id,
        draft: sealing::seal_as(dep, from, from, &draft),
    }
}

fn pid_in(marker: &Path) -> Option<Pid> {
    let text = std::fs::read_to_string(marker).ok()?;
    text.trim().parse().ok().map(Pid::from_raw)
}

#[test]
fn a_crash_between_a_group_commit_and_its_reply_never_acknowledges_an_undurable_send() {
    let dep = Deployment::new(&["alice", "bob", "carol"]);
    let marker = dep.scratch("paused-before-fsync");
    let Some(server) = server_with_hook(&dep, &format!("pause:{}", marker.display())) else {
        return;
    };
    let first = send_once(
        &dep,
        "alice",
        b"crash-before-syn",
        "committed, never synced",
    );
    let mut alice = wire::login(&dep, server.addr, "alice");
    let frame = alice.seal(&first);
    alice.wire.send_frame(&frame).expect("send the request");
    // The child has committed and now waits before its fsync (the hook's pause).
    assert!(
        wait_until(Duration::from_secs(20), || pid_in(&marker).is_some()),
        "the send never reached its WAL fsync"
    );
    let child = pid_in(&marker).expect("the paused child's pid");
    // Meanwhile another writer commits, syncs and is answered: the paused one does not hold
    // the write lock through its fsync, which is what lets fsyncs coalesce.
    let mut carol = wire::login(&dep, server.addr, "carol");
    let Response::Sent { .. } =
        carol.request(&send_once(&dep, "carol", b"another writer!!", "carol's"))
    else {
        panic!("a second writer is answered while the first waits for its fsync")
    };
    drop(carol);
    // The crash: the first child dies between its commit and its fsync.
    kill(child, Signal::SIGKILL).expect("SIGKILL the paused child");
    match alice.wire.recv_frame() {
        Err(_) => {}
        Ok(frame) => {
            let reply: Response = alice
                .channel
                .open_fresh(frame, forkmail_protocol::now_millis(), 60_000)
                .expect("authentic frame");
            panic!("the client was answered before the fsync: {reply:?}");
        }
    }
    // The commit itself survived the process (the WAL is in the page cache), so a repeat of
    // the send finds it, is synced this time, and is answered with its id: one copy.
    let mut again = wire::login(&dep, server.addr, "alice");
    let Response::Sent { id } = again.request(&first) else {
        panic!("the repeat of a committed send is answered with its id")
    };
    assert!(id > 0);
    let titles: Vec<String> = sealing::stored_inbox_titles(&dep, "bob")
        .into_iter()
        .map(|(_, title)| title)
        .collect();
    assert_eq!(
        titles
            .iter()
            .filter(|t| *t == "committed, never synced")
            .count(),
        1,
        "{titles:?}"
    );
    wire::assert_serves(again, &server);
}

#[test]
fn a_failed_wal_fsync_is_answered_as_uncertain_never_as_sent() {
    let dep = Deployment::new(&["alice", "bob"]);
    let Some(server) = server_with_hook(&dep, "fail") else {
        return;
    };
    let mut alice = wire::login(&dep, server.addr, "alice");
    match alice.request(&send_once(
        &dep,
        "alice",
        b"the fsync fails!",
        "not known to be on disk",
    )) {
        Response::Error {
            code: ErrorCode::Unavailable,
            message,
        } => assert!(message.contains("may or may not"), "{message}"),
        other => panic!("a send whose fsync failed was answered {other:?}"),
    }
    // The real client says so too, and exits 1 without "sent message".
    let out = dep
        .client(&server, "alice")
        .args(["send", "--to", "bob", "--title", "by the client"])
        .run(b"body");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("sent message"));
    // Reading needs no fsync: the session goes on.
    wire::assert_serves(alice, &server);
}
