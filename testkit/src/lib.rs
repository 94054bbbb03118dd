//! forkmail's one test kit, shared by the suites in `tests/` and by `forkmail-bench`, so that
//! neither carries a second copy of the set-up.
//!
//! - [`deployment`]: a throw-away deployment made by `forkmail_keygen::deploy::init`, its paths
//!   and its users' passwords.
//! - [`server`]: the real `forkmail-server` on `127.0.0.1:0`, its address read from its
//!   `listening on` line, its log, SIGTERM and SIGKILL.
//! - [`client`]: the real `forkmail` program, and where the workspace's binaries are.
//! - [`pty`]: a program on a real pseudo-terminal (util-linux `script`), typed at like a person.
//! - [`procfs`]: children, state and memory of a process, from `/proc`.
//! - [`pty`]: a command on a real pseudo-terminal (util-linux `script`).
//! - [`wire`]: a frame-level client that runs the handshake step by step and can attack.
//! - [`db`]: what the suites read from a deployment's store, through `forkmail-store`'s API.
//! - [`haproxy`]: a throw-away HAProxy in TCP mode in front of several hosts.
//! - [`mounts`]: a directory made read-only by a bind mount, undone on drop.
//! - [`cgroup`]: a process held to a number of tasks (its `fork` fails), undone on drop.
//! - A throw-away PostgreSQL cluster is `forkmail_store::pgtest`, the store crate's own.
//! - [`bench`]: the benchmark behind `forkmail-bench`.
//!
//! The helpers the tests call panic with a message on failure, as a test would; whatever the
//! benchmark calls returns [`KitError`] instead.

#![forbid(unsafe_code)]

pub mod bench;
pub mod cgroup;
pub mod client;
pub mod db;
pub mod deployment;
pub mod error;
pub mod haproxy;
pub mod mounts;
pub mod old_server;
pub mod procfs;
pub mod pty;
pub mod sealing;
pub mod server;
pub mod wire;

use std::time::{Duration, Instant};

pub use client::{bin, bin_dir, ClientCmd};
pub use db::{count_rows, integrity_ok};
pub use deployment::{copy_tree, password, DeployOptions, Deployment};
pub use error::KitError;
pub use server::{GivenStderr, Server, ServerConfig};

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
