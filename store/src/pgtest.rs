//! A throw-away PostgreSQL cluster for tests and the benchmark: `initdb` into a fresh temporary
//! directory, `postgres` on a free loopback port, one database per caller, and `pg_ctl stop
//! -m immediate` plus the directory's removal on drop.
//!
//! Only `std::process`, so that nothing but the PostgreSQL binaries is needed (15 from Debian's
//! `postgresql-15`, found in `/usr/lib/postgresql/15/bin`, by `pg_config --bindir` or on `PATH`).
//! Tests run as root, which `initdb` refuses, so as root the cluster is made and run by the
//! `postgres` system user (`runuser`) in a directory chowned to it. Authentication is `trust`
//! on the unix socket (inside the directory) and on 127.0.0.1; `fsync` stays on, as a real
//! deployment has it, so timings mean something.
//!
//! Missing PostgreSQL is a [`Skip`] on a developer's machine and a panic when `CI=true`: a
//! component CI lacks must fail the run, never quietly shrink it. Everything the cluster prints
//! goes to `cluster.log` in the directory, and a start-up failure quotes its tail.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::StoreLocation;

/// Why no cluster could be started on this machine (PostgreSQL is not installed, or there is
/// no user to run it as). The caller prints `skipped: {skip}` and returns.
#[derive(Debug, Clone)]
pub struct Skip(pub String);

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A running (or stopped, between [`Cluster::stop`] and [`Cluster::start_again`]) cluster that
/// is removed, processes and files, when dropped.
pub struct Cluster {
    bindir: PathBuf,
    /// The temporary directory: `data/`, `socket/` and `cluster.log`.
    dir: PathBuf,
    port: u16,
    /// `Some((uid, gid))` of the `postgres` user when we are root and run the binaries as it.
    run_as: Option<(u32, u32)>,
    /// The server (or `runuser` waiting for it) while it runs. Our own child rather than
    /// `pg_ctl start`'s orphan, so that we reap it and leave not even a zombie behind.
    server: Option<Child>,
}

/// How many times `start` picks another port when the one it chose was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// How long a start (with crash recovery after [`Cluster::stop`]) may take.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Appended to `postgresql.conf`: small, loopback only, durable.
const SETTINGS: &str = "
listen_addresses = '127.0.0.1'
max_connections = 100
shared_buffers = 16MB
fsync = on
logging_collector = off
";

impl Cluster {
    /// Makes and starts a new cluster, or says why this machine cannot (panicking instead
    /// when `CI=true`). A cluster that is installed but fails to start panics with its log.
    pub fn start() -> Result<Cluster, Skip> {
        match Self::prerequisites() {
            Ok((bindir, run_as)) => Ok(Self::init(bindir, run_as)),
            Err(skip) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!(
                "CI=true and no PostgreSQL cluster can be started: {skip} \
                 (.ci/run installs postgresql-15)"
            ),
            Err(skip) => Err(skip),
        }
    }

