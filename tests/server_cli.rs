//! `forkmail-server` start-up: every bad deployment gets one clear line and exit 1, never a
//! panic. Then the local files it trusts: refused when others could read or replace them, and a
//! database deleted or replaced under a running session refuses the send.

use std::os::unix::fs::{chown, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use forkmail_protocol::messages::{Draft, ErrorCode, Request, Response};
use forkmail_testkit::mounts::ReadOnlyMount;
use forkmail_testkit::{db, sealing, wire, Deployment};

/// `nobody`: a user other than the one running the tests.
const OTHER_UID: u32 = 65534;

fn server(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_forkmail-server"))
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .expect("run forkmail-server")
}

fn assert_clear_failure(out: &Output, needle: &str) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing on stdout before listening");
}

#[test]
fn missing_deployment_is_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    assert_clear_failure(
        &server(&["--dir", missing.to_str().unwrap()]),
        "no such directory",
    );
}

#[test]
fn group_readable_server_key_is_refused_with_the_chmod_that_fixes_it() {
    let dep = Deployment::new(&["alice"]);
    let key = dep.server_dir().join("server.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = server(&["--dir", dep.server_dir().to_str().unwrap()]);
    assert_clear_failure(&out, &format!("chmod 600 {}", key.display()));
}

#[test]
fn corrupt_key_and_missing_database_are_clear_errors() {
    let dep = Deployment::new(&["alice"]);
    let dir = dep.server_dir();
    std::fs::write(dir.join("server.pub"), "garbage").unwrap();
    assert_clear_failure(&server(&["--dir", dir.to_str().unwrap()]), "server.pub");

    let dep = Deployment::new(&["alice"]);
    let dir = dep.server_dir();
    std::fs::remove_file(dir.join("mail.db")).unwrap();
    assert_clear_failure(&server(&["--dir", dir.to_str().unwrap()]), "mail.db");
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(
        server(&["--max-sessions", "0", "--dir", "x"]).status.code(),
        Some(2)
    );
    assert_eq!(server(&[]).status.code(), Some(2));
}

#[test]
fn proxy_protocol_from_takes_ip_addresses_and_says_what_is_wrong() {
    for (bad, says) in [
        (
            "10.0.0.5:8080",
            "\"10.0.0.5:8080\" has a port; give only the proxy's IP address, e.g. 10.0.0.5",
        ),
        (
            "proxy.example.org",
            "\"proxy.example.org\" is not an IP address",
        ),
        ("10.0.0.5,", "\"\" is not an IP address"),
    ] {
        let out = server(&["--dir", "x", "--proxy-protocol-from", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--proxy-protocol-from"), "{stderr}");
        assert!(stderr.contains(says), "{bad}: {stderr}");
    }
}

#[test]
fn an_empty_or_foreign_database_is_not_a_forkmail_database_never_schema_version_0() {
    for (what, contents) in [
        ("an empty file", &b""[..]),
        (
            "not a database",
            &b"this is someone's notes, not mail\n"[..],
        ),
    ] {
        let dep = Deployment::new(&["alice"]);
        let dir = dep.server_dir();
        std::fs::write(dir.join("mail.db"), contents).unwrap();
        let out = server(&["--dir", dir.to_str().unwrap()]);
        assert_clear_failure(&out, "not a forkmail database");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("version 0"), "{what}: {stderr}");
        assert_eq!(
            std::fs::read(dir.join("mail.db")).unwrap(),
            contents,
            "{what}: the file was left as it was"
        );
    }
}

#[test]
fn an_unreachable_store_url_is_named_without_its_password() {
    let dep = Deployment::new(&["alice"]);
    let dir = dep.server_dir();
    // Port 1 on loopback: nothing listens there.
    let out = server(&[
        "--dir",
        dir.to_str().unwrap(),
        "--store",
        "postgresql://mail:hunter2@127.0.0.1:1/forkmail",
    ]);
    assert_clear_failure(&out, "postgresql://mail:***@127.0.0.1:1/forkmail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(stderr.contains("unavailable"), "{stderr}");
}

fn my_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid()
}

#[test]
fn a_group_writable_deployment_directory_is_refused_with_the_chmod_that_fixes_it() {
    let dep = Deployment::new(&["alice"]);
    let dir = dep.server_dir();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o770)).unwrap();
    let out = server(&["--dir", dir.to_str().unwrap()]);
    assert_clear_failure(&out, &format!("chmod go-w {}", dir.display()));
}

#[test]
fn a_server_key_owned_by_another_user_is_refused_with_the_chown_that_fixes_it() {
    let dep = Deployment::new(&["alice"]);
    let key = dep.server_dir().join("server.key");
    chown(&key, Some(OTHER_UID), None).unwrap();
    let out = server(&["--dir", dep.server_dir().to_str().unwrap()]);
    assert_clear_failure(&out, &format!("chown {} {}", my_uid(), key.display()));
}

