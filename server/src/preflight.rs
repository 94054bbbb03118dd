//! The start-up check of the store, run in a short-lived child process.
//!
//! The server refuses to start when its store cannot be reached, is not a forkmail store or is
//! newer than this build, and it applies pending migrations before serving (under the store's
//! lock, so two servers starting together migrate once). The parent must not do this itself:
//! the PostgreSQL client runs an async runtime that does not survive a `fork`, and the parent
//! forks every session. So one child connects, migrates, reports through a pipe and exits; the
//! parent keeps no connection, no runtime and no thread.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use forkmail_store::{Migrated, StoreLocation};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, pipe, ForkResult};

/// Migrates the store to this build's schema and checks that a session could open it.
pub fn check_store(location: &StoreLocation) -> Result<Migrated, String> {
    let (read_end, write_end) = pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
    // SAFETY: called before the daemon starts, while the parent is single-threaded (any
    // key-generation threads of the demo have been joined), so the child's copy of the
    // address space holds no lock another thread could own.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(read_end);
            child(location, write_end)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(write_end);
            let mut report = String::new();
            let read = std::fs::File::from(read_end).read_to_string(&mut report);
            let status = waitpid(child, None).map_err(|e| format!("waiting for the check: {e}"))?;
            read.map_err(|e| format!("reading the store check's report: {e}"))?;
            match (status, parse(&report)) {
                (WaitStatus::Exited(_, 0), Some(Ok(migrated))) => Ok(migrated),
                (WaitStatus::Exited(_, _), Some(Err(message))) => Err(message),
                (status, _) => Err(format!(
                    "the store check ended without a report (it {}); run with -v for details",
                    crate::logging::exit_words(&status)
                )),
            }
        }
        Err(e) => Err(format!("cannot fork the store check: {e}")),
    }
}

fn child(location: &StoreLocation, report: OwnedFd) -> ! {
    let result = forkmail_store::migrate(location)
        .and_then(|migrated| forkmail_store::open(location).map(|_| migrated));
    let (code, line) = match result {
        Ok(Migrated { from, to }) => (0, format!("ok {from} {to}")),
        Err(err) => (1, format!("err {err}")),
    };
    let _ = std::fs::File::from(report).write_all(line.as_bytes());
    // SAFETY: `_exit` ends the child without running the parent's atexit handlers or flushing
    // stdio buffers inherited from it.
    unsafe { nix::libc::_exit(code) }
}

fn parse(report: &str) -> Option<Result<Migrated, String>> {
    if let Some(message) = report.strip_prefix("err ") {
        return Some(Err(message.to_owned()));
    }
    let mut words = report.strip_prefix("ok ")?.split(' ');
    let from = words.next()?.parse().ok()?;
    let to = words.next()?.parse().ok()?;
    Some(Ok(Migrated { from, to }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_read_back() {
        assert_eq!(parse("ok 1 2"), Some(Ok(Migrated { from: 1, to: 2 })));
        assert_eq!(parse("err no store"), Some(Err("no store".into())));
        assert_eq!(parse("ok 1"), None);
        assert_eq!(parse(""), None);
    }
}
