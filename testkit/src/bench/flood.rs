//! `--hello-flood`: what a flood of complete but bogus hellos costs the server, and whether a
//! real user still logs in meanwhile (docs/SECURITY.md, "Availability").
//!
//! Each step offers bogus hellos at a fixed rate from [`FLOODERS`] threads for a bounded time
//! (100 to 10,000 a second, [`RATES`]): fresh timestamps and random X25519 keys, a third naming users who
//! do not exist and the rest naming the deployment's real users with random signatures, each on
//! its own connection, the newest [`HELD`] of each thread held open and silent (as the attacker
//! did), from 32 loopback source addresses so that the run never runs out of ports. Meanwhile the real user logs in, lists the inbox and quits, one session after
//! another, at production PBKDF2 cost. Each step reports the rate achieved, the logins' latency
//! (held to 2 s) and the CPU time of the server's parent per bogus hello (from
//! `/proc/PID/stat`, so it includes accepting, reading, verifying, answering and closing).

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use forkmail_client::Session;
use forkmail_protocol::frame::encode_frame;

use super::report::{Report, Row, Section, Target, Unit};
use super::setup::{self, PEER, USER};
use super::stats::Samples;
use super::stores::Stores;
use super::suite::{self, Settings, PRODUCTION_ITERATIONS};
use super::BenchError;
use crate::procfs;
use crate::wire::bogus_hello;

/// Threads sending bogus hellos.
pub const FLOODERS: usize = 4;
/// Connections each flooding thread keeps open after its hello.
pub const HELD: usize = 100;
/// Offered rates, bogus hellos a second, each paced. (Not "as fast as the threads can go": four
/// threads connecting flat out overflow the listen backlog of 128 within microseconds, a
/// dropped SYN is retried after a second, and the figure would measure that, with the server
/// idle.)
const RATES: [u32; 6] = [100, 300, 1000, 3000, 6000, 10_000];
/// The real user's logins must each take at most this long.
const LOGIN_BOUND_MS: f64 = 2000.0;

/// Runs the flood steps and returns their figures.
pub fn run(settings: &Settings, progress: &mut dyn FnMut(&str)) -> Result<Report, BenchError> {
    let step = Duration::from_secs(if settings.quick { 3 } else { 8 });
    let stores = Stores::start(settings.store)?;
    let scratch = tempfile::Builder::new()
        .prefix("forkmail-bench-")
        .tempdir_in(&settings.work_dir)
        .map_err(BenchError::io(&settings.work_dir))?;
    progress("making a deployment with production-cost passwords");
    let deployment = stores.create(&scratch.path().join("flood"), PRODUCTION_ITERATIONS)?;
    let server = suite::start_host(&settings.server_bin, &deployment, "server", &[])?;
    let options = setup::connect_options(&deployment, USER, &server.addr.to_string())?;
    let mut rows = Vec::new();
    for rate in RATES {
        let offered = format!("{rate}/s");
        progress(&format!("bogus hellos offered at {offered} for {step:?}"));
        let cpu_before = parent_cpu(&server)?;
        let stop = AtomicBool::new(false);
        let sent = AtomicUsize::new(0);
        let started = Instant::now();
        let mut logins = Samples::with_capacity(64);
        let mut failures = Vec::new();
        thread::scope(|s| {
            for t in 0..FLOODERS {
                let (stop, sent) = (&stop, &sent);
                let per_thread = f64::from(rate) / FLOODERS as f64;
                s.spawn(move || flood(server.addr, t, per_thread, step, stop, sent));
            }
            while started.elapsed() < step {
                let t = Instant::now();
                match Session::connect(&options).and_then(|mut session| {
                    session.inbox()?;
                    session.quit()
                }) {
                    Ok(()) => logins.push(t.elapsed()),
                    Err(err) => failures.push(err.to_string()),
                }
            }
            stop.store(true, Ordering::Relaxed);
        });
        let elapsed = started.elapsed().as_secs_f64();
        let cpu = parent_cpu(&server)?.saturating_sub(cpu_before);
        let sent = sent.load(Ordering::Relaxed);
        if let Some(first) = failures.first() {
            return Err(BenchError::Check(format!(
                "{} of the real user's logins failed at {offered}, first: {first}",
                failures.len()
            )));
        }
        let achieved = sent as f64 / elapsed;
        let worst = logins.percentile(100.0);
        rows.push(
            Row::new(
                format!("bogus hellos absorbed, offered {offered}"),
                achieved,
                Unit::PerSecond,
            )
            .note(format!("{sent} hellos in {elapsed:.1} s")),
        );
        rows.push(
            Row::new(
                format!("slowest real login meanwhile ({offered})"),
                worst,
                Unit::Ms,
            )
            .target(Target::AtMost(LOGIN_BOUND_MS))
            .note(format!(
                "{} logins, p50 {:.0} ms",
                logins.len(),
                logins.p50()
            )),
        );
        rows.push(
            Row::new(
                format!("parent CPU per bogus hello ({offered})"),
                cpu.as_secs_f64() * 1e6 / sent.max(1) as f64,
                Unit::Micros,
            )
            .note(format!(
                "{:.0} ms of parent CPU in the step, {:.0}% of one core",
                cpu.as_secs_f64() * 1e3,
                cpu.as_secs_f64() / elapsed * 100.0
            )),
        );
    }
    suite::stop(server);
    Ok(Report {
        store: settings.store,
        context: vec![
            format!(
                "forkmail-bench --hello-flood ({} run)",
                if settings.quick { "quick" } else { "full" }
            ),
            format!("server binary: {}", settings.server_bin.display()),
            stores.describe(),
            format!(
                "{FLOODERS} flooding threads, each holding its newest {HELD} connections open; \
                 one real user ({USER}; {PEER} and unknown names are flooded) logging in, \
                 listing the inbox and quitting in a loop; {step:?} per rate"
            ),
        ],
        sections: vec![Section {
            title: "Bogus hello flood (PROTOCOL.md §5.1, SECURITY.md Availability)".into(),
            rows,
        }],
    })
}

