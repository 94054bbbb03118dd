//! Logging that never stops or slows a session: every server process hands each log line to a
//! small logger process through a pipe, with one non-blocking write, and drops the line (counting
//! it) when the pipe is full or broken.
//!
//! Why a process and not a thread: the parent forks one child per session and must stay
//! single-threaded for that to be safe (a worker thread would hold locks a child inherits, and
//! would not exist in the children anyway). So [`start`], first thing in `main`, before any key,
//! store or socket is touched, makes a pipe and forks the logger, which copies the pipe to the
//! real stderr with ordinary blocking writes. If stderr errors (reader gone, disk full) the logger
//! discards the bytes and keeps draining; if stderr stalls, the logger stalls, the pipe fills and
//! the servers' writes fail with `EAGAIN` at once. The logger holds no listener nor any other
//! descriptor of the server, ignores SIGINT, SIGTERM and SIGHUP (a Ctrl-C or a shutdown must not
//! lose the last lines) and exits on end of file, once the parent and every session have closed
//! the write end.
//!
//! On the servers' side, [`PipeWriter`] is the `tracing_subscriber` writer: a line is gathered in
//! memory and written with one `write(2)` of at most [`MAX_LINE`] bytes (`PIPE_BUF`, so that
//! lines from different processes never interleave); a longer one is truncated with a marker.
//! `O_NONBLOCK` is set on our own pipe only, never on the inherited stderr, which other programs
//! may share. A line that cannot be written is counted, per process, and the next line that gets
//! through is preceded by "N log lines dropped (stderr was not keeping up)". Nothing a session
//! does, and no reply to a client, ever waits on a log write.
//!
//! The logger is a child of the parent, named `forkmail-log` (in `ps` and `/proc/PID/comm`).
//! The parent's reaping hands it every pid that is not a session ([`reaped`]): if the logger died,
//! a new one is started, and the lines dropped meanwhile are reported by count.

