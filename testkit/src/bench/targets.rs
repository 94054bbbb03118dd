//! Issue 12's targets, each held as a ratio to a floor measured in the same run, so that a slow
//! phase of the (shared) host moves figure and floor together and the verdict stays fair.
//!
//! The floors are what the work cannot avoid on this machine:
//! - a session: two RSA signatures at the deployment's key size (one by each side, one after
//!   the other on the critical path) plus starting a trivial process (`true`: fork, exec, exit,
//!   wait, which every forked session pays in kind);
//! - a 1 MB body (the largest the protocol takes, 1,000,000 characters): sealing and opening
//!   it with AES-256-GCM, moving it over loopback TCP once, and, for a send, one `fdatasync` of
//!   1 MB overwritten in place (as in a WAL that is reused). A read needs no write, so its floor has no fsync.
//!
//! "Beyond the empty session" is the figure minus what the same session pays for a request
//! that carries nothing (`Users`, a round trip with a small answer), so only the cost of the
//! body is held to its floor. The one-shot and listing figures run the real `forkmail` program,
//! since what they judge (process start, tickets, printing) lives there; its peak memory comes
//! from `/usr/bin/time -f %M` (Debian's `time` package), the kernel's own high-water mark.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use forkmail_client::Session;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::SystemRandom;
use ring::signature::{self, RsaKeyPair};

use super::report::{Row, Section, Target, Unit};
use super::scenarios::Throughput;
use super::stats::{repeat, Samples};
use super::BenchError;
use crate::deployment::Deployment;

/// Bytes of the large body: the protocol's maximum.
pub const LARGE_BODY: usize = 1_000_000;

/// The bounds.
const SESSION_OVER_FLOOR: f64 = 1.15;
const LARGE_OVER_FLOOR: f64 = 2.0;
const LISTING_CLIENT_MB: f64 = 16.0;
const LISTING_MICROS_PER_MESSAGE: f64 = 0.5;
const FIVE_WRITERS_OVER_ONE: f64 = 2.5;
const ONE_SHOT_OVER_CHEAP: f64 = 1.2;

/// The floors' building blocks, p50 in ms.
#[derive(Debug, Clone)]
pub struct Floors {
    pub bits: usize,
    pub sign_ms: f64,
    pub process_ms: f64,
    pub aes_seal_open_ms: f64,
    pub loopback_ms: f64,
    pub fsync_ms: f64,
}

impl Floors {
    fn session(&self) -> f64 {
        2.0 * self.sign_ms + self.process_ms
    }

    fn send(&self) -> f64 {
        self.read() + self.fsync_ms
    }

    fn read(&self) -> f64 {
        self.aes_seal_open_ms + self.loopback_ms
    }
}

/// Times the floors' parts; `key` has the deployment's key size, `dir` is on the deployments'
/// file system.
pub fn measure_floors(key: &RsaKeyPair, dir: &Path, count: usize) -> Result<Floors, BenchError> {
    let rng = SystemRandom::new();
    let mut sig = vec![0u8; key.public().modulus_len()];
    let sign = repeat(count, |_| {
        key.sign(&signature::RSA_PSS_SHA256, &rng, &[7u8; 60], &mut sig)
            .map_err(|_| BenchError::Check("RSA signing failed in ring".into()))
    })?;
    let process = repeat(count, |_| {
        let status = Command::new("true")
            .stdin(Stdio::null())
            .status()
            .map_err(BenchError::io("true (a trivial process)"))?;
        status
            .success()
            .then_some(())
            .ok_or_else(|| BenchError::Check(format!("`true` exited with {status}")))
    })?;
    Ok(Floors {
        bits: key.public().modulus_len() * 8,
        sign_ms: sign.p50(),
        process_ms: process.p50(),
        aes_seal_open_ms: aes_seal_open(count)?.p50(),
        loopback_ms: loopback(count)?.p50(),
        fsync_ms: overwrite_and_sync(dir, count.min(20))?.p50(),
    })
}