    /// The TCP port on 127.0.0.1, the same across [`Cluster::start_again`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's data directory (`PGDATA`): every file the server writes, for tests that
    /// search what reached the disk.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The URL of database `name` as the superuser `postgres` (no password: trust).
    pub fn url(&self, name: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates an empty database (lower-case letters, digits, `_`) and returns its location.
    pub fn create_database(&self, name: &str) -> StoreLocation {
        check_database_name(name);
        self.admin()
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        StoreLocation::parse(&self.url(name)).expect("a test cluster URL parses")
    }

    /// Creates database `to` as a copy of `from` (`CREATE DATABASE .. TEMPLATE`), schema and
    /// rows alike, and returns its location: how the benchmark gives each copy of a deployment
    /// a store of its own without making it again. Nobody may be connected to `from`;
    /// PostgreSQL waits a few seconds for backends that are still exiting.
    pub fn copy_database(&self, from: &str, to: &str) -> StoreLocation {
        for name in [from, to] {
            check_database_name(name);
        }
        self.admin()
            .batch_execute(&format!("CREATE DATABASE {to} TEMPLATE {from}"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {to} TEMPLATE {from}: {e}"));
        StoreLocation::parse(&self.url(to)).expect("a test cluster URL parses")
    }

    /// Stops the server at once (`-m immediate`, like a crash or a lost host): connections
    /// break, the data stays. [`Cluster::start_again`] brings it back on the same port.
    pub fn stop(&mut self) {
        if let Err(e) = self.stop_server() {
            panic!("stopping the test cluster: {e}");
        }
    }

    /// Starts a stopped cluster again on its port (after crash recovery, as after a real loss).
    pub fn start_again(&mut self) {
        if self.server.is_none() {
            let server = self
                .start_server()
                .unwrap_or_else(|e| panic!("restarting the test cluster: {e}"));
            self.server = Some(server);
        }
    }

    /// The last lines of `cluster.log` (initdb's and the server's output).
    pub fn log_tail(&self) -> String {
        log_tail(&self.dir)
    }

    /// A connection to the `postgres` database, for creating others.
    fn admin(&self) -> ::postgres::Client {
        ::postgres::Client::connect(&self.url("postgres"), ::postgres::NoTls)
            .unwrap_or_else(|e| panic!("connecting to the test cluster: {e}\n{}", self.log_tail()))
    }

    /// Finds the binaries and, as root, the `postgres` user; `Err` when either is missing.
    fn prerequisites() -> Result<(PathBuf, Option<(u32, u32)>), Skip> {
        let bindir = find_bindir().ok_or_else(|| {
            Skip(
                "PostgreSQL is not installed (no initdb in /usr/lib/postgresql/15/bin, \
                 pg_config --bindir or PATH); apt-get install postgresql-15"
                    .into(),
            )
        })?;
        let run_as = if effective_uid() == Some(0) {
            let id = |flag: &str| -> Option<u32> {
                let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
                String::from_utf8(out.stdout).ok()?.trim().parse().ok()
            };
            match (id("-u"), id("-g")) {
                (Some(uid), Some(gid)) => Some((uid, gid)),
                _ => {
                    return Err(Skip(
                        "running as root, which initdb refuses, and there is no `postgres` \
                         user to run it as"
                            .into(),
                    ))
                }
            }
        } else {
            None
        };
        Ok((bindir, run_as))
    }

    fn init(bindir: PathBuf, run_as: Option<(u32, u32)>) -> Cluster {
        let dir = fresh_dir(run_as.is_some());
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.display()));
        fs::create_dir(dir.join("socket")).expect("mkdir socket");
        File::create(dir.join("cluster.log")).expect("create cluster.log");
        if let Some((uid, gid)) = run_as {
            for path in [dir.clone(), dir.join("socket"), dir.join("cluster.log")] {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
            }
        }
        let mut cluster = Cluster {
            bindir,
            dir,
            port: 0,
            run_as,
            server: None,
        };
        let data = cluster.dir.join("data");
        let data = data.to_str().expect("temporary paths are UTF-8");
        if let Err(e) = cluster.run(
            "initdb",
            &[
                "-D",
                data,
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
        ) {
            panic!("initdb: {e}");
        }
        let socket = cluster.dir.join("socket");
        let mut conf = OpenOptions::new()
            .append(true)
            .open(cluster.dir.join("data/postgresql.conf"))
            .expect("open postgresql.conf");
        writeln!(
            conf,
            "{SETTINGS}unix_socket_directories = '{}'",
            socket.display()
        )
        .expect("write postgresql.conf");
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            cluster.port = free_port();
            match cluster.start_server() {
                Ok(server) => {
                    cluster.server = Some(server);
                    return cluster;
                }
                // Someone took the port between our probe and the server's bind: pick again.
                Err(e) if e.contains("could not bind") || e.contains("already in use") => last = e,
                Err(e) => panic!("starting the test cluster: {e}"),
            }
        }
        panic!("starting the test cluster: no free port in {PORT_ATTEMPTS} attempts: {last}")
    }

    /// Starts `postgres` on the data directory and waits until `postmaster.pid` says it is
    /// ready (as `pg_ctl start -w` does), or until it exits, with its log as the reason.
    fn start_server(&self) -> Result<Child, String> {
        let data = self.dir.join("data");
        let port = self.port.to_string();
        let mut server = self
            .command("postgres")
            .args([
                "-D".as_ref(),
                data.as_os_str(),
                "-p".as_ref(),
                port.as_ref(),
            ])
            .spawn()
            .map_err(|e| format!("cannot run postgres: {e}"))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = server.try_wait() {
                return Err(format!(
                    "postgres exited: {status}; cluster.log ends:\n{}",
                    self.log_tail()
                ));
            }
            let pid_file = fs::read_to_string(data.join("postmaster.pid")).unwrap_or_default();
            if pid_file.lines().nth(7).map(str::trim) == Some("ready") {
                return Ok(server);
            }
            if Instant::now() > deadline {
                let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
                let _ = server.wait();
                return Err(format!(
                    "postgres not ready after {START_TIMEOUT:?}; cluster.log ends:\n{}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `pg_ctl stop -m immediate`, then reaps the server.
    fn stop_server(&mut self) -> Result<(), String> {
        let Some(mut server) = self.server.take() else {
            return Ok(());
        };
        let stopped = self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
        if stopped.is_err() {
            let _ = server.kill();
        }
        let _ = server.wait();
        stopped
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let data = self.dir.join("data");
        let mut all = vec!["-D", data.to_str().expect("temporary paths are UTF-8")];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all)
    }

    /// One of the binaries (run as `postgres` when we are root), in the cluster's directory,
    /// its output appended to `cluster.log`.
    fn command(&self, program: &str) -> Command {
        let binary = self.bindir.join(program);
        let mut command = match self.run_as {
            Some(_) => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(&binary);
                c
            }
            None => Command::new(&binary),
        };
        let log = OpenOptions::new()
            .append(true)
            .open(self.dir.join("cluster.log"))
            .expect("open cluster.log");
        command
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup cluster.log"))
            .stderr(log);
        command
    }

    /// Runs one of the binaries to completion; `Err` carries its status and the log's tail.
    fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let status = self
            .command(program)
            .args(args)
            .status()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "{program} {}: {status}; cluster.log ends:\n{}",
                args.join(" "),
                self.log_tail()
            ))
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(e) = self.stop_server() {
            eprintln!(
                "pgtest: stopping the cluster in {}: {e}",
                self.dir.display()
            );
            return; // keep the directory: its log says what happened
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Database names go into SQL unquoted, so only `[a-z][a-z0-9_]*` is allowed.
fn check_database_name(name: &str) {
    assert!(
        name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
        "database name {name:?}: use [a-z][a-z0-9_]*"
    );
}

/// `/usr/lib/postgresql/15/bin`, else `pg_config --bindir`, else the directory on `PATH`
/// that has `initdb`.
fn find_bindir() -> Option<PathBuf> {
    let has_initdb = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let debian = PathBuf::from("/usr/lib/postgresql/15/bin");
    if has_initdb(&debian) {
        return Some(debian);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_initdb(&dir) {
            return Some(dir);
        }
    }
    std::env::split_paths(&std::env::var_os("PATH")?).find(|dir| has_initdb(dir))
}

/// The effective uid, from `/proc/self/status` (no `unsafe` `geteuid` needed).
fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// A new path under the temporary directory; as root, under one the `postgres` user can
/// traverse (`/tmp` when `TMPDIR` is private).
fn fresh_dir(for_other_user: bool) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut base = std::env::temp_dir();
    let world_traversable = fs::metadata(&base).is_ok_and(|m| m.permissions().mode() & 0o001 != 0);
    if for_other_user && !world_traversable {
        base = PathBuf::from("/tmp");
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    base.join(format!(
        "forkmail-pg-{}-{}-{nanos:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A port nobody listens on right now (the kernel's choice for port 0).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

fn log_tail(dir: &Path) -> String {
    let log = fs::read_to_string(dir.join("cluster.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
