//! `forkmail-server` start-up: every bad deployment gets one clear line and exit 1, never a
//! panic.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use forkmail_testkit::Deployment;

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
