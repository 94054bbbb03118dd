//! `forkmail-bench --scaling`: the figures docs/SCALING.md quotes. Sessions per second and sends
//! per second at one fixed concurrency, for four topologies in turn:
//!
//! 1. SQLite, one host, clients connecting directly;
//! 2. PostgreSQL, one host, directly;
//! 3. PostgreSQL, one host, through HAProxy (TCP mode, PROXY v2);
//! 4. PostgreSQL, two hosts on the same database, through HAProxy (round robin).
//!
//! The loads are the suite's own closed loops ([`scenarios::throughput`] and
//! [`scenarios::send_throughput`]) on low-cost deployments ([`LOW_ITERATIONS`]), so a figure
//! here and the suite's concurrency figures mean the same thing. Every topology gets a fresh
//! copy of its deployment (and, on PostgreSQL, of its database), made before any server runs,
//! so none inherits another's nonces or mail. Every host runs with `--max-sessions`
//! [`CONCURRENCY`], so that one host can hold all the senders' sessions open at once (at the
//! default 5, half of them would wait in the queue for the whole window); two hosts then have
//! twice the slots they need, and what they add is a second accept loop, not capacity.
//!
//! Everything runs on this one machine: the client threads, HAProxy, the hosts and PostgreSQL
//! share its cores, so two hosts here cannot show what two machines would.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::report::{render_sections, Row, Section, Unit};
use super::scenarios::{self, Throughput};
use super::sections::thousands;
use super::setup::{self, connect_options, BITS, PEER, USER};
use super::stores::{StoreKind, Stores};
use super::suite::{start_host, stop, Settings, LOW_ITERATIONS, PRELOAD_BODY_CHARS, SESSION_INBOX};
use super::BenchError;
use crate::deployment::Deployment;
use crate::haproxy::{self, Haproxy, PROXY_SOURCE};
use crate::server::Server;

/// Client threads in every figure, each with its own connection.
pub const CONCURRENCY: usize = 10;
/// Body of every mail the senders send: a short mail.
pub const SEND_BODY_CHARS: usize = 1000;
/// Untimed sessions through each topology before its figures, so every host has served one.
const WARMUP_SESSIONS: usize = 4;

/// One way of putting hosts and a store together.
#[derive(Debug, Clone, Copy)]
struct Topology {
    store: StoreKind,
    hosts: usize,
    haproxy: bool,
    /// The deployment directory (and database) this topology's copy gets.
    dir: &'static str,
}

const TOPOLOGIES: [Topology; 4] = [
    Topology {
        store: StoreKind::Sqlite,
        hosts: 1,
        haproxy: false,
        dir: "sqlite-one-direct",
    },
    Topology {
        store: StoreKind::Postgres,
        hosts: 1,
        haproxy: false,
        dir: "pg-one-direct",
    },
    Topology {
        store: StoreKind::Postgres,
        hosts: 1,
        haproxy: true,
        dir: "pg-one-haproxy",
    },
    Topology {
        store: StoreKind::Postgres,
        hosts: 2,
        haproxy: true,
        dir: "pg-two-haproxy",
    },
];

impl Topology {
    fn name(&self) -> String {
        format!(
            "{}, {}, {}",
            self.store.name(),
            match self.hosts {
                1 => "one host".to_owned(),
                2 => "two hosts".to_owned(),
                n => format!("{n} hosts"),
            },
            if self.haproxy {
                "through HAProxy"
            } else {
                "direct"
            }
        )
    }
}

/// One rate and the latencies behind it.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub per_second: f64,
    pub completed: usize,
    pub failures: usize,
    pub first_failure: Option<String>,
    pub seconds: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// With `concurrency` threads always busy, mean latency = concurrency / rate (Little's
    /// law); a mean far above the p50 means a few operations waited very long.
    pub mean_ms: f64,
    pub max_ms: f64,
}

impl From<&Throughput> for Figure {
    fn from(t: &Throughput) -> Self {
        Self {
            per_second: t.per_second(),
            completed: t.completed,
            failures: t.failures,
            first_failure: t.first_failure.clone(),
            seconds: t.elapsed.as_secs_f64(),
            p50_ms: t.latency.p50(),
            p99_ms: t.latency.p99(),
            mean_ms: t.latency.mean(),
            max_ms: t.latency.percentile(100.0),
        }
    }
}

