//! `forkmail-peers`: forkmail beside Dovecot (IMAP) and OpenSSH in one run, as ratios.
//! `bench/peers/run.sh` installs and starts the peers on 127.0.0.1 and calls this with their
//! ports; this module times both sides with the same loops, interleaved in rounds so that a
//! slow phase of the (shared) machine hits both alike.
//!
//! Each pair does the same work on each side:
//! - *login*: connect, authenticate, open a mailbox of 10, log out (forkmail: handshake, both
//!   RSA signatures, password, `Inbox`, `Quit`; IMAP: greeting, `LOGIN`, `SELECT INBOX`,
//!   `LOGOUT`); `ssh true` with a key is a whole `ssh` process, as a user runs it;
//! - *listing 10,000*: in an open session, forkmail's `Inbox` against IMAP `FETCH 1:* (FLAGS
//!   INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])`;
//! - *1 MB read*: a mail of 1,000,000 characters read again in an open session (forkmail
//!   `Read`, IMAP `FETCH n BODY[]`);
//! - *5 x 200 sends*: five connections at once, each its own session, 200 mails of 1,000
//!   characters each (forkmail `Send`, answered once durable; IMAP `APPEND`), the stored count
//!   checked on both sides afterwards.
//!
//! The IMAP client here is the least that does this: tagged commands, literals read whole,
//! nothing else of the protocol.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use forkmail_client::Session;
use forkmail_protocol::messages::Draft;

use super::report::{render_sections, Row, Section, Unit};
use super::scenarios;
use super::setup::{self, ascii_body, connect_options, PEER, USER};
use super::stats::Samples;
use super::suite::{start_host, stop, LOW_ITERATIONS, PRODUCTION_ITERATIONS};
use super::BenchError;
use crate::db;

/// What `run.sh` started and made.
#[derive(Debug, Clone)]
pub struct Peers {
    /// Dovecot's IMAP port on 127.0.0.1.
    pub imap_port: u16,
    /// IMAP users, all with password [`Peers::imap_password`]: `sha` (SHA512-CRYPT) and
    /// `argon` (ARGON2ID) with 10 mails each, `big` with 10,000, `large` with one 1 MB mail,
    /// `writer` with none.
    pub imap_password: String,
    /// sshd's port on 127.0.0.1, the key that logs in and the user.
    pub ssh_port: u16,
    pub ssh_key: PathBuf,
    pub ssh_user: String,
    pub ssh_known_hosts: PathBuf,
    pub server_bin: PathBuf,
    pub work_dir: PathBuf,
    pub rounds: usize,
}

/// Bodies of the mails in every measured mailbox, and of the sends.
pub const BODY_CHARS: usize = 1000;
const LARGE_CHARS: usize = 1_000_000;
const LISTED: usize = 10_000;
const WRITERS: usize = 5;
const SENDS_EACH: usize = 200;

/// The IMAP message `run.sh` and the appends store: a 1,000-character body.
pub fn imap_message(i: usize, body: &str) -> String {
    format!(
        "From: bob <bob@example.org>\r\nTo: alice <alice@example.org>\r\nSubject: Preloaded \
         mail number {i} for the benchmark\r\nDate: Tue, 1 Dec 2026 12:00:00 +0000\r\n\
         Message-ID: <{i}@peers.example.org>\r\n\r\n{}\r\n",
        body.replace('\n', "\r\n")
    )
}

/// Writes `count` messages into the maildir `dir` (`cur/`, already seen), as `run.sh` asks
/// before Dovecot first opens it.
pub fn fill_maildir(dir: &Path, count: usize, body_chars: usize) -> Result<(), BenchError> {
    let cur = dir.join("cur");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(BenchError::io(dir.join(sub)))?;
    }
    for i in 0..count {
        let path = cur.join(format!("1764590400.M{i}P1.peers:2,S"));
        std::fs::write(&path, imap_message(i, &ascii_body(body_chars, i)))
            .map_err(BenchError::io(&path))?;
    }
    Ok(())
}

