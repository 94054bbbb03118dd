//! Several forkmail hosts on one PostgreSQL store, behind HAProxy in TCP mode (docs/SCALING.md):
//! any host serves any user, mail sent through one host is read and deleted through another, a
//! hello replayed to another host is refused, lock-outs count across hosts, and when one host is
//! SIGKILLed in the middle of a stream of sends, clients carry on through the other with nothing
//! acknowledged lost. Also: a session outlives its store's restart, and the store being away is
//! reported as such, with nothing half-done.
//!
//! Everything is started here and removed afterwards: a throw-away PostgreSQL cluster
//! (`forkmail_store::pgtest`), two real servers on 127.0.0.1, one real HAProxy. Without
//! PostgreSQL or HAProxy the tests say why and skip, except under `CI=true`, where they fail.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use forkmail_protocol::messages::{Draft, ErrorCode, Refusal, ServerReply};
use forkmail_store::pgtest::Cluster;
use forkmail_testkit::haproxy::{Haproxy, PROXY_SOURCE};
use forkmail_testkit::{db, procfs, sealing, wire, ClientCmd, Deployment, Server};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const USERS: &[&str] = &["alice", "bob", "carol"];

fn cluster() -> Option<Cluster> {
    match Cluster::start() {
        Ok(cluster) => Some(cluster),
        Err(skip) => {
            eprintln!("skipped: {skip}");
            None
        }
    }
}

/// A deployment on a fresh database of `cluster`, and two hosts serving it.
fn two_hosts(cluster: &Cluster, db_name: &str, extra: &[&str]) -> (Deployment, Server, Server) {
    let store = cluster.create_database(db_name);
    let dep = Deployment::with_store(USERS, &store);
    let mut args = vec!["--proxy-protocol-from", PROXY_SOURCE];
    args.extend_from_slice(extra);
    let host1 = Server::start(&dep.server_dir(), &args);
    let host2 = Server::start(&dep.server_dir(), &args);
    (dep, host1, host2)
}

fn client(dep: &Deployment, addr: &str, user: &str) -> ClientCmd {
    ClientCmd::new(&dep.profile(user), addr).password(&dep.password(user))
}

/// The titles in `user`'s inbox as the store holds them, the sealed headers decrypted with
/// `user`'s identity.
fn titles_in_inbox(dep: &Deployment, user: &str) -> Vec<String> {
    sealing::stored_inbox_titles(dep, user)
        .into_iter()
        .map(|(_, title)| title)
        .collect()
}

#[test]
fn mail_sent_through_one_host_is_read_and_deleted_through_the_other() {
    let Some(cluster) = cluster() else { return };
    let (dep, host1, host2) = two_hosts(&cluster, "read_across", &[]);
    let (a1, a2) = (host1.addr.to_string(), host2.addr.to_string());
    let sent = client(&dep, &a1, "alice")
        .args(["send", "--to", "bob;carol", "--title", "across hosts"])
        .ok(b"written on host 1\n");
    let id = sent
        .trim()
        .strip_prefix("sent message ")
        .unwrap()
        .to_owned();

    let read = client(&dep, &a2, "bob")
        .args(["read", &id, "--json"])
        .ok(b"");
    let mail: serde_json::Value = serde_json::from_str(&read).unwrap();
    assert_eq!(mail["body"], "written on host 1\n");
    client(&dep, &a2, "bob").args(["delete", &id]).ok(b"");

    // Gone for bob on host 1 too; carol still has it there.
    let gone = client(&dep, &a1, "bob").args(["read", &id]).run(b"");
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("not found"));
    client(&dep, &a1, "carol").args(["read", &id]).ok(b"");
    // Ids come from one sequence, whichever host stores the mail.
    let next = client(&dep, &a2, "carol")
        .args(["send", "--to", "alice", "--title", "from host 2"])
        .ok(b"x\n");
    assert_eq!(
        next.trim(),
        format!("sent message {}", id.parse::<u64>().unwrap() + 1)
    );
}

