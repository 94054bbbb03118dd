//! Parentage, state, CPU time, file locks and resident memory of processes, read from `/proc`
//! (Linux only).
//!
//! The server forks one child per session, so "which children does it have, and are they
//! zombies" is how the suites check that sessions end and are reaped, and how the benchmark finds
//! the session process to measure.
//!
//! `VmRSS` is what a process holds in RAM now; `VmHWM` is the most it ever held. A forked child
//! shares its untouched pages with the parent, and both figures count those shared pages in
//! full, so they overstate what one more session really costs: they are an upper bound.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::KitError;

/// A process as `/proc/PID/stat` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Process {
    pub pid: i32,
    /// The state letter: `R` running, `S` sleeping, `Z` zombie (exited, not yet reaped)...
    pub state: char,
}

impl Process {
    pub fn is_zombie(&self) -> bool {
        self.state == 'Z'
    }
}

/// The processes whose parent is `parent`, zombies included.
pub fn children(parent: i32) -> Vec<Process> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let (state, ppid) = stat(pid)?;
            (ppid == parent).then_some(Process { pid, state })
        })
        .collect()
}

/// The name the server's logger process gives itself (`forkmail_server::logging::LOGGER_NAME`).
pub const LOGGER_NAME: &str = "forkmail-log";

/// The name of the server's short-lived key loader (`forkmail_server::keys::LOADER_NAME`).
pub const KEY_LOADER_NAME: &str = "forkmail-keys";

/// The name of the server's WAL keeper (`forkmail_server::keeper::KEEPER_NAME`).
pub const KEEPER_NAME: &str = "forkmail-wal";

/// The session processes of the server `server`: its children, zombies included, but not its
/// logger process, a key loader nor the WAL keeper, which hold no slot.
pub fn sessions(server: i32) -> Vec<Process> {
    children(server)
        .into_iter()
        .filter(|child| {
            let name = name(child.pid);
            ![LOGGER_NAME, KEY_LOADER_NAME, KEEPER_NAME].contains(&name.as_deref().unwrap_or(""))
        })
        .collect()
}

/// The state letter of `pid`, or `None` if there is no such process (any more).
pub fn state(pid: i32) -> Option<char> {
    stat(pid).map(|(state, _)| state)
}

/// The command name of `pid` (`/proc/PID/comm`, as `prctl(PR_SET_NAME)` sets it).
pub fn name(pid: i32) -> Option<String> {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end_matches('\n').to_owned())
}

/// State and parent pid of `pid`. The command name in `stat` is in parentheses and may itself
/// hold spaces or parentheses, so fields are counted after the last `)`: state, then ppid.
fn stat(pid: i32) -> Option<(char, i32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// User plus system CPU time `pid` has used so far (`utime` + `stime` of `/proc/PID/stat`, in
/// clock ticks of 1/100 s), or `None` if there is no such process.
pub fn cpu_time(pid: i32) -> Option<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name: state is field 3, utime field 14, stime field 15.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Whether `pid` holds a POSIX (`fcntl`) write lock covering byte `byte` of `file`, as
/// `/proc/locks` lists it: `1: POSIX  ADVISORY  WRITE PID MAJ:MIN:INODE START END`.
pub fn holds_write_lock(pid: i32, file: &Path, byte: u64) -> bool {
    let (Ok(meta), Ok(locks)) = (fs::metadata(file), fs::read_to_string("/proc/locks")) else {
        return false;
    };
    locks.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, "POSIX", _, "WRITE", holder, id, start, end, ..] = fields[..] else {
            return false;
        };
        let inode = id.rsplit(':').next().and_then(|i| i.parse::<u64>().ok());
        let covers = start.parse::<u64>().is_ok_and(|start| start <= byte)
            && (end == "EOF" || end.parse::<u64>().is_ok_and(|end| byte <= end));
        holder.parse() == Ok(pid) && inode == Some(meta.ino()) && covers
    })
}

/// Memory of one process, in KiB as the kernel reports it.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub rss_kib: u64,
    pub peak_kib: u64,
}

/// Reads `VmRSS` and `VmHWM` from `/proc/PID/status`.
pub fn memory(pid: i32) -> Result<Memory, KitError> {
    let path = PathBuf::from(format!("/proc/{pid}/status"));
    let status = fs::read_to_string(&path).map_err(KitError::io(&path))?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    };
    match (field("VmRSS:"), field("VmHWM:")) {
        (Some(rss_kib), Some(peak_kib)) => Ok(Memory { rss_kib, peak_kib }),
        _ => Err(KitError::NoMemoryFigures { path }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_lock_this_process_holds_is_seen_and_cpu_time_counts_up() {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locked");
        let file = fs::File::create(&path).unwrap();
        let me = std::process::id() as i32;
        assert!(!holds_write_lock(me, &path, 120));
        let lock = nix::libc::flock {
            l_type: nix::libc::F_WRLCK as i16,
            l_whence: nix::libc::SEEK_SET as i16,
            l_start: 120,
            l_len: 1,
            l_pid: 0,
        };
        nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_SETLK(&lock)).unwrap();
        assert!(holds_write_lock(me, &path, 120));
        assert!(!holds_write_lock(me, &path, 121));
        assert!(cpu_time(me).is_some());
        assert_eq!(cpu_time(-1), None);
    }

    #[test]
    fn reads_this_process_and_its_child() {
        let me = std::process::id() as i32;
        let memory = memory(me).unwrap();
        assert!(memory.rss_kib > 0 && memory.peak_kib >= memory.rss_kib);
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let found = children(me).into_iter().find(|p| p.pid == pid);
        assert!(found.is_some_and(|p| !p.is_zombie()), "{found:?}");
        child.kill().unwrap();
        // Killed but not yet reaped: a zombie.
        assert!(crate::wait_until(
            std::time::Duration::from_secs(5),
            || state(pid) == Some('Z')
        ));
        child.wait().unwrap();
        assert_eq!(state(pid), None);
    }
}