/// A minimal IMAP4rev1 client over plain TCP on loopback.
struct Imap {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    tag: u32,
}

impl Imap {
    fn connect(port: u16) -> Result<Self, BenchError> {
        let addr = format!("127.0.0.1:{port}");
        let stream = TcpStream::connect(&addr).map_err(BenchError::io(&addr))?;
        stream.set_nodelay(true).map_err(BenchError::io(&addr))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(BenchError::io(&addr))?;
        let writer = stream.try_clone().map_err(BenchError::io(&addr))?;
        let mut imap = Self {
            reader: BufReader::new(stream),
            writer,
            tag: 0,
        };
        let greeting = imap.line()?;
        if !greeting.starts_with(b"* OK") {
            return Err(imap_error("greeting", &greeting));
        }
        Ok(imap)
    }

    fn line(&mut self) -> Result<Vec<u8>, BenchError> {
        let mut line = Vec::new();
        self.reader
            .read_until(b'\n', &mut line)
            .map_err(BenchError::io("the IMAP connection"))?;
        if line.is_empty() {
            return Err(BenchError::Check("Dovecot closed the connection".into()));
        }
        Ok(line)
    }

    /// Sends `command` tagged and reads everything up to its tagged answer, literals included;
    /// returns the untagged lines' count of `FETCH` responses and the bytes read.
    fn command(&mut self, command: &str) -> Result<(usize, usize), BenchError> {
        self.tag += 1;
        let tag = format!("a{}", self.tag);
        self.writer
            .write_all(format!("{tag} {command}\r\n").as_bytes())
            .map_err(BenchError::io("the IMAP connection"))?;
        self.finish(&tag, command)
    }

    fn finish(&mut self, tag: &str, command: &str) -> Result<(usize, usize), BenchError> {
        let (mut fetches, mut bytes) = (0, 0);
        loop {
            let line = self.line()?;
            bytes += line.len();
            if line.starts_with(b"* ") && line.windows(7).any(|w| w == b" FETCH ") {
                fetches += 1;
            }
            if let Some(len) = literal_len(&line) {
                let mut literal = vec![0u8; len];
                self.reader
                    .read_exact(&mut literal)
                    .map_err(BenchError::io("the IMAP connection"))?;
                bytes += len;
                continue;
            }
            if line.starts_with(tag.as_bytes()) && line.get(tag.len()) == Some(&b' ') {
                let rest = &line[tag.len() + 1..];
                if rest.starts_with(b"OK") {
                    return Ok((fetches, bytes));
                }
                return Err(imap_error(command, &line));
            }
        }
    }

    fn login(port: u16, user: &str, password: &str) -> Result<Self, BenchError> {
        let mut imap = Self::connect(port)?;
        imap.command(&format!("LOGIN {user} \"{password}\""))?;
        Ok(imap)
    }

    fn append(&mut self, message: &str) -> Result<(), BenchError> {
        self.tag += 1;
        let tag = format!("a{}", self.tag);
        self.writer
            .write_all(format!("{tag} APPEND INBOX {{{}}}\r\n", message.len()).as_bytes())
            .map_err(BenchError::io("the IMAP connection"))?;
        let go_on = self.line()?;
        if !go_on.starts_with(b"+") {
            return Err(imap_error("APPEND", &go_on));
        }
        self.writer
            .write_all(message.as_bytes())
            .and_then(|()| self.writer.write_all(b"\r\n"))
            .map_err(BenchError::io("the IMAP connection"))?;
        self.finish(&tag, "APPEND").map(drop)
    }

    /// `STATUS INBOX (MESSAGES)`.
    fn messages(&mut self) -> Result<usize, BenchError> {
        self.tag += 1;
        let tag = format!("a{}", self.tag);
        self.writer
            .write_all(format!("{tag} STATUS INBOX (MESSAGES)\r\n").as_bytes())
            .map_err(BenchError::io("the IMAP connection"))?;
        let mut count = None;
        loop {
            let line = self.line()?;
            let text = String::from_utf8_lossy(&line);
            if let Some(at) = text.find("MESSAGES ") {
                count = text[at + 9..]
                    .trim_end_matches(|c: char| !c.is_ascii_digit())
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|n| n.parse().ok());
            }
            if text.starts_with(&format!("{tag} ")) {
                return count.ok_or_else(|| imap_error("STATUS", &line));
            }
        }
    }
}

