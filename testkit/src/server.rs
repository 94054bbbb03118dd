//! The real `forkmail-server`, started on `127.0.0.1:0` and stopped (SIGTERM, or SIGKILL of it
//! and its session children when dropped).
//!
//! The server prints exactly one stdout line, `listening on IP:PORT`, once it accepts
//! connections: that is how the bound port is learnt, so tests run in parallel without choosing
//! ports. Its stderr log is either kept in memory, for the tests' assertions on it at
//! `RUST_LOG=debug`, or written to a file at the level the benchmark asks for (`warn`, so that
//! logging costs nothing in the figures and a failure can still be diagnosed), or it is a pipe
//! the test holds or closed altogether ([`GivenStderr`]: the faults of a broken log).
//!
//! The server forks a logger process (`forkmail-log`) that copies its log to this stderr; it is
//! not a session, so [`Server::children`] leaves it out and [`Server::logger`] finds it.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::client::bin;
use crate::error::KitError;
use crate::procfs::{self, Memory, Process};
use crate::wait_until;

/// How long [`Server::stop`] waits after SIGTERM: three times the server's own shutdown grace
/// (10 s), so only a server that ignores SIGTERM fails a test.
const TEST_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How to start a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The `forkmail-server` binary.
    pub bin: PathBuf,
    /// The deployment's `server/` directory (`--dir`).
    pub server_dir: PathBuf,
    /// `--listen`; `127.0.0.1:0` unless a test re-binds a known port.
    pub listen: String,
    /// Further arguments (`--max-sessions 1`, `--idle-timeout 2`...).
    pub extra_args: Vec<String>,
    /// The server's `RUST_LOG`.
    pub rust_log: String,
    /// Where the server's stderr goes: this file, or memory when `None` (read it with
    /// [`Server::log`]). [`ServerConfig::stderr`] overrides it.
    pub log_file: Option<PathBuf>,
    /// A stderr the test controls instead; [`Server::log`] is then empty.
    pub stderr: Option<GivenStderr>,
    /// `--demo` run in this working directory (serving `./demo`) instead of `--dir server_dir`.
    pub demo_in: Option<PathBuf>,
    /// Further environment variables (a fault-injection hook such as `FORKMAIL_TEST_WAL_SYNC`).
    pub env: Vec<(String, String)>,
}

/// A stderr for the server that the test controls.
#[derive(Debug, Clone)]
pub enum GivenStderr {
    /// The write end of a pipe whose read end the test holds (to close it, or leave it unread).
    Pipe(Arc<OwnedFd>),
    /// No descriptor 2 at all (started through `sh -c 'exec ... 2>&-'`).
    Closed,
}

impl ServerConfig {
    /// `bin` on `server_dir`, listening on `127.0.0.1:0`, logging at `debug` into memory.
    pub fn new(bin: &Path, server_dir: &Path) -> Self {
        Self {
            bin: bin.to_owned(),
            server_dir: server_dir.to_owned(),
            listen: "127.0.0.1:0".into(),
            extra_args: Vec::new(),
            rust_log: "debug".into(),
            log_file: None,
            stderr: None,
            demo_in: None,
            env: Vec::new(),
        }
    }

    /// `bin --demo` in `cwd`, listening on `127.0.0.1:0`, logging at `info` into memory.
    pub fn demo(bin: &Path, cwd: &Path) -> Self {
        Self {
            rust_log: "info".into(),
            demo_in: Some(cwd.to_owned()),
            ..Self::new(bin, Path::new(""))
        }
    }
}

/// Where a running server's log is.
enum Log {
    Memory(Arc<Mutex<String>>),
    File(PathBuf),
    /// The test's own stderr ([`GivenStderr`]).
    Given,
}

/// A running server, stopped and reaped on drop.
pub struct Server {
    /// `Some` until a consuming method (`stop`, `terminate`, `wait`) takes it.
    child: Option<Child>,
    /// The address it reported on stdout.
    pub addr: SocketAddr,
    log: Log,
}