/// What one topology measured.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    pub name: String,
    pub store: StoreKind,
    pub hosts: usize,
    pub haproxy: bool,
    /// One-shot sessions: connect, log in, list an inbox of [`SESSION_INBOX`], quit.
    pub sessions: Figure,
    /// Sends of [`SEND_BODY_CHARS`] characters in open sessions.
    pub sends: Figure,
    /// Session processes on each host while the senders were logged in: how the proxy spread
    /// them.
    pub senders_per_host: Vec<usize>,
}

/// The whole `--scaling` run.
#[derive(Debug, Clone, Serialize)]
pub struct ScalingReport {
    pub context: Vec<String>,
    pub concurrency: usize,
    pub seconds_per_figure: f64,
    pub configurations: Vec<Measured>,
}

/// Runs every topology in turn and returns the figures. `progress` hears one line per step.
pub fn run(
    settings: &Settings,
    progress: &mut dyn FnMut(&str),
) -> Result<ScalingReport, BenchError> {
    haproxy::binary().map_err(BenchError::NoHaproxy)?;
    let window = if settings.quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(5)
    };
    progress("starting a throw-away PostgreSQL cluster");
    // Declared before the deployments and servers, so dropped after them.
    let sqlite = Stores::start(StoreKind::Sqlite)?;
    let postgres = Stores::start(StoreKind::Postgres)?;
    let scratch = tempfile::Builder::new()
        .prefix("forkmail-bench-")
        .tempdir_in(&settings.work_dir)
        .map_err(BenchError::io(&settings.work_dir))?;
    let dir = scratch.path();

    progress(&format!(
        "making a deployment on each store ({BITS}-bit keys, PBKDF2 at {LOW_ITERATIONS})"
    ));
    let mut bases = Vec::new();
    for stores in [&sqlite, &postgres] {
        let base = stores.create(
            &dir.join(format!("base-{:?}", stores.kind())),
            LOW_ITERATIONS,
        )?;
        setup::preload(&base, USER, SESSION_INBOX, PRELOAD_BODY_CHARS)?;
        bases.push(base);
    }
    let mut deployments = Vec::new();
    for topology in TOPOLOGIES {
        let (stores, base) = match topology.store {
            StoreKind::Sqlite => (&sqlite, &bases[0]),
            StoreKind::Postgres => (&postgres, &bases[1]),
        };
        deployments.push(stores.copy(base, &dir.join(topology.dir))?);
    }

    let mut configurations = Vec::new();
    for (topology, deployment) in TOPOLOGIES.iter().zip(&deployments) {
        configurations.push(measure(
            &settings.server_bin,
            topology,
            deployment,
            window,
            progress,
        )?);
    }
    Ok(ScalingReport {
        context: vec![
            format!(
                "forkmail-bench --scaling ({} run)",
                if settings.quick { "quick" } else { "full" }
            ),
            format!("server binary: {}", settings.server_bin.display()),
            postgres.describe(),
            format!(
                "{CONCURRENCY} client threads, each with its own connection, for {} s per \
                 figure; every host with --max-sessions {CONCURRENCY}; HAProxy {} in TCP mode, \
                 round robin, PROXY v2 from {PROXY_SOURCE}",
                window.as_secs(),
                haproxy_version()
            ),
            format!(
                "RSA-{BITS} keys, PBKDF2-SHA512 at {} iterations (low cost); clients, HAProxy, \
                 hosts and PostgreSQL all on this machine ({} cores)",
                thousands(LOW_ITERATIONS as usize),
                std::thread::available_parallelism().map_or(0, |n| n.get())
            ),
        ],
        concurrency: CONCURRENCY,
        seconds_per_figure: window.as_secs_f64(),
        configurations,
    })
}

