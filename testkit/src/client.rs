//! The real `forkmail` program as a test runs it, and where the workspace's binaries are.
//!
//! Tests drive the client binary (not the library) wherever what they check is what a person or
//! a script sees: exit statuses, stdout, one-line messages on stderr. The library's
//! [`forkmail_client::Session`] is for the load suite and the benchmark, which need many
//! sessions and no process per session.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The directory holding the workspace's binaries: the running program's own, or its parent
/// when the program is a test executable in `target/<profile>/deps/`.
pub fn bin_dir() -> io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| io::Error::other(format!("{} has no parent directory", exe.display())))?
        .to_owned();
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}

/// Path of one of the workspace's binaries; panics if it is not built. `cargo test --workspace`
/// builds every package's binaries only because each binary crate has an integration test
/// target of its own (keygen_cli, server_cli, client_cli): a crate without one would not have
/// its binaries built, and this would fail.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir()
        .expect("the test executable's directory")
        .join(name);
    assert!(
        path.exists(),
        "{} is not built; run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

/// A `forkmail` command being assembled.
pub struct ClientCmd {
    pub cmd: Command,
}

impl ClientCmd {
    /// `forkmail --profile PROFILE --server ADDR`, without colour and without a password, and
    /// without `XDG_RUNTIME_DIR`, so that its login ticket stays in the (temporary) profile
    /// unless the test sets one.
    pub fn new(profile: &Path, server_addr: &str) -> Self {
        let mut cmd = Command::new(bin("forkmail"));
        cmd.arg("--profile")
            .arg(profile)
            .arg("--server")
            .arg(server_addr)
            .env_remove("FORKMAIL_PASSWORD")
            .env_remove("XDG_RUNTIME_DIR")
            .env("NO_COLOR", "1");
        Self { cmd }
    }

    /// `forkmail` with no `--profile` or `--server`, without colour and without a password,
    /// and with neither `FORKMAIL_PROFILE` nor a config file (`XDG_CONFIG_HOME` and `HOME` point
    /// at `config_home`) unless the test sets them.
    pub fn bare(config_home: &Path) -> Self {
        let mut cmd = Command::new(bin("forkmail"));
        cmd.env_remove("FORKMAIL_PASSWORD")
            .env_remove("FORKMAIL_PROFILE")
            .env_remove("XDG_RUNTIME_DIR")
            .env("XDG_CONFIG_HOME", config_home)
            .env("HOME", config_home)
            .env("NO_COLOR", "1");
        Self { cmd }
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    /// The password, through `FORKMAIL_PASSWORD`.
    pub fn password(mut self, password: &str) -> Self {
        self.cmd.env("FORKMAIL_PASSWORD", password);
        self
    }

    /// Sets an environment variable of the command.
    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    /// Runs to completion with `stdin` as input.
    pub fn run(mut self, stdin: &[u8]) -> Output {
        let mut child = self
            .cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn forkmail");
        let mut input = child.stdin.take().expect("a stdin pipe");
        let data = stdin.to_vec();
        // A separate writer, so a client that stops reading early cannot deadlock the test.
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&data);
        });
        let out = child.wait_with_output().expect("wait for forkmail");
        writer.join().expect("the stdin writer");
        out
    }

    /// Runs and asserts success, returning stdout.
    pub fn ok(self, stdin: &[u8]) -> String {
        let out = self.run(stdin);
        assert!(
            out.status.success(),
            "forkmail failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }
}
