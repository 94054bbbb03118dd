//! Shared helpers for the end-to-end tests: throw-away deployments, the real forked server, the
//! real client binary, and (in [`wire`]) a frame-level client that can attack.
//!
//! Every test builds its own deployment in a temporary directory and its own server on
//! `127.0.0.1:0`, so tests run in parallel without sharing anything.

#![allow(dead_code)] // each test binary uses a different subset

pub mod wire;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Path of one of the workspace's binaries, in the directory above the test executable
/// (`target/debug/deps/..`). `cargo test --workspace` builds every package's binaries because
/// each binary crate has an integration test target of its own (keygen_cli, server_cli, e2e).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

/// A deployment made by the real `forkmail-keygen`, with fast test parameters.
pub struct Deployment {
    dir: tempfile::TempDir,
    users: Vec<String>,
}

impl Deployment {
    /// Users get the password `NAME-pw`. 2048-bit keys and 1,000 PBKDF2 iterations keep set-up
    /// fast; the protocol is the same.
    pub fn new(users: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let users_file = dir.path().join("users.toml");
        let mut toml = String::new();
        for u in users {
            toml.push_str(&format!(
                "[[user]]\nname = \"{u}\"\npassword = \"{u}-pw\"\n"
            ));
        }
        std::fs::write(&users_file, toml).unwrap();
        let out = Command::new(bin("forkmail-keygen"))
            .arg("init")
            .arg(dir.path().join("d"))
            .arg("--users")
            .arg(&users_file)
            .args(["--bits", "2048", "--kdf-iterations", "1000"])
            .output()
            .expect("run forkmail-keygen");
        assert!(
            out.status.success(),
            "keygen failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            dir,
            users: users.iter().map(|s| s.to_string()).collect(),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("d")
    }

    pub fn server_dir(&self) -> PathBuf {
        self.root().join("server")
    }

    pub fn database(&self) -> PathBuf {
        self.server_dir().join("mail.db")
    }

    pub fn profile(&self, user: &str) -> PathBuf {
        self.root().join("clients").join(user)
    }

    pub fn password(&self, user: &str) -> String {
        format!("{user}-pw")
    }

    /// A scratch path inside the deployment's temp dir.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn start_server(&self, extra: &[&str]) -> Server {
        Server::start(&self.server_dir(), extra)
    }

    /// The real client for `user`, password in the environment, pointed at `server`.
    pub fn client(&self, server: &Server, user: &str) -> ClientCmd {
        let mut cmd = Command::new(bin("forkmail"));
        cmd.arg("--profile")
            .arg(self.profile(user))
            .arg("--server")
            .arg(server.addr.to_string())
            .env("FORKMAIL_PASSWORD", self.password(user))
            .env("NO_COLOR", "1");
        ClientCmd { cmd }
    }
}

/// A client command being assembled.
pub struct ClientCmd {
    pub cmd: Command,
}

impl ClientCmd {
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn password(mut self, password: &str) -> Self {
        self.cmd.env("FORKMAIL_PASSWORD", password);
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
        let mut input = child.stdin.take().unwrap();
        let data = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&data);
        });
        let out = child.wait_with_output().expect("wait for forkmail");
        writer.join().unwrap();
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

/// The real forked server, stopped and reaped on drop.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Server {
    pub fn start(server_dir: &Path, extra: &[&str]) -> Self {
        Self::start_on(server_dir, "127.0.0.1:0", extra)
    }

    /// Starts the server on a given address (to test re-binding a port).
    pub fn start_on(server_dir: &Path, listen: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(bin("forkmail-server"))
            .arg("--dir")
            .arg(server_dir)
            .args(["--listen", listen])
            .args(extra)
            .env("RUST_LOG", "debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn forkmail-server");
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read server stdout");
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                std::thread::sleep(Duration::from_millis(200));
                panic!(
                    "server did not print its address: {line:?}\nlog:\n{}",
                    log.lock().unwrap()
                )
            });
        // Keep stdout drained so a stray write can never block the server.
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = stdout.read_to_string(&mut rest);
            assert!(
                rest.is_empty(),
                "server wrote more than one line to stdout: {rest:?}"
            );
        });
        Self {
            child: Some(child),
            addr,
            log,
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits up to `timeout` for `needle` to appear in the server's log.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log().contains(needle))
    }

    /// Child processes of the server, with their state letter from /proc (`Z` = zombie).
    pub fn children(&self) -> Vec<(i32, char)> {
        children_of(self.pid().as_raw())
    }

    /// Sends `signal` to the server process.
    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).expect("signal server");
    }

    /// SIGTERM, then waits up to 30 s for the exit status.
    pub fn stop(mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the server process to exit by itself.
    pub fn wait(mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id() as i32;
            let kids = children_of(pid);
            let _ = child.kill();
            let _ = child.wait();
            for (kid, _) in kids {
                let _ = kill(Pid::from_raw(kid), Signal::SIGKILL);
            }
        }
    }
}

/// Processes whose parent is `ppid`, read from /proc.
pub fn children_of(ppid: i32) -> Vec<(i32, char)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let parent = fields.next().and_then(|s| s.parse::<i32>().ok());
        if parent == Some(ppid) {
            out.push((pid, state));
        }
    }
    out
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Counts the rows of a table in the deployment database (read-only, from the test process).
pub fn count_rows(db: &Path, table: &str) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open db");
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .expect("count rows")
}