/// Starts `topology` on `deployment`, runs both loads through it, stops it.
fn measure(
    bin: &Path,
    topology: &Topology,
    deployment: &Deployment,
    window: Duration,
    progress: &mut dyn FnMut(&str),
) -> Result<Measured, BenchError> {
    let name = topology.name();
    progress(&format!("{name}: starting"));
    let slots = CONCURRENCY.to_string();
    let mut args = vec!["--max-sessions", &slots];
    if topology.haproxy {
        args.extend(["--proxy-protocol-from", PROXY_SOURCE]);
    }
    let hosts: Vec<Server> = (1..=topology.hosts)
        .map(|i| start_host(bin, deployment, &format!("host{i}"), &args))
        .collect::<Result<_, _>>()?;
    let proxy = if topology.haproxy {
        let addrs: Vec<_> = hosts.iter().map(|h| h.addr).collect();
        Some(Haproxy::start(&addrs).map_err(BenchError::NoHaproxy)?)
    } else {
        None
    };
    let front = proxy.as_ref().map_or(hosts[0].addr, |p| p.addr).to_string();
    let options = connect_options(deployment, USER, &front)?;
    for _ in 0..WARMUP_SESSIONS {
        let listed = scenarios::one_session(&options)?;
        if listed != SESSION_INBOX {
            return Err(BenchError::Check(format!(
                "{name}: the inbox holds {listed} mails, {SESSION_INBOX} were preloaded"
            )));
        }
    }

    progress(&format!(
        "{name}: sessions for {} s at concurrency {CONCURRENCY}",
        window.as_secs()
    ));
    let sessions = scenarios::throughput(&options, CONCURRENCY, window)?;
    progress(&format!(
        "{name}: sends of {} characters for {} s at concurrency {CONCURRENCY}",
        thousands(SEND_BODY_CHARS),
        window.as_secs()
    ));
    let mut senders_per_host = Vec::new();
    let sends =
        scenarios::send_throughput(&options, CONCURRENCY, window, PEER, SEND_BODY_CHARS, || {
            senders_per_host = hosts
                .iter()
                .map(|h| h.children().iter().filter(|c| !c.is_zombie()).count())
                .collect();
        })?;
    drop(proxy);
    for host in hosts {
        stop(host);
    }
    Ok(Measured {
        name,
        store: topology.store,
        hosts: topology.hosts,
        haproxy: topology.haproxy,
        sessions: Figure::from(&sessions),
        sends: Figure::from(&sends),
        senders_per_host,
    })
}

/// `2.6.12` from `haproxy -v`, or `?`.
fn haproxy_version() -> String {
    let output = haproxy::binary()
        .ok()
        .and_then(|bin| std::process::Command::new(bin).arg("-v").output().ok());
    output
        .and_then(|out| {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let version = text.split_whitespace().nth(2)?;
            Some(version.split('-').next().unwrap_or(version).to_owned())
        })
        .unwrap_or_else(|| "?".to_owned())
}

impl ScalingReport {
    /// Two tables, sessions and sends, one row per topology, each rate also as a fraction of
    /// the first topology's (SQLite, one host, direct).
    pub fn to_table(&self) -> String {
        let mut out = self.context.join("\n");
        out.push('\n');
        let seconds = self.seconds_per_figure;
        let sessions = Section {
            title: format!(
                "Sessions per second: {} threads, each running one-shot sessions (connect, log \
                 in, list an inbox of {SESSION_INBOX}, quit) back to back for {seconds:.0} s",
                self.concurrency
            ),
            rows: self.rows(|m| &m.sessions, "sessions", |_| String::new()),
        };
        let sends = Section {
            title: format!(
                "Sends per second: {} threads, each logged in once, sending {}-character mails \
                 back to back for {seconds:.0} s (each acknowledged after its durable commit)",
                self.concurrency,
                thousands(SEND_BODY_CHARS)
            ),
            rows: self.rows(
                |m| &m.sends,
                "sends",
                |m| {
                    let spread: Vec<String> =
                        m.senders_per_host.iter().map(|n| n.to_string()).collect();
                    format!("; sessions per host {}", spread.join(" + "))
                },
            ),
        };
        out.push_str(&render_sections(&[sessions, sends]));
        out
    }

    fn rows(
        &self,
        figure: impl Fn(&Measured) -> &Figure,
        what: &str,
        extra: impl Fn(&Measured) -> String,
    ) -> Vec<Row> {
        let first = self.configurations.first().map(|m| figure(m).per_second);
        self.configurations
            .iter()
            .map(|m| {
                let f = figure(m);
                let relative = first.map_or(String::new(), |first| {
                    format!(", {:.2}x of the first row", f.per_second / first)
                });
                let failed = match &f.first_failure {
                    Some(why) => format!("; {} failed: {why}", f.failures),
                    None => String::new(),
                };
                Row::new(m.name.clone(), f.per_second, Unit::PerSecond).note(format!(
                    "{} {what} in {:.1} s{relative}; p50 {:.2} ms, p99 {:.2} ms, mean {:.2} ms, \
                     max {:.1} ms{}{failed}",
                    f.completed,
                    f.seconds,
                    f.p50_ms,
                    f.p99_ms,
                    f.mean_ms,
                    f.max_ms,
                    extra(m)
                ))
            })
            .collect()
    }
}
