//! The WAL keeper: on an SQLite store, one process the daemon forks at start-up that holds a
//! connection to the database for the daemon's lifetime and checkpoints the WAL once a second.
//!
//! Why a process: SQLite deletes the WAL when its last connection closes, after checkpointing
//! it (two fsyncs), and the next connection re-creates it (a header fsync and a directory
//! fsync). With one connection per forked session, every session was the last one: a session
//! that only read paid four fsyncs (docs/BENCHMARKS.md, issue 12). The parent cannot hold the
//! connection itself, since SQLite forbids carrying one across `fork`; so a child of its own
//! does, and is never a session. It also takes the checkpoint off the request path: sessions
//! only checkpoint past a backstop ([`forkmail_store::sqlite::BACKSTOP_PAGES`]), and the keeper's
//! passive checkpoint never blocks a reader or a writer.
//!
//! The daemon starts a new keeper when one exits (at most once a second) and stops it last at
//! shutdown: its connection is then the last, so its close checkpoints and removes the WAL, as
//! a clean stop always did. It dies with the parent (`PR_SET_PDEATHSIG`).

use std::ffi::CStr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use forkmail_store::sqlite::SqliteStore;
use nix::sys::signal::Signal;
use nix::unistd::{getppid, Pid};
use tracing::{debug, warn};

/// The keeper's process name, as `/proc/PID/comm` shows it.
pub const KEEPER_NAME: &CStr = c"forkmail-wal";
/// Time between two checkpoints.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// How often the keeper looks at its shutdown flag and its parent.
const TICK: Duration = Duration::from_millis(100);

/// The keeper's life, in the forked child: returns its exit code. `parent` is the daemon;
/// `ready` is told (one byte) once the connection is open, or dropped if it cannot be.
pub fn run(database: &Path, parent: Pid, shutdown: &AtomicBool, ready: std::fs::File) -> i32 {
    let _ = nix::sys::prctl::set_name(KEEPER_NAME);
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
    if getppid() != parent {
        return 0;
    }
    let mut store = match SqliteStore::open(database) {
        Ok(store) => store,
        Err(err) => {
            warn!(
                "the WAL keeper cannot open {}: {err}; sessions will checkpoint the WAL \
                 themselves",
                database.display()
            );
            return 1;
        }
    };
    {
        use std::io::Write;
        let mut ready = ready;
        let _ = ready.write_all(&[1]);
    }
    let mut failing = false;
    let mut next = Instant::now() + CHECKPOINT_EVERY;
    while !shutdown.load(Ordering::Relaxed) && getppid() == parent {
        std::thread::sleep(TICK);
        if Instant::now() < next {
            continue;
        }
        next = Instant::now() + CHECKPOINT_EVERY;
        match store.checkpoint() {
            Ok(done) => {
                failing = false;
                if done.copied < done.frames {
                    debug!(
                        "WAL checkpoint copied {} of {} frames (a reader holds the rest)",
                        done.copied, done.frames
                    );
                }
            }
            // Said once per stretch of failures, not every second.
            Err(err) if !failing => {
                failing = true;
                warn!("WAL checkpoint failed: {err}; trying again every second");
            }
            Err(_) => {}
        }
    }
    // The last connection when the daemon stops: this close checkpoints and removes the WAL.
    drop(store);
    0
}
