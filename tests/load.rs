//! Load and faults: mail acknowledged is mail kept, under concurrency, crashes and restarts.
//! Sized to finish in a few minutes on two cores; figures live in forkmail-bench, not here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use forkmail_client::{ConnectOptions, Session};
use forkmail_protocol::messages::Draft;
use forkmail_testkit::{integrity_ok, procfs, sealing, wait_until, Deployment, Server};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// These loads send far more than one user may in a minute (`--max-sends-per-minute`, tested in
/// `tests/disk.rs`), from many sessions of a few users at once (`--max-sessions-per-user`,
/// tested in `tests/availability.rs`): what they test is every send stored once under load.
const UNLIMITED: &[&str] = &[
    "--max-sends-per-minute",
    "0",
    "--max-sessions-per-user",
    "0",
];

fn options(dep: &Deployment, server: &Server, user: &str) -> ConnectOptions {
    dep.connect_options(user, &server.addr.to_string())
        .expect("profile loads")
}

fn draft(to: &[&str], title: &str, body: &str) -> Draft {
    Draft {
        to: to.iter().map(|s| s.to_string()).collect(),
        title: title.into(),
        body: body.into(),
    }
}

/// Deliveries per message title, and messages stored without all of their deliveries.
fn audit(dep: &Deployment) -> (HashMap<String, i64>, i64) {
    let audit = sealing::audit(dep, &dep.users());
    (audit.deliveries_per_title, audit.half_stored)
}

/// Samples the server's live (non-zombie) session children until stopped; returns the maximum seen.
fn sample_children(server_pid: i32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut max = 0;
        while !stop.load(Ordering::Relaxed) {
            let live = procfs::sessions(server_pid)
                .iter()
                .filter(|child| !child.is_zombie())
                .count();
            max = max.max(live);
            std::thread::sleep(Duration::from_millis(2));
        }
        max
    })
}

#[test]
fn fifty_clients_twenty_sessions_each_all_delivered_exactly_once() {
    let dep = Deployment::new(&["alice", "bob", "carol"]);
    let server = dep.start_server(UNLIMITED);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_children(server.pid().as_raw(), Arc::clone(&stop));
    let errors = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|scope| {
        for client in 0..50 {
            let opts = options(&dep, &server, ["alice", "bob", "carol"][client % 3]);
            let errors = Arc::clone(&errors);
            scope.spawn(move || {
                for round in 0..20 {
                    let result = (|| {
                        let mut s = Session::connect(&opts)?;
                        s.send(&draft(
                            &["bob", "carol"],
                            &format!("c{client}-r{round}"),
                            "load",
                        ))?;
                        s.inbox()?;
                        s.quit()
                    })();
                    if let Err(err) = result {
                        errors
                            .lock()
                            .unwrap()
                            .push(format!("client {client} round {round}: {err}"));
                    }
                }
            });
        }
    });
    stop.store(true, Ordering::Relaxed);
    let max_children = sampler.join().unwrap();
    let errors = errors.lock().unwrap();
    assert!(
        errors.is_empty(),
        "{} sessions failed, first: {:?}",
        errors.len(),
        errors.first()
    );
    assert!(max_children <= 5, "saw {max_children} serving children");
    assert!(max_children >= 1);

    let (per_title, half) = audit(&dep);
    assert_eq!(half, 0);
    assert_eq!(per_title.len(), 1000, "one stored message per send");
    assert!(
        per_title.values().all(|&n| n == 2),
        "each delivered once to bob and carol"
    );
    assert!(
        wait_until(Duration::from_secs(20), || server.children().is_empty()),
        "{:?}",
        server.children()
    );
    assert!(!server.log().contains("database is locked"));
    assert!(integrity_ok(&dep.database()));
}

#[test]
fn five_writers_at_once_never_see_a_busy_database() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(UNLIMITED);
    let body = "w".repeat(50_000);
    std::thread::scope(|scope| {
        for writer in 0..5 {
            let opts = options(&dep, &server, "alice");
            let body = &body;
            scope.spawn(move || {
                let mut s = Session::connect(&opts).expect("login");
                for i in 0..40 {
                    s.send(&draft(&["bob", "alice"], &format!("w{writer}-{i}"), body))
                        .unwrap_or_else(|e| panic!("writer {writer} send {i}: {e}"));
                }
                s.quit().unwrap();
            });
        }
    });
    let (per_title, half) = audit(&dep);
    assert_eq!((per_title.len(), half), (200, 0));
    let log = server.log();
    assert!(
        !log.contains("database is locked") && !log.contains("database error"),
        "{log}"
    );
}