/// `{123}\r\n` at the end of a line: a literal of 123 bytes follows.
fn literal_len(line: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(line).ok()?.trim_end();
    let open = text.strip_suffix('}')?.rfind('{')?;
    text[open + 1..text.len() - 1].parse().ok()
}

fn imap_error(what: &str, line: &[u8]) -> BenchError {
    BenchError::Check(format!(
        "Dovecot answered {what} with {:?}",
        String::from_utf8_lossy(line).trim()
    ))
}

/// One IMAP "session" as timed against forkmail's: connect, LOGIN, SELECT INBOX, LOGOUT.
fn imap_session(port: u16, user: &str, password: &str) -> Result<(), BenchError> {
    let mut imap = Imap::login(port, user, password)?;
    imap.command("SELECT INBOX")?;
    imap.command("LOGOUT")?;
    Ok(())
}

fn ssh_true(peers: &Peers) -> Result<(), BenchError> {
    let status = Command::new("ssh")
        .args(["-F", "/dev/null", "-o", "BatchMode=yes", "-o"])
        .arg(format!(
            "UserKnownHostsFile={}",
            peers.ssh_known_hosts.display()
        ))
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .arg("-i")
        .arg(&peers.ssh_key)
        .arg("-p")
        .arg(peers.ssh_port.to_string())
        .arg(format!("{}@127.0.0.1", peers.ssh_user))
        .arg("true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .map_err(BenchError::io("ssh"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| BenchError::Check(format!("ssh true exited with {status}")))
}

fn timed(
    samples: &mut Samples,
    op: impl FnOnce() -> Result<(), BenchError>,
) -> Result<(), BenchError> {
    let started = Instant::now();
    op()?;
    samples.push(started.elapsed());
    Ok(())
}

/// Runs every pair and renders the table.
pub fn run(peers: &Peers, progress: &mut dyn FnMut(&str)) -> Result<String, BenchError> {
    let scratch = tempfile::Builder::new()
        .prefix("forkmail-peers-")
        .tempdir_in(&peers.work_dir)
        .map_err(BenchError::io(&peers.work_dir))?;
    let dir = scratch.path();
    progress("making forkmail deployments (RSA-3072; PBKDF2 1,000 and 210,000)");
    let low = setup::create(&dir.join("low"), LOW_ITERATIONS, None)?;
    let production = setup::create(&dir.join("production"), PRODUCTION_ITERATIONS, None)?;
    let big = low.copy_to(&dir.join("big"))?;
    setup::preload(&low, USER, 10, BODY_CHARS)?;
    setup::preload(&production, USER, 10, BODY_CHARS)?;
    setup::preload(&big, USER, LISTED, BODY_CHARS)?;

    let low_server = start_host(&peers.server_bin, &low, "server", &[])?;
    let production_server = start_host(&peers.server_bin, &production, "server", &[])?;
    let big_server = start_host(&peers.server_bin, &big, "server", &[])?;
    let low_options = connect_options(&low, USER, &low_server.addr.to_string())?;
    let production_options =
        connect_options(&production, USER, &production_server.addr.to_string())?;
    let big_options = connect_options(&big, USER, &big_server.addr.to_string())?;

    // The 1 MB mail, sent through the protocol; read again in the timed loop.
    let large_id = {
        let mut bob = Session::connect(&connect_options(&low, PEER, &low_server.addr.to_string())?)
            .map_err(BenchError::client("logging in"))?;
        let id = bob
            .send(&Draft {
                to: vec![USER.into()],
                title: "one large mail".into(),
                body: ascii_body(LARGE_CHARS, 0),
            })
            .map_err(BenchError::client("sending the 1 MB mail"))?;
        bob.quit().map_err(BenchError::client("logging out"))?;
        id
    };

    let mut s = Series::default();
    let password = peers.imap_password.as_str();
    // Warm-up, untimed: Dovecot builds its indexes on the first SELECT of each mailbox.
    for user in ["sha", "argon", "big", "large"] {
        let mut imap = Imap::login(peers.imap_port, user, password)?;
        imap.command("SELECT INBOX")?;
        imap.command("FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])")?;
        imap.command("LOGOUT")?;
    }
    let mut big_session =
        Session::connect(&big_options).map_err(BenchError::client("logging in"))?;
    let mut large_session =
        Session::connect(&low_options).map_err(BenchError::client("logging in"))?;
    let mut big_imap = Imap::login(peers.imap_port, "big", password)?;
    big_imap.command("SELECT INBOX")?;
    let mut large_imap = Imap::login(peers.imap_port, "large", password)?;
    large_imap.command("SELECT INBOX")?;
    large_session
        .read(large_id)
        .map_err(BenchError::client("reading the 1 MB mail"))?;
    large_imap.command("FETCH 1 BODY[]")?;

    progress(&format!(
        "{} interleaved rounds of logins, listings and reads",
        peers.rounds
    ));
    for _ in 0..peers.rounds {
        timed(&mut s.forkmail_cheap, || {
            scenarios::one_session(&low_options).map(drop)
        })?;
        timed(&mut s.dovecot_sha, || {
            imap_session(peers.imap_port, "sha", password)
        })?;
        timed(&mut s.forkmail_production, || {
            scenarios::one_session(&production_options).map(drop)
        })?;
        timed(&mut s.dovecot_argon, || {
            imap_session(peers.imap_port, "argon", password)
        })?;
        timed(&mut s.ssh, || ssh_true(peers))?;
        timed(&mut s.forkmail_list, || {
            let listed = big_session
                .inbox()
                .map_err(BenchError::client("listing 10,000"))?
                .len();
            check(listed, LISTED, "forkmail listed")
        })?;
        timed(&mut s.dovecot_list, || {
            let (fetched, _) = big_imap.command(
                "FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])",
            )?;
            check(fetched, LISTED, "Dovecot fetched")
        })?;
        timed(&mut s.forkmail_read, || {
            let mail = large_session
                .read(large_id)
                .map_err(BenchError::client("reading the 1 MB mail"))?;
            check(mail.body.len(), LARGE_CHARS, "forkmail read body bytes")
        })?;
        timed(&mut s.dovecot_read, || {
            let (_, bytes) = large_imap.command("FETCH 1 BODY[]")?;
            (bytes > LARGE_CHARS).then_some(()).ok_or_else(|| {
                BenchError::Check(format!("Dovecot's FETCH BODY[] returned {bytes} bytes"))
            })
        })?;
    }
    for session in [big_session, large_session] {
        session.quit().map_err(BenchError::client("logging out"))?;
    }

    progress("5 x 200 concurrent sends, then 5 x 200 concurrent APPENDs");
    let before = db::counts(&low.store()).messages;
    let peer_options = connect_options(&low, PEER, &low_server.addr.to_string())?;
    let forkmail_sends = concurrently(|| {
        let mut session =
            Session::connect(&peer_options).map_err(BenchError::client("logging in"))?;
        let draft = Draft {
            to: vec![USER.into()],
            title: "concurrent send".into(),
            body: ascii_body(BODY_CHARS, 0),
        };
        for _ in 0..SENDS_EACH {
            session
                .send(&draft)
                .map_err(BenchError::client("sending"))?;
        }
        session.quit().map_err(BenchError::client("logging out"))
    })?;
    let forkmail_stored = db::counts(&low.store()).messages - before;
    let imap_before = Imap::login(peers.imap_port, "writer", password)?.messages()?;
    let message = imap_message(0, &ascii_body(BODY_CHARS, 0));
    let dovecot_appends = concurrently(|| {
        let mut imap = Imap::login(peers.imap_port, "writer", password)?;
        for _ in 0..SENDS_EACH {
            imap.append(&message)?;
        }
        imap.command("LOGOUT").map(drop)
    })?;
    let dovecot_stored =
        Imap::login(peers.imap_port, "writer", password)?.messages()? - imap_before;
    let expected = (WRITERS * SENDS_EACH) as u64;
    check(
        forkmail_stored as usize,
        expected as usize,
        "forkmail stored",
    )?;
    check(dovecot_stored, expected as usize, "Dovecot stored")?;

    for server in [low_server, production_server, big_server] {
        stop(server);
    }
    let sends = (forkmail_sends, dovecot_appends, expected);
    Ok(render(&s, sends, peers.rounds))
}

fn check(got: usize, want: usize, what: &str) -> Result<(), BenchError> {
    (got == want)
        .then_some(())
        .ok_or_else(|| BenchError::Check(format!("{what} {got}, expected {want}")))
}

/// Runs `op` on [`WRITERS`] threads at once; the time until the last one finished.
fn concurrently(op: impl Fn() -> Result<(), BenchError> + Sync) -> Result<Duration, BenchError> {
    let started = Instant::now();
    let results: Vec<Result<(), BenchError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..WRITERS).map(|_| scope.spawn(&op)).collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(BenchError::Check("a writer thread panicked".into())))
            })
            .collect()
    });
    let elapsed = started.elapsed();
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    Ok(elapsed)
}

