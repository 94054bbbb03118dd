//! The real `forkmail-server`, started on `127.0.0.1:0` for one part of the run and stopped
//! (SIGTERM, then reaped) when done or dropped.
//!
//! The server prints exactly one stdout line, `listening on IP:PORT`; that is how the bound port
//! is learnt. Its log goes to a file beside the deployment at `RUST_LOG=warn`, so a failure can be
//! diagnosed and logging costs nothing in the figures.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::procfs::{self, Memory};
use super::BenchError;

/// How long a stopped server gets to finish its sessions (its own grace is 10 s).
const STOP_GRACE: Duration = Duration::from_secs(15);

/// A running server process.
pub struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    /// Kept open so the server never writes to a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

impl ServerProcess {
    /// Starts `bin --dir server_dir --listen 127.0.0.1:0`, logging to `log`, and waits for its
    /// `listening on` line.
    pub fn start(bin: &Path, server_dir: &Path, log: &Path) -> Result<Self, BenchError> {
        let log_file = File::create(log).map_err(BenchError::io(log))?;
        let mut child = Command::new(bin)
            .arg("--dir")
            .arg(server_dir)
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .map_err(|source| BenchError::ServerSpawn {
                path: bin.to_owned(),
                source,
            })?;
        let startup = |detail: String| BenchError::ServerStartup {
            path: bin.to_owned(),
            log: log.to_owned(),
            detail,
        };
        let Some(stdout) = child.stdout.take() else {
            return Err(startup("no stdout pipe".into()));
        };
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        let read = stdout.read_line(&mut line);
        let addr = match read {
            Ok(_) => line
                .trim()
                .strip_prefix("listening on ")
                .and_then(|addr| addr.parse::<SocketAddr>().ok()),
            Err(_) => None,
        };
        let Some(addr) = addr else {
            let _ = child.kill();
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            return Err(startup(format!("first line {:?}, {status}", line.trim())));
        };
        Ok(Self {
            child,
            addr,
            _stdout: stdout,
        })
    }

    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Memory of the parent (listening) process.
    pub fn parent_memory(&self) -> Result<Memory, BenchError> {
        procfs::memory(self.pid())
    }

    /// Memory of the one session process that should be running now.
    pub fn session_memory(&self) -> Result<Memory, BenchError> {
        let children = procfs::children(self.pid());
        match children.as_slice() {
            [child] => procfs::memory(*child),
            [] => Err(BenchError::NoSessionProcess {
                server_pid: self.pid(),
            }),
            many => Err(BenchError::Check(format!(
                "expected one session process of server {}, found {}",
                self.pid(),
                many.len()
            ))),
        }
    }

    /// SIGTERM, then waits for the server (and so its sessions) to exit; SIGKILL after 15 s
    /// (the server's own grace is 10 s).
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// The log file used for a server on `deployment_root`.
pub fn log_path(deployment_root: &Path) -> PathBuf {
    deployment_root.join("server.log")
}