/// Overwrites [`LARGE_BODY`] bytes of an existing file in place and `fdatasync`s it, as a
/// commit into a WAL that is reused does: only data is flushed, no size or block allocation to
/// journal. (Appending, as the building blocks' probe does, also commits filesystem metadata,
/// which costs more on this machine: a floor that high would be too kind.)
fn overwrite_and_sync(dir: &Path, count: usize) -> Result<Samples, BenchError> {
    use std::os::unix::fs::FileExt;
    let path = dir.join("fsync-floor-probe");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(BenchError::io(&path))?;
    let data = vec![b'x'; LARGE_BODY];
    file.write_all_at(&data, 0)
        .and_then(|()| file.sync_all())
        .map_err(BenchError::io(&path))?;
    let samples = repeat(count, |i| {
        let data = vec![b'a' + (i % 26) as u8; LARGE_BODY];
        file.write_all_at(&data, 0)
            .and_then(|()| file.sync_data())
            .map_err(BenchError::io(&path))
    })?;
    drop(file);
    std::fs::remove_file(&path).map_err(BenchError::io(&path))?;
    Ok(samples)
}

/// Seals then opens [`LARGE_BODY`] bytes with AES-256-GCM, in place, as a frame is.
fn aes_seal_open(count: usize) -> Result<Samples, BenchError> {
    let failed = |what: &str| BenchError::Check(format!("AES-256-GCM {what} failed in ring"));
    let key = UnboundKey::new(&aead::AES_256_GCM, &[9u8; 32])
        .map(LessSafeKey::new)
        .map_err(|_| failed("key set-up"))?;
    let mut buf = Vec::with_capacity(LARGE_BODY + aead::MAX_TAG_LEN);
    repeat(count, |i| {
        buf.clear();
        buf.resize(LARGE_BODY, b'a');
        let nonce = || {
            let mut n = [0u8; aead::NONCE_LEN];
            n[4..].copy_from_slice(&(i as u64).to_be_bytes());
            Nonce::assume_unique_for_key(n)
        };
        key.seal_in_place_append_tag(nonce(), Aad::empty(), &mut buf)
            .map_err(|_| failed("sealing"))?;
        key.open_in_place(nonce(), Aad::empty(), &mut buf)
            .map(drop)
            .map_err(|_| failed("opening"))
    })
}

/// [`LARGE_BODY`] bytes written to a 127.0.0.1 socket and read whole by another thread, which
/// answers with one byte: one transfer plus one small round trip.
fn loopback(count: usize) -> Result<Samples, BenchError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(BenchError::io("127.0.0.1:0"))?;
    let addr = listener
        .local_addr()
        .map_err(BenchError::io("127.0.0.1:0"))?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut conn, _) = listener.accept()?;
        conn.set_nodelay(true)?;
        let mut buf = vec![0u8; LARGE_BODY];
        for _ in 0..count {
            conn.read_exact(&mut buf)?;
            conn.write_all(&[1])?;
        }
        Ok(())
    });
    let mut conn = TcpStream::connect(addr).map_err(BenchError::io(addr.to_string()))?;
    conn.set_nodelay(true)
        .map_err(BenchError::io(addr.to_string()))?;
    let data = vec![b'x'; LARGE_BODY];
    let samples = repeat(count, |_| {
        let mut ack = [0u8; 1];
        conn.write_all(&data)
            .and_then(|()| conn.read_exact(&mut ack))
            .map_err(BenchError::io(addr.to_string()))
    })?;
    drop(conn);
    match echo.join() {
        Ok(Ok(())) => Ok(samples),
        Ok(Err(err)) => Err(BenchError::Check(format!("loopback reader: {err}"))),
        Err(_) => Err(BenchError::Check("the loopback reader panicked".into())),
    }
}

/// Latency of `count` `Users` requests in an open session: a request that carries nothing,
/// subtracted from the large send and read to leave what the body costs.
pub fn round_trips(session: &mut Session, count: usize) -> Result<Samples, BenchError> {
    repeat(count, |_| {
        session
            .users()
            .map(drop)
            .map_err(BenchError::client("listing the users"))
    })
}

/// Runs of the `forkmail` program: how long each took and the largest peak RSS among them.
#[derive(Debug, Clone, Default)]
pub struct CliRuns {
    pub samples: Samples,
    /// `None` when `/usr/bin/time` is not installed.
    pub peak_kib: Option<u64>,
}