#[derive(Default)]
struct Series {
    forkmail_cheap: Samples,
    forkmail_production: Samples,
    dovecot_sha: Samples,
    dovecot_argon: Samples,
    ssh: Samples,
    forkmail_list: Samples,
    dovecot_list: Samples,
    forkmail_read: Samples,
    dovecot_read: Samples,
}

fn render(
    s: &Series,
    (forkmail, dovecot, count): (Duration, Duration, u64),
    rounds: usize,
) -> String {
    let pair = |label: &str, ours: &Samples, theirs: &Samples, them: &str| {
        Row::new(label, ours.p50() / theirs.p50(), Unit::Ratio).note(format!(
            "forkmail {:.2} ms vs {them} {:.2} ms (p50 of {rounds})",
            ours.p50(),
            theirs.p50()
        ))
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let rows = vec![
        pair(
            "cheap-hash login (PBKDF2 1,000) / Dovecot SHA512-CRYPT login",
            &s.forkmail_cheap,
            &s.dovecot_sha,
            "Dovecot",
        ),
        pair(
            "production login (PBKDF2 210,000) / Dovecot ARGON2ID login",
            &s.forkmail_production,
            &s.dovecot_argon,
            "Dovecot",
        ),
        pair(
            "production login / Dovecot SHA512-CRYPT login",
            &s.forkmail_production,
            &s.dovecot_sha,
            "Dovecot",
        ),
        pair(
            "cheap-hash login / ssh true (key)",
            &s.forkmail_cheap,
            &s.ssh,
            "ssh",
        ),
        pair(
            "production login / ssh true (key)",
            &s.forkmail_production,
            &s.ssh,
            "ssh",
        ),
        pair(
            "list 10,000 / IMAP FETCH of 10,000 headers",
            &s.forkmail_list,
            &s.dovecot_list,
            "Dovecot",
        ),
        pair(
            "read 1 MB / IMAP FETCH BODY[] of 1 MB",
            &s.forkmail_read,
            &s.dovecot_read,
            "Dovecot",
        ),
        Row::new(
            "5 x 200 concurrent sends / 5 x 200 concurrent APPENDs",
            ms(forkmail) / ms(dovecot),
            Unit::Ratio,
        )
        .note(format!(
            "forkmail {:.0} ms vs Dovecot {:.0} ms; {count} stored on each side, counted after",
            ms(forkmail),
            ms(dovecot)
        )),
    ];
    let section = Section {
        title: "forkmail / peer, same run, interleaved (below 1: forkmail takes less time)".into(),
        rows,
    };
    render_sections(&[section])
}