/// One flooding thread: a bogus hello per connection, paced at `per_second`, until `stop` or
/// `step` has passed.
fn flood(
    addr: SocketAddr,
    thread: usize,
    per_second: f64,
    step: Duration,
    stop: &AtomicBool,
    sent: &AtomicUsize,
) {
    let started = Instant::now();
    let mut held = VecDeque::with_capacity(HELD + 1);
    let users = [USER.to_owned(), PEER.to_owned()];
    let interval = Duration::from_secs_f64(1.0 / per_second);
    let mut next = started;
    for i in 0usize.. {
        if stop.load(Ordering::Relaxed) || started.elapsed() >= step {
            return;
        }
        // Paced without catching up: a thread that fell behind (a connect that waited) goes
        // on at the rate from now, rather than in a burst that would overflow the backlog.
        next = next.max(Instant::now() - interval);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        next += interval;
        let user = match i % 3 {
            0 => format!("nobody{thread}x{i}"),
            n => users[n - 1].clone(),
        };
        let Ok(mut stream) = connect_from(source(thread, i), addr) else {
            continue;
        };
        use std::io::Write;
        if stream
            .write_all(&encode_frame(&bogus_hello(&user, 384)))
            .is_ok()
        {
            sent.fetch_add(1, Ordering::Relaxed);
        }
        held.push_back(stream);
        if held.len() > HELD {
            held.pop_front();
        }
    }
}

/// Loopback source addresses the flood spreads over: each (source, server) pair has ~28,000
/// ephemeral ports, and a refused connection's ports stay in TIME_WAIT for a minute, so one
/// source address alone would run out within the run and measure the port range, not the
/// server.
const SOURCES: usize = 32;

/// The source address of connection `i` of flooding thread `thread`: 127.0.1.1 to 127.0.1.32.
fn source(thread: usize, i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 1, 1 + ((thread + i * FLOODERS) % SOURCES) as u8)
}

/// Connects to `addr` from `source` (port chosen by the kernel).
fn connect_from(source: Ipv4Addr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(SocketAddrV4::new(source, 0)),
    )?;
    let SocketAddr::V4(v4) = addr else {
        return Err(std::io::ErrorKind::Unsupported.into());
    };
    connect(fd.as_raw_fd(), &SockaddrIn::from(v4))?;
    Ok(TcpStream::from(fd))
}

/// CPU time the server's parent has used so far.
fn parent_cpu(server: &crate::Server) -> Result<Duration, BenchError> {
    let pid = server.pid().as_raw();
    procfs::cpu_time(pid).ok_or_else(|| {
        BenchError::Check(format!(
            "no /proc/{pid}/stat for the server; is /proc mounted?"
        ))
    })
}