#[test]
fn a_database_others_can_read_or_another_user_owns_is_refused_with_the_fix() {
    let dep = Deployment::new(&["alice"]);
    let db = dep.database();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = server(&["--dir", dep.server_dir().to_str().unwrap()]);
    assert_clear_failure(&out, &format!("chmod 600 {}", db.display()));

    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
    chown(&db, Some(OTHER_UID), None).unwrap();
    let out = server(&["--dir", dep.server_dir().to_str().unwrap()]);
    assert_clear_failure(&out, &format!("chown {} {}", my_uid(), db.display()));
}

#[test]
fn a_database_on_a_read_only_mount_is_refused_at_start_naming_it() {
    let dep = Deployment::new(&["alice"]);
    let dir = dep.server_dir();
    let mount = match ReadOnlyMount::new(&dir) {
        Ok(mount) => mount,
        Err(why) => {
            println!("skipped: cannot make a read-only mount here: {why}");
            return;
        }
    };
    let out = server(&["--dir", dir.to_str().unwrap()]);
    drop(mount);
    assert_clear_failure(&out, &dep.database().display().to_string());
    assert_clear_failure(&out, "read-only");
}

/// `chattr -i` on drop, so a failed assertion leaves no file nobody can delete.
struct Immutable<'a>(&'a Path);

impl Drop for Immutable<'_> {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(self.0).status();
    }
}

#[test]
fn an_immutable_database_is_refused_at_start_naming_it() {
    let dep = Deployment::new(&["alice"]);
    let db = dep.database();
    let made = Command::new("chattr").arg("+i").arg(&db).output();
    let _undo = Immutable(&db);
    match made {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            println!(
                "skipped: this filesystem has no immutable attribute (chattr +i: {})",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return;
        }
        Err(e) => {
            println!("skipped: cannot run chattr: {e}");
            return;
        }
    }
    let out = server(&["--dir", dep.server_dir().to_str().unwrap()]);
    assert_clear_failure(&out, &db.display().to_string());
}

#[test]
fn demo_refuses_a_demo_directory_it_does_not_own_or_others_can_write() {
    let tmp = tempfile::tempdir().unwrap();
    let demo = tmp.path().join("demo");
    std::fs::create_dir(&demo).unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_forkmail-server"))
            .args(["--demo", "--listen", "127.0.0.1:0"])
            .current_dir(tmp.path())
            .output()
            .expect("run forkmail-server")
    };
    chown(&demo, Some(OTHER_UID), None).unwrap();
    assert_clear_failure(&run(), &format!("chown {} demo", my_uid()));
    chown(&demo, Some(my_uid()), None).unwrap();
    std::fs::set_permissions(&demo, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert_clear_failure(&run(), "chmod go-w demo");
    assert_eq!(
        std::fs::read_dir(&demo).unwrap().count(),
        0,
        "nothing made in it"
    );
}

fn draft(dep: &Deployment) -> Request {
    let draft = Draft {
        to: vec!["bob".into()],
        title: "t".into(),
        body: "b".into(),
    };
    sealing::send_request(dep, "alice", &draft)
}

/// Sends on a session whose database `swap` takes away after login: refused, never `Sent`, and
/// the server logs `logged` (waited for: the log reaches the test through a pipe).
fn send_after(swap: impl FnOnce(&Deployment), logged: &str) -> Deployment {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&[]);
    let mut session = wire::login(&dep, server.addr, "alice");
    swap(&dep);
    match session.request(&draft(&dep)) {
        Response::Error { code, message } => {
            assert_eq!(code, ErrorCode::Internal);
            assert!(message.contains("deleted or replaced"), "{message}");
            assert!(message.contains("nothing was saved"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(
        server.wait_for_log(logged, Duration::from_secs(10)),
        "{}",
        server.log()
    );
    drop(server);
    dep
}

#[test]
fn a_database_deleted_under_a_session_refuses_the_next_send() {
    send_after(
        |dep| std::fs::remove_file(dep.database()).unwrap(),
        "was deleted after this session opened it",
    );
}

#[test]
fn a_database_replaced_under_a_session_refuses_the_next_send() {
    let dep = send_after(
        |dep| {
            let copy = dep.scratch("copy.db");
            let other = Deployment::new(&["alice", "bob"]);
            std::fs::copy(other.database(), &copy).unwrap();
            std::fs::rename(&copy, dep.database()).unwrap();
        },
        "another file was put in its place",
    );
    assert_eq!(
        db::counts(&dep.store()).messages,
        0,
        "nothing stored in the new file"
    );
}

#[test]
fn the_database_its_wal_and_shm_are_0600_while_a_server_serves() {
    let dep = Deployment::new(&["alice", "bob"]);
    let server = dep.start_server(&[]);
    let mut session = wire::login(&dep, server.addr, "alice");
    assert!(matches!(
        session.request(&draft(&dep)),
        Response::Sent { .. }
    ));
    // The session's connection is still open, so the WAL and shared memory are there.
    for suffix in ["", "-wal", "-shm"] {
        let path = dep.server_dir().join(format!("mail.db{suffix}"));
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
    let mode = std::fs::metadata(dep.server_dir())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700, "server/");
}
