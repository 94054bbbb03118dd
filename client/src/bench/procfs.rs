//! Resident memory and parentage of processes, read from `/proc` (Linux only).
//!
//! `VmRSS` is what the process holds in RAM now; `VmHWM` is the most it ever held. A forked
//! child shares its untouched pages with the parent, and both figures count those shared pages
//! in full, so they overstate what one more session really costs: they are an upper bound.

use std::fs;
use std::path::PathBuf;

use super::BenchError;

/// Memory of one process, in KiB as the kernel reports it.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub rss_kib: u64,
    pub peak_kib: u64,
}

/// Reads `VmRSS` and `VmHWM` from `/proc/PID/status`.
pub fn memory(pid: u32) -> Result<Memory, BenchError> {
    let path = PathBuf::from(format!("/proc/{pid}/status"));
    let status = fs::read_to_string(&path).map_err(BenchError::io(&path))?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    };
    match (field("VmRSS:"), field("VmHWM:")) {
        (Some(rss_kib), Some(peak_kib)) => Ok(Memory { rss_kib, peak_kib }),
        _ => Err(BenchError::Check(format!(
            "{} has no VmRSS/VmHWM lines",
            path.display()
        ))),
    }
}

/// Pids of the processes whose parent is `parent`, from the fourth field of `/proc/*/stat`.
pub fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| parent_of(pid) == Some(parent))
        .collect()
}

/// The parent pid of `pid`, or `None` if it is gone. The command name in `stat` is in
/// parentheses and may itself hold spaces or parentheses, so fields are counted after the last
/// `)`: state, then ppid.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let memory = memory(me).unwrap();
        assert!(memory.rss_kib > 0 && memory.peak_kib >= memory.rss_kib);
        let child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert!(children(me).contains(&child.id()));
        let mut child = child;
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
