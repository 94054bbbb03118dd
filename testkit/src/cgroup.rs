//! A process held to a number of tasks by a throw-away `pids` cgroup, so that its `fork` fails
//! with EAGAIN; undone on drop (the process moved back to the root cgroup, the group removed).
//!
//! The suites run as root, whom `RLIMIT_NPROC` does not stop; a `pids` cgroup stops everyone.
//! Works with the cgroup v1 `pids` hierarchy (`/sys/fs/cgroup/pids`) or cgroup v2 with the `pids`
//! controller enabled at the root. Plain file writes, so the kit needs no `unsafe`.

use std::fs;
use std::path::{Path, PathBuf};

/// `pid` confined to at most `max` tasks until this is dropped.
#[derive(Debug)]
pub struct PidsLimit {
    root: PathBuf,
    group: PathBuf,
    pid: i32,
}

impl PidsLimit {
    /// Moves `pid` into a new `pids` cgroup allowing `max` tasks. `Err` says why not (no such
    /// controller, no permission): a test may then skip, saying so.
    pub fn new(pid: i32, max: u32) -> Result<Self, String> {
        let root = pids_root().ok_or("no pids cgroup controller on this host")?;
        let group = root.join(format!("forkmail-test-{}-{pid}", std::process::id()));
        fs::create_dir(&group).map_err(|e| format!("{}: {e}", group.display()))?;
        let limit = Self { root, group, pid };
        write(&limit.group.join("pids.max"), &max.to_string())?;
        write(&limit.group.join("cgroup.procs"), &pid.to_string())?;
        Ok(limit)
    }
}

impl Drop for PidsLimit {
    fn drop(&mut self) {
        // Every task left in the group (the process and any child it managed to fork).
        let tasks = fs::read_to_string(self.group.join("cgroup.procs")).unwrap_or_default();
        for task in tasks.lines().chain([self.pid.to_string().as_str()]) {
            let _ = fs::write(self.root.join("cgroup.procs"), task);
        }
        if let Err(err) = fs::remove_dir(&self.group) {
            eprintln!(
                "{}: could not remove the test's cgroup: {err}",
                self.group.display()
            );
        }
    }
}

fn pids_root() -> Option<PathBuf> {
    let v1 = Path::new("/sys/fs/cgroup/pids");
    if v1.join("cgroup.procs").exists() {
        return Some(v1.to_owned());
    }
    let v2 = Path::new("/sys/fs/cgroup");
    fs::read_to_string(v2.join("cgroup.subtree_control"))
        .ok()?
        .split_whitespace()
        .any(|c| c == "pids")
        .then(|| v2.to_owned())
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    fs::write(path, value).map_err(|e| format!("writing {value} to {}: {e}", path.display()))
}
