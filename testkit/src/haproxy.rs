//! A throw-away HAProxy in TCP mode in front of several forkmail hosts, as docs/SCALING.md
//! describes: round robin, PROXY protocol v2 to the hosts (health checks included), redispatch
//! on a refused connection.
//!
//! HAProxy's outgoing connections come from [`PROXY_SOURCE`], not 127.0.0.1, so the hosts can
//! require a PROXY header from the proxy (`--proxy-protocol-from 127.0.0.5`) while the test
//! itself still talks to each host directly from 127.0.0.1.
//!
//! Missing HAProxy is a skip on a developer's machine and a panic when `CI=true`, like the
//! PostgreSQL cluster (`forkmail_store::pgtest`).

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The address HAProxy connects to the hosts from.
pub const PROXY_SOURCE: &str = "127.0.0.5";

/// A running HAProxy; killed, and its directory removed, on drop.
pub struct Haproxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Haproxy {
    /// Starts HAProxy in front of `hosts`, or says why this machine cannot (panicking instead
    /// when `CI=true`).
    pub fn start(hosts: &[SocketAddr]) -> Result<Haproxy, String> {
        let bin = match binary() {
            Ok(bin) => bin,
            Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("CI=true and {why}; .ci/run installs it")
            }
            Err(why) => return Err(why),
        };
        let dir = tempfile::tempdir().map_err(|e| format!("a temporary directory: {e}"))?;
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("an address");
        let config = dir.path().join("haproxy.cfg");
        fs::write(&config, config_text(addr, hosts)).map_err(|e| format!("{e}"))?;
        let log = fs::File::create(dir.path().join("haproxy.log")).map_err(|e| format!("{e}"))?;
        let child = Command::new(&bin)
            .arg("-f")
            .arg(&config)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| format!("{e}"))?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let mut proxy = Haproxy { addr, child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline || proxy.child.try_wait().ok().flatten().is_some() {
                panic!(
                    "haproxy did not start listening on {addr}:\n{}",
                    proxy.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(proxy)
    }

    /// HAProxy's own output (warnings, health-check transitions).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("haproxy.cfg")
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The configuration docs/SCALING.md shows.
pub fn config_text(front: SocketAddr, hosts: &[SocketAddr]) -> String {
    let mut cfg = format!(
        "global
    maxconn 256
defaults
    mode tcp
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    retries 3
    option redispatch
frontend forkmail
    bind {front}
    default_backend hosts
backend hosts
    balance roundrobin
    source {PROXY_SOURCE}
"
    );
    for (i, host) in hosts.iter().enumerate() {
        cfg.push_str(&format!(
            "    server host{} {host} send-proxy-v2 check check-send-proxy inter 200ms fall 1 rise 2\n",
            i + 1
        ));
    }
    cfg
}

/// The `haproxy` binary, or why there is none (for a caller that wants to know before it
/// starts anything else).
pub fn binary() -> Result<PathBuf, String> {
    find_haproxy().ok_or_else(|| "haproxy is not installed (apt-get install haproxy)".to_owned())
}

fn find_haproxy() -> Option<PathBuf> {
    let candidates = [
        "/usr/sbin/haproxy",
        "/usr/local/sbin/haproxy",
        "/usr/bin/haproxy",
    ];
    if let Some(found) = candidates.iter().map(Path::new).find(|p| p.exists()) {
        return Some(found.to_owned());
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("haproxy"))
            .find(|p| p.exists())
    })
}

/// A port free on 127.0.0.1 a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
