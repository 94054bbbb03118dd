//! `forkmail`'s command-line contract without a server: help, version, and the exit statuses of
//! mistakes a user makes before anything is sent (2 for usage, 1 for a missing profile). The
//! sessions themselves are in the testkit suites (`e2e`, `attacks`, `load`).

use std::process::{Command, Output, Stdio};

fn forkmail(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_forkmail"))
        .args(args)
        // Set, so that nothing can wait for a password on the terminal.
        .env("FORKMAIL_PASSWORD", "unused")
        // No default profile from the person running the tests.
        .env_remove("FORKMAIL_PROFILE")
        .env("XDG_CONFIG_HOME", "/nonexistent/forkmail-client-cli")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run forkmail")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn help_names_every_command_the_password_variable_and_the_exit_statuses() {
    let out = forkmail(&["--help"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let help = stdout(&out);
    for needle in [
        "--profile",
        "--server",
        "send",
        "inbox",
        "read",
        "delete",
        "FORKMAIL_PASSWORD",
        "FORKMAIL_PROFILE",
        "config.toml",
        "completions",
        "man",
        "Exit status",
    ] {
        assert!(
            help.contains(needle),
            "{needle:?} missing from --help:\n{help}"
        );
    }
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
}

#[test]
fn version_prints_the_package_version() {
    let out = forkmail(&["--version"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        format!("forkmail {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn usage_errors_exit_2_and_say_what_is_wrong() {
    for (args, needle) in [
        (&["inbox"][..], "--profile"),
        (&["--profile", "p", "frobnicate"][..], "frobnicate"),
        (&["--profile", "p", "read", "x"][..], "invalid value 'x'"),
        (&["--profile", "p", "send", "--title", "T"][..], "--to"),
        (
            &["--profile", "p", "--connect-timeout", "0", "inbox"][..],
            "0",
        ),
    ] {
        let out = forkmail(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{args:?}: {}", stdout(&out));
    }
}

#[test]
fn a_missing_profile_exits_1_with_one_line_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let profile = tmp.path().join("clients").join("nobody");
    let out = forkmail(&["--profile", profile.to_str().unwrap(), "inbox"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(
        message.contains(&profile.display().to_string()),
        "{message}"
    );
    assert_eq!(message.trim_end().lines().count(), 1, "one line: {message}");
    assert!(!message.contains("panicked"), "{message}");
    assert!(out.stdout.is_empty(), "{}", stdout(&out));
}