/// Where the timed `forkmail` runs keep their state: one directory for the run, so a ticket
/// one run leaves is found by the next (as for a user's repeated commands).
pub struct CliHome(pub PathBuf);

impl CliHome {
    pub fn new(dir: &Path) -> Result<Self, BenchError> {
        use std::os::unix::fs::DirBuilderExt;
        let home = dir.join("cli-home");
        for sub in ["", "runtime", "config"] {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .recursive(true)
                .create(home.join(sub))
                .map_err(BenchError::io(home.join(sub)))?;
        }
        Ok(Self(home))
    }
}

/// Runs `forkmail --profile .. --server addr ARGS` as `user` `count` times after `warmup`
/// untimed runs, its output discarded; times each whole process.
pub fn cli_runs(
    home: &CliHome,
    deployment: &Deployment,
    user: &str,
    addr: &str,
    args: &[&str],
    warmup: usize,
    count: usize,
) -> Result<CliRuns, BenchError> {
    let bin = crate::client::bin_dir()
        .map_err(BenchError::io("the benchmark's directory"))?
        .join("forkmail");
    if !bin.is_file() {
        return Err(BenchError::Check(format!(
            "{} is not built; run `cargo build --release --bins` first",
            bin.display()
        )));
    }
    let time = Path::new("/usr/bin/time");
    let peak_file = home.0.join("peak-kib");
    let mut peak: Option<u64> = None;
    let mut samples = Samples::with_capacity(count);
    for i in 0..warmup + count {
        let mut cmd = if time.is_file() {
            let mut cmd = Command::new(time);
            cmd.arg("-f").arg("%M").arg("-o").arg(&peak_file).arg(&bin);
            cmd
        } else {
            Command::new(&bin)
        };
        cmd.arg("--profile")
            .arg(deployment.profile(user))
            .arg("--server")
            .arg(addr)
            .args(args)
            .env("FORKMAIL_PASSWORD", deployment.password(user))
            .env_remove("FORKMAIL_PROFILE")
            .env("XDG_RUNTIME_DIR", home.0.join("runtime"))
            .env("XDG_CONFIG_HOME", home.0.join("config"))
            .env("HOME", &home.0)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let out = cmd.output().map_err(BenchError::io(&bin))?;
        let elapsed = started.elapsed();
        if !out.status.success() {
            return Err(BenchError::Check(format!(
                "forkmail {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        if i >= warmup {
            samples.push(elapsed);
            if time.is_file() {
                let text =
                    std::fs::read_to_string(&peak_file).map_err(BenchError::io(&peak_file))?;
                let kib = text.trim().lines().last().and_then(|l| l.parse().ok());
                peak = peak.max(kib);
            }
        }
    }
    Ok(CliRuns {
        samples,
        peak_kib: peak,
    })
}

/// What the targets are judged on, all from one run.
pub struct Measured<'a> {
    pub floors: Floors,
    /// Low-cost sessions back to back (the library's, from connect to Goodbye).
    pub session: &'a Samples,
    /// 1 MB sends and first reads in open sessions, and `Users` round trips beside them.
    pub large_sends: &'a Samples,
    pub large_reads: &'a Samples,
    pub round_trips: Samples,
    /// `forkmail inbox --json` on an inbox of `small.0` and of `large.0` mails.
    pub listing_small: (usize, CliRuns),
    pub listing_large: (usize, CliRuns),
    /// 1,000-character sends at concurrency 1 and 5, each writer in its own session.
    pub one_writer: Throughput,
    pub five_writers: Throughput,
    /// `forkmail inbox` repeated on the production-cost deployment, and on the cheap one.
    pub one_shot_production: CliRuns,
    pub one_shot_cheap: CliRuns,
}

/// The issue-12 section: every target as its ratio, with the figures it was made of.
pub fn section(m: &Measured) -> Section {
    let f = &m.floors;
    let ratio = |label: &str, value: f64, target: Target, note: String| -> Row {
        Row::new(label, value, Unit::Ratio)
            .target(target)
            .note(note)
    };
    let session_p50 = m.session.p50();
    let trip = m.round_trips.p50();
    let send_extra = m.large_sends.p50() - trip;
    let read_extra = m.large_reads.p50() - trip;
    let (small_n, small) = &m.listing_small;
    let (large_n, large) = &m.listing_large;
    let per_message_us = (large.samples.p50() - small.samples.p50()) * 1000.0
        / (large_n.saturating_sub(*small_n).max(1)) as f64;
    let writers = m.five_writers.per_second() / m.one_writer.per_second();
    let mut rows = vec![
        ratio(
            "cheap-hash session p50 / floor",
            session_p50 / f.session(),
            Target::AtMost(SESSION_OVER_FLOOR),
            format!(
                "{session_p50:.2} ms / {:.2} ms (2 x RSA-{} sign {:.2} ms + process start {:.2} \
                 ms), n={}",
                f.session(),
                f.bits,
                f.sign_ms,
                f.process_ms,
                m.session.len()
            ),
        ),
        ratio(
            "1 MB send beyond the empty request / floor",
            send_extra / f.send(),
            Target::AtMost(LARGE_OVER_FLOOR),
            format!(
                "{:.2} - {trip:.2} ms / {:.2} ms (AES-GCM seal+open {:.2} + loopback {:.2} + \
                 1 MB overwrite + fdatasync {:.2}), p99 {:.2} ms, n={}",
                m.large_sends.p50(),
                f.send(),
                f.aes_seal_open_ms,
                f.loopback_ms,
                f.fsync_ms,
                m.large_sends.p99(),
                m.large_sends.len()
            ),
        ),
        ratio(
            "1 MB read beyond the empty request / floor",
            read_extra / f.read(),
            Target::AtMost(LARGE_OVER_FLOOR),
            format!(
                "{:.2} - {trip:.2} ms / {:.2} ms (AES-GCM seal+open + loopback), first reads, n={}",
                m.large_reads.p50(),
                f.read(),
                m.large_reads.len()
            ),
        ),
    ];
    let peak_mib = large.peak_kib.map(|kib| kib as f64 / 1024.0);
    let mut memory = Row::new(
        format!("forkmail inbox --json of {large_n}: client peak RSS"),
        peak_mib.unwrap_or(f64::NAN),
        Unit::Mebibytes,
    )
    .note(match peak_mib {
        Some(_) => "VmHWM by /usr/bin/time -f %M; 16 MB = 15.26 MiB".to_owned(),
        None => "not measured: needs /usr/bin/time (apt-get install time)".to_owned(),
    });
    if peak_mib.is_some() {
        memory = memory.target(Target::AtMost(LISTING_CLIENT_MB * 1e6 / 1048576.0));
    }
    rows.push(memory);
    rows.push(
        Row::new(
            format!("forkmail inbox --json: per message beyond {small_n}"),
            per_message_us,
            Unit::Micros,
        )
        .target(Target::AtMost(LISTING_MICROS_PER_MESSAGE))
        .note(format!(
            "({:.1} - {:.1} ms) / {} messages, whole processes, n={}",
            large.samples.p50(),
            small.samples.p50(),
            large_n - small_n,
            large.samples.len()
        )),
    );
    rows.push(ratio(
        "5 concurrent writers / 1 writer, sends/s",
        writers,
        Target::AtLeast(FIVE_WRITERS_OVER_ONE),
        format!(
            "{:.0} /s vs {:.0} /s, 1,000-character sends, each writer its own session{}",
            m.five_writers.per_second(),
            m.one_writer.per_second(),
            failures(&m.five_writers)
        ),
    ));
    rows.push(ratio(
        "repeated production-cost one-shot / cheap-hash one-shot",
        m.one_shot_production.samples.p50() / m.one_shot_cheap.samples.p50(),
        Target::AtMost(ONE_SHOT_OVER_CHEAP),
        format!(
            "forkmail inbox: {:.1} ms vs {:.1} ms p50, n={}",
            m.one_shot_production.samples.p50(),
            m.one_shot_cheap.samples.p50(),
            m.one_shot_production.samples.len()
        ),
    ));
    Section {
        title: "Issue 12 targets (same-run ratios to floors measured in this run)".into(),
        rows,
    }
}

fn failures(t: &Throughput) -> String {
    match &t.first_failure {
        Some(why) => format!(", {} failed: {why}", t.failures),
        None => String::new(),
    }
}