#[test]
fn a_hello_replayed_to_another_host_is_refused() {
    let Some(cluster) = cluster() else { return };
    let (dep, host1, host2) = two_hosts(&cluster, "replay_across", &[]);
    let first = wire::hello(&dep, host1.addr, "alice");
    let recorded = first.hello.clone();
    let _session = first.finish(&dep, "alice");

    let mut replay = wire::Wire::connect(host2.addr);
    replay.send_frame(&recorded).unwrap();
    let reply = wire::server_reply(&replay.recv_frame().expect("a refusal"));
    assert_eq!(reply, ServerReply::Refused(Refusal::Replayed));
}

#[test]
fn wrong_passwords_count_across_hosts_and_the_lock_holds_on_both() {
    let Some(cluster) = cluster() else { return };
    let (dep, host1, host2) = two_hosts(
        &cluster,
        "lockout_across",
        &["--lockout-after", "4", "--lockout-secs", "600"],
    );
    let (a1, a2) = (host1.addr.to_string(), host2.addr.to_string());
    for addr in [&a1, &a2, &a1, &a2] {
        let out = client(&dep, addr, "carol")
            .password("not carol's password")
            .args(["inbox"])
            .run(b"");
        assert_eq!(out.status.code(), Some(1));
    }
    let failures = db::open(&dep.store())
        .login_failures("carol")
        .unwrap()
        .expect("counted");
    assert_eq!(failures.failures, 4, "two on each host");
    // Locked on both hosts: even the right password is refused now.
    for (addr, host) in [(&a1, &host1), (&a2, &host2)] {
        let out = client(&dep, addr, "carol").args(["inbox"]).run(b"");
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("account locked for 10 more minutes"),
            "{stderr}"
        );
        assert!(
            host.wait_for_log("password not tested", Duration::from_secs(10)),
            "{}",
            host.log()
        );
    }
}

/// SIGKILLs a host's parent and every child it has: the host is gone, as in a crash.
fn kill_host(host: &Server) {
    for child in host.children() {
        let _ = kill(Pid::from_raw(child.pid), Signal::SIGKILL);
    }
    host.signal(Signal::SIGKILL);
}

