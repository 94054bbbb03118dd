//! `forkmail-server` start-up: every bad deployment gets one clear line and exit 1, never a
//! panic.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn server(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_forkmail-server"))
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .expect("run forkmail-server")
}

fn make_deployment(dir: &Path) {
    let keygen = Path::new(env!("CARGO_BIN_EXE_forkmail-server")).with_file_name("forkmail-keygen");
    if !keygen.exists() {
        // Built by the keygen_cli target under `cargo test --workspace`.
        panic!("{} not built; run cargo test --workspace", keygen.display());
    }
    std::fs::write(
        dir.join("users.toml"),
        "[[user]]\nname = \"alice\"\npassword = \"pw\"\n",
    )
    .unwrap();
    let out = Command::new(keygen)
        .args([
            "init",
            "d",
            "--users",
            "users.toml",
            "--bits",
            "2048",
            "--kdf-iterations",
            "1000",
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success());
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
    let tmp = tempfile::tempdir().unwrap();
    make_deployment(tmp.path());
    let key = tmp.path().join("d/server/server.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = server(&["--dir", tmp.path().join("d/server").to_str().unwrap()]);
    assert_clear_failure(&out, &format!("chmod 600 {}", key.display()));
}

#[test]
fn corrupt_key_and_missing_database_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    make_deployment(tmp.path());
    let dir = tmp.path().join("d/server");
    std::fs::write(dir.join("server.pub"), "garbage").unwrap();
    assert_clear_failure(&server(&["--dir", dir.to_str().unwrap()]), "server.pub");

    let tmp = tempfile::tempdir().unwrap();
    make_deployment(tmp.path());
    let dir = tmp.path().join("d/server");
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
        let tmp = tempfile::tempdir().unwrap();
        make_deployment(tmp.path());
        let dir = tmp.path().join("d/server");
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
    let tmp = tempfile::tempdir().unwrap();
    make_deployment(tmp.path());
    let dir = tmp.path().join("d/server");
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