impl Server {
    /// The workspace's `forkmail-server` on `server_dir` at `127.0.0.1:0`, with `extra`
    /// arguments. Panics if it does not start.
    pub fn start(server_dir: &Path, extra: &[&str]) -> Self {
        Self::start_on(server_dir, "127.0.0.1:0", extra)
    }

    /// The same on a given address (to test re-binding a port).
    pub fn start_on(server_dir: &Path, listen: &str, extra: &[&str]) -> Self {
        let config = ServerConfig {
            listen: listen.into(),
            extra_args: extra.iter().map(|&arg| arg.to_owned()).collect(),
            ..ServerConfig::new(&bin("forkmail-server"), server_dir)
        };
        Self::launch(&config).unwrap_or_else(|err| panic!("{err}"))
    }

    /// Starts the server `config` describes and waits for its `listening on` line.
    pub fn launch(config: &ServerConfig) -> Result<Self, KitError> {
        let stderr = match (&config.stderr, &config.log_file) {
            (Some(GivenStderr::Pipe(fd)), _) => {
                fd.try_clone().map_err(KitError::io("pipe"))?.into()
            }
            (Some(GivenStderr::Closed), _) => Stdio::inherit(),
            (None, Some(path)) => File::create(path).map_err(KitError::io(path))?.into(),
            (None, None) => Stdio::piped(),
        };
        let mut command = match config.stderr {
            Some(GivenStderr::Closed) => {
                let mut sh = Command::new("/bin/sh");
                sh.args(["-c", r#"exec "$0" "$@" 2>&-"#]).arg(&config.bin);
                sh
            }
            _ => Command::new(&config.bin),
        };
        match &config.demo_in {
            Some(cwd) => command.current_dir(cwd).arg("--demo"),
            None => command.arg("--dir").arg(&config.server_dir),
        };
        let mut child = command
            .args(["--listen", &config.listen])
            .args(&config.extra_args)
            .env("RUST_LOG", &config.rust_log)
            .env("NO_COLOR", "1")
            .envs(config.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|source| KitError::ServerSpawn {
                path: config.bin.clone(),
                source,
            })?;
        let (log, reader) = match (&config.log_file, child.stderr.take()) {
            _ if config.stderr.is_some() => (Log::Given, None),
            (Some(path), _) => (Log::File(path.clone()), None),
            (None, Some(stderr)) => {
                let (buffer, reader) = capture(stderr);
                (Log::Memory(buffer), Some(reader))
            }
            (None, None) => (Log::Memory(Arc::default()), None),
        };
        let mut line = String::new();
        let stdout = child.stdout.take().map(BufReader::new);
        let addr = stdout.and_then(|mut stdout| {
            stdout.read_line(&mut line).ok()?;
            let addr = line
                .trim()
                .strip_prefix("listening on ")?
                .parse::<SocketAddr>()
                .ok()?;
            Some((addr, stdout))
        });
        let Some((addr, mut stdout)) = addr else {
            let _ = child.kill();
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            // The server has exited and had no children yet, so its stderr is at EOF.
            if let Some(reader) = reader {
                let _ = reader.join();
            }
            return Err(KitError::ServerStartup {
                path: config.bin.clone(),
                detail: format!("first line {:?}, {status}", line.trim()),
                log: match &log {
                    Log::File(path) => format!("see its log {}", path.display()),
                    Log::Memory(buffer) => format!("its log:\n{}", lock(buffer)),
                    Log::Given => "its log went to the test's own stderr".to_owned(),
                },
            });
        };
        // Keep stdout drained so a stray write can never block the server.
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = stdout.read_to_string(&mut rest);
            assert!(
                rest.is_empty(),
                "server wrote more than one line to stdout: {rest:?}"
            );
        });
        Ok(Self {
            child: Some(child),
            addr,
            log,
        })
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child().id() as i32)
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        match &self.log {
            Log::Memory(buffer) => lock(buffer).clone(),
            Log::File(path) => std::fs::read_to_string(path).unwrap_or_default(),
            Log::Given => String::new(),
        }
    }

    /// Waits up to `timeout` for `needle` to appear in the server's log.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log().contains(needle))
    }

    /// The server's session processes (one per session), zombies included; not its logger, a
    /// key loader nor the WAL keeper, which hold no slot.
    pub fn children(&self) -> Vec<Process> {
        procfs::sessions(self.pid().as_raw())
    }

    /// The server's logger process, if it has one running.
    pub fn logger(&self) -> Option<Process> {
        procfs::children(self.pid().as_raw())
            .into_iter()
            .find(|child| procfs::name(child.pid).as_deref() == Some(procfs::LOGGER_NAME))
    }

    /// How many session processes the parent has forked so far: its `session started` lines
    /// (logged at debug, the level [`ServerConfig::new`] sets).
    pub fn sessions_forked(&self) -> usize {
        self.log().matches("session started").count()
    }

    /// Memory of the server's parent (listening) process.
    pub fn memory(&self) -> Result<Memory, KitError> {
        procfs::memory(self.pid().as_raw())
    }

    /// Sends `signal` to the server process; panics if it cannot be sent.
    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).expect("signal server");
    }

    /// SIGTERM, then the exit status; panics if the server is still running 30 s later.
    pub fn stop(self) -> ExitStatus {
        self.terminate(TEST_STOP_TIMEOUT).unwrap_or_else(|| {
            panic!("server did not exit within {TEST_STOP_TIMEOUT:?} of SIGTERM")
        })
    }

    /// SIGTERM, then waits up to `grace` for the server to finish its sessions and exit. `None`
    /// if it had to be killed.
    pub fn terminate(mut self, grace: Duration) -> Option<ExitStatus> {
        let child = self.child.take()?;
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        reap_within(child, grace)
    }

    /// Waits up to `timeout` for the server to exit by itself; kills it and returns `None` if it
    /// does not.
    pub fn wait(mut self, timeout: Duration) -> Option<ExitStatus> {
        reap_within(self.child.take()?, timeout)
    }

    fn child(&self) -> &Child {
        // Only the consuming methods take the child, so a live `Server` always has one.
        self.child.as_ref().expect("a running server")
    }
}