#[test]
fn a_host_killed_mid_stream_loses_nothing_acknowledged_and_clients_carry_on() {
    let Some(cluster) = cluster() else { return };
    let (dep, host1, host2) = two_hosts(&cluster, "failover", &[]);
    let proxy = match Haproxy::start(&[host1.addr, host2.addr]) {
        Ok(proxy) => proxy,
        Err(skip) => {
            eprintln!("skipped: {skip}");
            return;
        }
    };
    let front = proxy.addr.to_string();

    // Both hosts serve through the proxy before anything happens.
    for i in 0..4 {
        client(&dep, &front, "alice")
            .args(["send", "--to", "bob", "--title", &format!("warm-up {i}")])
            .ok(b"hello\n");
    }
    for host in [&host1, &host2] {
        assert!(
            host.wait_for_log(
                "connection accepted for user alice",
                Duration::from_secs(10)
            ),
            "round robin reaches every host:\n{}",
            host.log()
        );
    }

    // Four clients send in a loop; host 1 dies (parent and children, SIGKILL) once 12 sends are
    // acknowledged, so sends are in flight on it when it goes. Bounded in count and time.
    let acked = AtomicUsize::new(0);
    let acked_after_kill = AtomicUsize::new(0);
    let killed = AtomicBool::new(false);
    let started = Instant::now();
    let enough = || {
        acked_after_kill.load(Ordering::SeqCst) >= 40 || started.elapsed() > Duration::from_secs(90)
    };
    let outcomes: Vec<(String, Option<u64>)> = std::thread::scope(|scope| {
        let senders: Vec<_> = (0..4)
            .map(|t| {
                let (dep, front, acked, acked_after_kill, killed) =
                    (&dep, &front, &acked, &acked_after_kill, &killed);
                scope.spawn(move || {
                    let mut outcomes = Vec::new();
                    for n in 0..100 {
                        if enough() {
                            break;
                        }
                        let title = format!("stream {t}-{n}");
                        let was_killed = killed.load(Ordering::SeqCst);
                        let out = client(dep, front, "alice")
                            .args(["send", "--to", "bob", "--title", &title])
                            .run(b"body\n");
                        let id = out
                            .status
                            .success()
                            .then(|| {
                                String::from_utf8_lossy(&out.stdout)
                                    .trim()
                                    .strip_prefix("sent message ")
                                    .and_then(|id| id.parse().ok())
                            })
                            .flatten();
                        if id.is_some() {
                            acked.fetch_add(1, Ordering::SeqCst);
                            if was_killed {
                                acked_after_kill.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        outcomes.push((title, id));
                    }
                    outcomes
                })
            })
            .collect();
        while acked.load(Ordering::SeqCst) < 12 && !enough() {
            std::thread::sleep(Duration::from_millis(5));
        }
        kill_host(&host1);
        killed.store(true, Ordering::SeqCst);
        senders
            .into_iter()
            .flat_map(|s| s.join().expect("a sender thread"))
            .collect()
    });
    let failed = outcomes.iter().filter(|(_, id)| id.is_none()).count();
    let after_kill = acked_after_kill.load(Ordering::SeqCst);
    eprintln!(
        "{} sends acknowledged ({after_kill} begun after host 1 was killed), {failed} failed",
        outcomes.len() - failed
    );
    assert!(
        after_kill >= 40,
        "clients carried on through host 2 ({failed} sends failed; proxy log:\n{})",
        proxy.log()
    );
    // Nothing acknowledged is lost, and nothing is stored twice.
    let stored = titles_in_inbox(&dep, "bob");
    let mut copies: HashMap<&str, usize> = HashMap::new();
    for title in &stored {
        *copies.entry(title.as_str()).or_default() += 1;
    }
    for (title, id) in &outcomes {
        match id {
            Some(id) => assert_eq!(copies.get(title.as_str()), Some(&1), "{title} (id {id})"),
            // Cut off with its host: stored once or not at all, never twice.
            None => assert!(
                copies.get(title.as_str()).copied().unwrap_or(0) <= 1,
                "{title}"
            ),
        }
    }
    db::integrity(&dep.store()).unwrap();
    // Host 2 is still up and serving.
    assert!(procfs::state(host2.pid().as_raw()).is_some_and(|s| s != 'Z'));
    client(&dep, &host2.addr.to_string(), "bob")
        .args(["inbox"])
        .ok(b"");
}

#[test]
fn the_store_going_away_is_reported_and_a_session_recovers_when_it_returns() {
    let Some(mut cluster) = cluster() else { return };
    let store = cluster.create_database("store_lost");
    let dep = Deployment::with_store(USERS, &store);
    let host = Server::start(&dep.server_dir(), &[]);
    let addr = host.addr.to_string();
    let options = dep.connect_options("alice", &addr).unwrap();
    let mut session = forkmail_client::Session::connect(&options).unwrap();
    let draft = |title: &str| Draft {
        to: vec!["bob".into()],
        title: title.into(),
        body: "b".into(),
    };
    session.send(&draft("before")).unwrap();

    cluster.stop();
    match session.send(&draft("while away")) {
        Err(forkmail_client::ClientError::Server { code, message }) => {
            assert_eq!(code, ErrorCode::Unavailable);
            assert!(message.contains("the mail store is unavailable; try again shortly"));
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // A new login is told the same, before any password is checked.
    let out = client(&dep, &addr, "carol").args(["inbox"]).run(b"");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the mail store is unavailable; try again shortly"),
        "{stderr}"
    );

    cluster.start_again();
    // The same session carries on: its child reconnects.
    session.send(&draft("after")).unwrap();
    client(&dep, &addr, "carol").args(["inbox"]).ok(b"");
    assert_eq!(
        titles_in_inbox(&dep, "bob"),
        ["before", "after"],
        "nothing half-done"
    );
    // The server itself never stopped.
    assert!(procfs::state(host.pid().as_raw()).is_some_and(|s| s != 'Z'));
}