use std::borrow::Cow;
use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{signal, SigHandler, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{dup2, fork, pipe2, ForkResult, Pid};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::MakeWriter;

/// The longest line written to the pipe: `PIPE_BUF`, the most one `write(2)` to a pipe carries
/// atomically (POSIX), so a line is never split nor mixed with another process's line.
pub const MAX_LINE: usize = nix::libc::PIPE_BUF;
/// Ends a line cut to [`MAX_LINE`].
const TRUNCATED: &str = " [line truncated]\n";
/// The logger's process name.
pub const LOGGER_NAME: &CStr = c"forkmail-log";

/// The write end of the pipe to the logger, non-blocking; `None` before [`start`] and after
/// [`finish`]. Only [`finish`] and a restart of the logger take the write lock.
static PIPE: RwLock<Option<File>> = RwLock::new(None);
/// The logger's pid (0: none), as the parent knows it.
static LOGGER: AtomicI32 = AtomicI32::new(0);
/// The lines this process dropped and has not yet reported.
static DROPS: Drops = Drops::new();

/// Opens `/dev/null` on whichever of descriptors 0, 1 and 2 is closed, so that no socket, pipe or
/// database the server opens later lands on fd 2 and receives log lines. (Rust's runtime does the
/// same on Linux before `main`; this does not depend on it.)
pub fn fill_standard_fds() {
    for fd in 0..=2 {
        if fcntl(fd, FcntlArg::F_GETFD) != Err(Errno::EBADF) {
            continue;
        }
        let Ok(null) = File::options().read(true).write(true).open("/dev/null") else {
            return;
        };
        if null.as_raw_fd() == fd {
            // The lowest free descriptor is this one: keep it open for good.
            let _ = null.into_raw_fd();
        } else {
            let _ = dup2(null.as_raw_fd(), fd);
        }
    }
}

/// Starts the logger process and installs the `tracing` subscriber that writes to it, at `info`
/// (`-v` debug, `-vv` trace; `RUST_LOG` overrides). Must run while the process is single-threaded.
pub fn start(verbose: u8) -> io::Result<()> {
    spawn_logger()?;
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(PipeWriter)
        .with_ansi(
            std::env::var_os("NO_COLOR").is_none()
                && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        )
        // A line that cannot be formatted is not worth a write to stderr that could block.
        .log_internal_errors(false)
        .init();
    Ok(())
}

/// In the parent, for each reaped process that was not a session: if it was the logger, starts a
/// new one (the lines dropped meanwhile are then reported by count). Returns whether it was.
pub fn reaped(pid: Pid, status: &WaitStatus) -> bool {
    if pid.as_raw() != LOGGER.load(Ordering::Relaxed) {
        return false;
    }
    LOGGER.store(0, Ordering::Relaxed);
    // If that fails, nobody reads the old pipe: lines are dropped and counted from now on.
    if spawn_logger().is_ok() {
        tracing::warn!(
            "the logger process (pid {pid}) {}; started a new one",
            exit_words(status)
        );
    }
    true
}

/// At the parent's exit: closes its end of the pipe and gives the logger up to `grace` to write
/// what it still holds and exit, so that it is reaped here rather than left to `init`.
pub fn finish(grace: Duration) {
    PIPE.write().unwrap_or_else(PoisonError::into_inner).take();
    let pid = LOGGER.swap(0, Ordering::Relaxed);
    if pid <= 0 {
        return;
    }
    let deadline = Instant::now() + grace;
    while let Ok(WaitStatus::StillAlive) = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
        if Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// For a process about to exit (a session child): one last attempt to report the lines it
/// dropped, which would otherwise go unsaid with it. Never blocks.
pub fn report_drops() {
    let pid = std::process::id();
    let unreported = DROPS.unreported(pid);
    if unreported == 0 {
        return;
    }
    let pipe = PIPE.read().unwrap_or_else(PoisonError::into_inner);
    if let Some(pipe) = pipe.as_ref() {
        if write_whole(pipe, drop_notice(unreported).as_bytes()) {
            DROPS.reported(pid, unreported);
        }
    }
}

/// Text for the person at the terminal (demo instructions, the last error), not a log record:
/// through the logger like every line, so that a stalled stderr cannot hang the server even at
/// start-up or exit, in writes of whole lines of at most [`MAX_LINE`]. Straight to stderr, a
/// broken stream ignored, before [`start`] or if it failed.
pub fn print(text: &str) {
    let pipe = PIPE.read().unwrap_or_else(PoisonError::into_inner);
    let Some(pipe) = pipe.as_ref() else {
        let _ = io::stderr().write_all(text.as_bytes());
        return;
    };
    for piece in pieces(text.as_bytes()) {
        send(Some(pipe), &DROPS, std::process::id(), piece);
    }
}

/// `text` in runs of whole lines of at most [`MAX_LINE`] bytes (a longer line alone).
fn pieces(text: &[u8]) -> Vec<&[u8]> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut end = 0;
    for line in text.split_inclusive(|&b| b == b'\n') {
        if end > start && end + line.len() - start > MAX_LINE {
            pieces.push(&text[start..end]);
            start = end;
        }
        end += line.len();
    }
    if end > start {
        pieces.push(&text[start..end]);
    }
    pieces
}

/// How a process ended, in words (for `waitpid` results in the log).
pub fn exit_words(status: &WaitStatus) -> String {
    match *status {
        WaitStatus::Exited(_, 0) => "exited normally".to_owned(),
        WaitStatus::Exited(_, code) => format!("exited with status {code}"),
        WaitStatus::Signaled(_, signal, core) => format!(
            "was killed by {}{}",
            signal.as_str(),
            if core { " (core dumped)" } else { "" }
        ),
        WaitStatus::Stopped(_, signal) => format!("was stopped by {}", signal.as_str()),
        WaitStatus::Continued(_) => "was continued".to_owned(),
        _ => "changed state".to_owned(),
    }
}

/// The `tracing_subscriber` writer of every server process: see the module header.
pub struct PipeWriter;

impl<'a> MakeWriter<'a> for PipeWriter {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line(Vec::with_capacity(256))
    }
}

/// One log line being formatted; sent to the logger when dropped.
pub struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let pipe = PIPE.read().unwrap_or_else(PoisonError::into_inner);
        send(pipe.as_ref(), &DROPS, std::process::id(), &self.0);
    }
}

/// Writes `line` (capped) to `pipe`, preceded by the count of lines dropped before it, if any;
/// or counts it as dropped. Never blocks when `pipe` is non-blocking.
fn send(pipe: Option<&File>, drops: &Drops, pid: u32, line: &[u8]) {
    let Some(pipe) = pipe else {
        drops.dropped(pid);
        return;
    };
    let unreported = drops.unreported(pid);
    if unreported > 0 {
        if !write_whole(pipe, drop_notice(unreported).as_bytes()) {
            drops.dropped(pid);
            return;
        }
        drops.reported(pid, unreported);
    }
    if !write_whole(pipe, &capped(line)) {
        drops.dropped(pid);
    }
}

