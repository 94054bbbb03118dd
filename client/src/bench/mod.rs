//! The machinery behind `forkmail-bench`: throw-away deployments, the real forked server, the
//! measurements and the table of figures against targets (docs/BENCHMARKS.md).
//!
//! Everything goes through the same paths a user's session does: the deployment is made by
//! `forkmail_keygen::deploy::init`, the server is the `forkmail-server` binary on `127.0.0.1:0`,
//! and every request is a [`crate::Session`] call. The one shortcut is
//! [`deployment::Deployment::preload`], which writes large mailboxes straight into SQLite
//! *before* the server starts (sending 100,000 mails through the protocol would take minutes and
//! measure nothing the send benchmark does not).
//!
//! [`suite`] decides what runs in which order; [`scenarios`] holds the timed loops; [`costs`]
//! times the building blocks in-process so a missed target can be explained; [`sections`] turns
//! the samples into rows held to their targets; [`report`] renders.

pub mod costs;
pub mod deployment;
pub mod procfs;
pub mod report;
pub mod scenarios;
pub mod sections;
pub mod server;
pub mod stats;
pub mod suite;

use std::io;
use std::path::PathBuf;

use forkmail_keygen::deploy::DeployError;

use crate::error::ClientError;

/// Why a benchmark run stopped. Each message names the file or step involved and what to do.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("making the deployment {}: {source}", .path.display())]
    Deploy { path: PathBuf, source: DeployError },
    #[error("preloading {}: {source}", .path.display())]
    Preload {
        path: PathBuf,
        source: forkmail_store::StoreError,
    },
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot start {}: {source}; build it first with `cargo build --release --bin forkmail-server` or pass --server-bin PATH", .path.display())]
    ServerSpawn { path: PathBuf, source: io::Error },
    #[error("{} did not start listening ({detail}); see its log {}", .path.display(), .log.display())]
    ServerStartup {
        path: PathBuf,
        log: PathBuf,
        detail: String,
    },
    #[error("{during}: {source}")]
    Client { during: String, source: ClientError },
    /// The server answered, but not with what the benchmark set up (a wrong inbox size, a
    /// truncated body): the figures would be meaningless, so the run stops.
    #[error("sanity check failed: {0}")]
    Check(String),
    #[error("no session process of server {server_pid} found in /proc; is /proc mounted?")]
    NoSessionProcess { server_pid: u32 },
}

impl BenchError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| BenchError::Io { path, source }
    }

    pub(crate) fn client(during: impl Into<String>) -> impl FnOnce(ClientError) -> Self {
        let during = during.into();
        move |source| BenchError::Client { during, source }
    }
}