#[test]
fn sigkill_of_a_serving_child_never_loses_or_half_stores_a_send() {
    let dep = Deployment::new(&["alice", "bob", "carol"]);
    let server = dep.start_server(UNLIMITED);
    let body = "k".repeat(200_000);
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut attempted = Vec::new();
    for round in 0..25u64 {
        let opts = options(&dep, &server, "alice");
        let acked_here = Arc::clone(&acked);
        let body = body.clone();
        let titles: Vec<String> = (0..50).map(|i| format!("k{round}-{i}")).collect();
        attempted.extend(titles.clone());
        let worker = std::thread::spawn(move || {
            let Ok(mut s) = Session::connect(&opts) else {
                return;
            };
            for title in titles {
                match s.send(&draft(&["bob", "carol"], &title, &body)) {
                    Ok(_) => acked_here.lock().unwrap().push(title),
                    Err(_) => return,
                }
            }
        });
        // Kill the child at a varying moment while it serves sends: in odd rounds counted from
        // when the child exists (often before its first send is acknowledged), in even rounds
        // from its first acknowledged send, so that the run kills mid-stream however slow the
        // machine is (sealing 200 KB twice and a login take longer than the sleep on a loaded
        // one).
        let before = acked.lock().unwrap().len();
        assert!(wait_until(Duration::from_secs(10), || !server
            .children()
            .is_empty()));
        if round % 2 == 0 {
            wait_until(Duration::from_secs(20), || {
                acked.lock().unwrap().len() > before
            });
        }
        std::thread::sleep(Duration::from_millis(3 + (round * 7) % 40));
        for child in server.children() {
            let _ = kill(Pid::from_raw(child.pid), Signal::SIGKILL);
        }
        worker.join().unwrap();
    }
    let (per_title, half) = audit(&dep);
    assert_eq!(
        half, 0,
        "a message was stored without all of its deliveries"
    );
    let acked = acked.lock().unwrap();
    assert!(
        !acked.is_empty(),
        "no send was acknowledged: the kills came too early to test anything"
    );
    for title in acked.iter() {
        assert_eq!(
            per_title.get(title),
            Some(&2),
            "acknowledged {title} not stored exactly once"
        );
    }
    for (title, n) in &per_title {
        assert!(attempted.contains(title), "unexpected {title}");
        assert_eq!(*n, 2, "{title} stored {n} deliveries");
    }
    assert!(integrity_ok(&dep.database()));
    assert!(wait_until(Duration::from_secs(20), || server
        .children()
        .is_empty()));
    // Still serving.
    let mut s = Session::connect(&options(&dep, &server, "bob")).unwrap();
    assert_eq!(s.inbox().unwrap().len(), per_title.len());
}

#[test]
fn sigkill_of_the_parent_leaves_no_child_past_its_session_and_the_port_rebinds_at_once() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(UNLIMITED);
    let addr = server.addr;
    let mut sessions: Vec<Session> = (0..3)
        .map(|_| Session::connect(&options(&dep, &server, "alice")).unwrap())
        .collect();
    sessions[0]
        .send(&draft(&["bob"], "before the crash", "x"))
        .unwrap();
    let kids: Vec<i32> = server.children().iter().map(|child| child.pid).collect();
    assert_eq!(kids.len(), 3);
    server.signal(Signal::SIGKILL);
    assert!(server.wait(Duration::from_secs(10)).is_some());

    // A new server binds the same port at once, while the orphaned children still serve.
    let restarted = Server::start_on(&dep.server_dir(), &addr.to_string(), UNLIMITED);
    assert_eq!(restarted.addr, addr);
    sessions[1]
        .send(&draft(&["bob"], "from an orphan", "y"))
        .unwrap();
    for s in sessions {
        s.quit().unwrap();
    }
    let gone = |pid: i32| matches!(procfs::state(pid), None | Some('Z'));
    assert!(
        wait_until(Duration::from_secs(20), || kids.iter().all(|&p| gone(p))),
        "orphans linger"
    );

    let mut bob = Session::connect(&options(&dep, &restarted, "bob")).unwrap();
    let titles: Vec<String> = bob.inbox().unwrap().into_iter().map(|m| m.title).collect();
    assert_eq!(titles, vec!["before the crash", "from an orphan"]);
}

#[test]
fn sigterm_under_load_finishes_running_sessions_and_exits_zero() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(UNLIMITED);
    let stop = Arc::new(AtomicBool::new(false));
    let completed = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let broken = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let opts = options(&dep, &server, "alice");
            let (stop, completed, refused, broken) = (
                Arc::clone(&stop),
                Arc::clone(&completed),
                Arc::clone(&refused),
                Arc::clone(&broken),
            );
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    // A refusal at connect is clean; a failure after login is a broken session.
                    let Ok(mut s) = Session::connect(&opts) else {
                        refused.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    let result = s
                        .send(&draft(&["bob"], &format!("t{w}-{i}"), "x"))
                        .and_then(|_| s.inbox())
                        .and_then(|_| s.quit());
                    match result {
                        Ok(()) => {
                            completed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(err) => broken.lock().unwrap().push(err.to_string()),
                    }
                }
            })
        })
        .collect();
    assert!(wait_until(Duration::from_secs(30), || completed
        .load(Ordering::Relaxed)
        >= 20));
    server.signal(Signal::SIGTERM);
    let pid = server.pid();
    let status = server
        .wait(Duration::from_secs(30))
        .expect("server exits after SIGTERM");
    // Keep the clients running a little so some hit the closed listener.
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert!(status.success(), "exit status {status}");
    let broken = broken.lock().unwrap();
    assert!(broken.is_empty(), "sessions broken by shutdown: {broken:?}");
    assert!(
        refused.load(Ordering::Relaxed) > 0,
        "no connection was refused after shutdown"
    );
    assert!(procfs::children(pid.as_raw()).is_empty());
    assert!(integrity_ok(&dep.database()));
}