/// One `write(2)`: whether all of `bytes` went. A pipe takes up to `PIPE_BUF` bytes whole or not
/// at all; any error (`EAGAIN` full, `EPIPE` no logger) means the line is lost.
fn write_whole(mut pipe: &File, bytes: &[u8]) -> bool {
    matches!(pipe.write(bytes), Ok(n) if n == bytes.len())
}

/// `line` if it fits in [`MAX_LINE`]; else its start (cut at a character boundary) and a marker.
fn capped(line: &[u8]) -> Cow<'_, [u8]> {
    if line.len() <= MAX_LINE {
        return Cow::Borrowed(line);
    }
    let mut end = MAX_LINE - TRUNCATED.len();
    // `line[end]` is the first byte cut off: back up while it continues a UTF-8 character.
    while end > 0 && line[end] & 0xC0 == 0x80 {
        end -= 1;
    }
    let mut cut = Vec::with_capacity(end + TRUNCATED.len());
    cut.extend_from_slice(&line[..end]);
    cut.extend_from_slice(TRUNCATED.as_bytes());
    Cow::Owned(cut)
}

/// The line that reports `n` dropped lines, formatted like the others.
fn drop_notice(n: u64) -> String {
    let mut time = String::new();
    let _ = SystemTime.format_time(&mut Writer::new(&mut time));
    let lines = if n == 1 { "line" } else { "lines" };
    format!(
        "{time}  WARN forkmail_server::logging: {n} log {lines} dropped (stderr was not keeping up)\n"
    )
}

/// Lines dropped and not yet reported, for one process: a forked child starts from zero, whatever
/// its parent had not reported yet (the parent still reports those itself).
struct Drops {
    /// The process the count belongs to.
    pid: AtomicU32,
    count: AtomicU64,
}