impl Drop for Server {
    /// SIGKILL, without a grace period: whatever was being tested is over.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let sessions = procfs::children(child.id() as i32);
            let _ = child.kill();
            let _ = child.wait();
            for session in sessions {
                let _ = kill(Pid::from_raw(session.pid), Signal::SIGKILL);
            }
        }
    }
}

/// Copies everything `stderr` yields into a shared buffer until it closes.
fn capture(mut stderr: impl Read + Send + 'static) -> (Arc<Mutex<String>>, JoinHandle<()>) {
    let buffer = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&buffer);
    let reader = std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = stderr.read(&mut chunk) {
            lock(&sink).push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
    (buffer, reader)
}

/// The log buffer, even if a thread panicked while holding it (the text is still good).
fn lock(buffer: &Mutex<String>) -> std::sync::MutexGuard<'_, String> {
    buffer
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Polls `child` until it exits or `timeout` passes; then kills and reaps it.
fn reap_within(mut child: Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_that_never_says_listening_is_a_startup_error_showing_its_log() {
        let dir = tempfile::tempdir().unwrap();
        // `sh --dir ...` refuses the option on stderr and exits.
        let err = Server::launch(&ServerConfig::new(Path::new("/bin/sh"), dir.path()))
            .err()
            .expect("sh never prints a listening line");
        let KitError::ServerStartup { detail, log, .. } = &err else {
            panic!("{err}");
        };
        assert!(detail.starts_with("first line \"\""), "{detail}");
        let captured = log.strip_prefix("its log:\n").expect("the captured log");
        assert!(!captured.trim().is_empty(), "{err}");
    }

    #[test]
    fn a_missing_binary_is_a_spawn_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-server");
        let err = Server::launch(&ServerConfig::new(&missing, dir.path()))
            .err()
            .expect("nothing to run");
        assert!(matches!(err, KitError::ServerSpawn { .. }), "{err}");
        assert!(err.to_string().contains("no-such-server"), "{err}");
    }
}