impl Drops {
    const fn new() -> Self {
        Self {
            pid: AtomicU32::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// The count of process `pid`, reset if it was another's (inherited through `fork`).
    fn count(&self, pid: u32) -> &AtomicU64 {
        if self.pid.swap(pid, Ordering::Relaxed) != pid {
            self.count.store(0, Ordering::Relaxed);
        }
        &self.count
    }

    fn dropped(&self, pid: u32) {
        self.count(pid).fetch_add(1, Ordering::Relaxed);
    }

    fn unreported(&self, pid: u32) -> u64 {
        self.count(pid).load(Ordering::Relaxed)
    }

    fn reported(&self, pid: u32, n: u64) {
        self.count(pid).fetch_sub(n, Ordering::Relaxed);
    }
}

/// Makes the pipe and forks the logger; the parent keeps the write end, non-blocking.
fn spawn_logger() -> io::Result<()> {
    let (read_end, write_end) = pipe2(OFlag::O_CLOEXEC)?;
    // SAFETY: called while the process is single-threaded (first thing in `main`, or by the
    // parent, which never runs a thread), so the child's copy of the address space holds no lock
    // another thread could own.
    match unsafe { fork() }? {
        ForkResult::Child => {
            drop(write_end);
            copy_to_stderr(read_end)
        }
        ForkResult::Parent { child } => {
            drop(read_end);
            fcntl(write_end.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
            *PIPE.write().unwrap_or_else(PoisonError::into_inner) = Some(File::from(write_end));
            LOGGER.store(child.as_raw(), Ordering::Relaxed);
            Ok(())
        }
    }
}

/// The logger process: copies `pipe` to stderr until every writer has closed it, then exits.
fn copy_to_stderr(pipe: OwnedFd) -> ! {
    let _ = nix::sys::prctl::set_name(LOGGER_NAME);
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGPIPE,
    ] {
        // SAFETY: SIG_IGN installs no handler code.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
    // Holds no directory of the server's (a mount can be unmounted under a running server).
    let _ = nix::unistd::chdir("/");
    keep_only(pipe.as_raw_fd());
    let mut pipe = File::from(pipe);
    let mut stderr = io::stderr().lock();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match pipe.read(&mut chunk) {
            Ok(0) => break,
            // Blocking: a stalled stderr stalls only the logger. An error loses this chunk; the
            // next one is tried again (the reader may be back, the disk freed).
            Ok(n) => {
                let _ = stderr.write_all(&chunk[..n]);
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    // SAFETY: `_exit` ends the process without running the parent's atexit handlers or flushing
    // stdio buffers inherited from it.
    unsafe { nix::libc::_exit(0) }
}

/// In the logger: stdin and stdout become `/dev/null` (so that a reader of the server's stdout
/// sees end of file when the server exits) and every descriptor but stderr and `pipe` is closed
/// (the listener, clients' sockets when restarted by the parent).
fn keep_only(pipe: RawFd) {
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        let _ = dup2(null.as_raw_fd(), 0);
        let _ = dup2(null.as_raw_fd(), 1);
    }
    let open: Vec<RawFd> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => (3..1024).collect(),
    };
    for fd in open {
        if fd > 2 && fd != pipe {
            let _ = nix::unistd::close(fd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nonblocking_pipe() -> (File, File) {
        let (read_end, write_end) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).unwrap();
        (File::from(read_end), File::from(write_end))
    }

    fn drain(mut pipe: &File) -> String {
        let mut all = Vec::new();
        let mut chunk = [0u8; 65536];
        while let Ok(n @ 1..) = pipe.read(&mut chunk) {
            all.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8(all).unwrap()
    }

    #[test]
    fn a_line_that_fits_is_sent_as_it_is() {
        let line = vec![b'a'; MAX_LINE];
        assert!(matches!(capped(&line), Cow::Borrowed(l) if l.len() == MAX_LINE));
    }

    #[test]
    fn a_long_line_is_cut_to_pipe_buf_with_a_marker() {
        let line = vec![b'a'; MAX_LINE * 3];
        let cut = capped(&line);
        assert_eq!(cut.len(), MAX_LINE);
        assert!(cut.ends_with(TRUNCATED.as_bytes()));
    }

    #[test]
    fn a_long_line_is_cut_between_characters() {
        // Three-byte characters, so that the cut falls inside one unless it backs up.
        let line = "€".repeat(MAX_LINE);
        let cut = capped(line.as_bytes());
        assert!(cut.len() <= MAX_LINE);
        let text = std::str::from_utf8(&cut).expect("whole characters only");
        assert!(text.ends_with(TRUNCATED));
    }

    #[test]
    fn printed_text_goes_in_whole_lines_of_at_most_pipe_buf() {
        let line = format!("{}\n", "a".repeat(999));
        let text = line.repeat(9);
        let cut = pieces(text.as_bytes());
        assert_eq!(cut.len(), 3, "4 + 4 + 1 lines of 1,000 bytes");
        assert!(cut
            .iter()
            .all(|p| p.len() <= MAX_LINE && p.ends_with(b"\n")));
        assert_eq!(cut.concat(), text.as_bytes());
        assert_eq!(pieces(b"no newline"), [b"no newline".as_slice()]);
        assert!(pieces(b"").is_empty());
    }

    #[test]
    fn drops_are_counted_per_process() {
        let drops = Drops::new();
        drops.dropped(10);
        drops.dropped(10);
        assert_eq!(drops.unreported(10), 2);
        // A forked child does not report its parent's drops.
        assert_eq!(drops.unreported(11), 0);
        drops.dropped(11);
        assert_eq!(drops.unreported(11), 1);
    }

    #[test]
    fn a_full_pipe_drops_and_counts_and_the_next_line_through_says_how_many() {
        let (read_end, write_end) = nonblocking_pipe();
        let drops = Drops::new();
        while write_whole(&write_end, &[b'x'; 4096]) {}
        send(Some(&write_end), &drops, 1, b"first\n");
        send(Some(&write_end), &drops, 1, b"second\n");
        assert_eq!(drops.unreported(1), 2);
        drain(&read_end);
        send(Some(&write_end), &drops, 1, b"third\n");
        let got = drain(&read_end);
        let mut lines = got.lines();
        assert!(
            lines
                .next()
                .unwrap()
                .ends_with("2 log lines dropped (stderr was not keeping up)"),
            "{got}"
        );
        assert_eq!(lines.next(), Some("third"));
        assert_eq!(lines.next(), None);
        assert_eq!(drops.unreported(1), 0);
    }

    #[test]
    fn a_pipe_nobody_reads_drops_and_counts_without_blocking_or_failing() {
        let (read_end, write_end) = nonblocking_pipe();
        drop(read_end);
        let drops = Drops::new();
        send(Some(&write_end), &drops, 1, b"lost\n");
        send(None, &drops, 1, b"lost too\n");
        assert_eq!(drops.unreported(1), 2);
    }

    #[test]
    fn exits_are_told_in_words() {
        let pid = Pid::from_raw(7);
        assert_eq!(exit_words(&WaitStatus::Exited(pid, 0)), "exited normally");
        assert_eq!(
            exit_words(&WaitStatus::Exited(pid, 3)),
            "exited with status 3"
        );
        assert_eq!(
            exit_words(&WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            "was killed by SIGKILL"
        );
    }
}
