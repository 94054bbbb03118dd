//! The machinery behind `forkmail-bench`: measurements on throw-away deployments against the real
//! forked server, and the table of figures against targets (docs/BENCHMARKS.md).
//!
//! Everything goes through the same paths a user's session does, and through the same kit the
//! tests use: the deployment is a [`crate::Deployment`] (made by
//! `forkmail_keygen::deploy::init`), the server is a [`crate::Server`] running the
//! `forkmail-server` binary on `127.0.0.1:0`, and every request is a
//! [`forkmail_client::Session`] call. The one shortcut is [`setup::preload`], which writes large
//! mailboxes straight into the database (through [`crate::db`]) *before* the server starts:
//! sending 100,000 mails through the protocol would take minutes and measure nothing the send
//! benchmark does not.
//!
//! [`suite`] decides what runs in which order; [`scenarios`] holds the timed loops; [`costs`]
//! times the building blocks in-process so a missed target can be explained; [`sections`] turns
//! the samples into rows held to their targets; [`report`] renders. [`stores`] gives every
//! deployment its store, SQLite or PostgreSQL (`--store`). [`scaling`] is `--scaling`: the same
//! session and send loops on one and two hosts, direct and behind HAProxy. [`flood`] is
//! `--hello-flood`: bogus hellos at rising rates while a real user logs in. [`targets`] holds
//! issue 12's targets as same-run ratios to floors measured beside them. [`peers`] is
//! `forkmail-peers`: forkmail beside Dovecot and OpenSSH (bench/peers/run.sh).

pub mod costs;
pub mod flood;
pub mod peers;
pub mod report;
pub mod scaling;
pub mod scenarios;
pub mod sealed;
pub mod sections;
pub mod setup;
pub mod stats;
pub mod stores;
pub mod suite;
pub mod targets;

use std::io;
use std::path::PathBuf;

use forkmail_client::ClientError;

use crate::error::KitError;

/// Why a benchmark run stopped. Each message names the file or step involved and what to do.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Making, copying or preloading a deployment, starting a server, reading `/proc`.
    #[error(transparent)]
    Kit(#[from] KitError),
    #[error("{during}: {source}")]
    Client { during: String, source: ClientError },
    /// The server answered, but not with what the benchmark set up (a wrong inbox size, a
    /// truncated body): the figures would be meaningless, so the run stops.
    #[error("sanity check failed: {0}")]
    Check(String),
    #[error("--store postgres needs a PostgreSQL cluster, and none can be started: {0}")]
    NoPostgres(String),
    #[error("--scaling needs HAProxy: {0}")]
    NoHaproxy(String),
    #[error("no session process of server {server_pid} found in /proc; is /proc mounted?")]
    NoSessionProcess { server_pid: i32 },
}

impl BenchError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let io = KitError::io(path);
        move |source| io(source).into()
    }

    pub(crate) fn client(during: impl Into<String>) -> impl FnOnce(ClientError) -> Self {
        let during = during.into();
        move |source| BenchError::Client { during, source }
    }
}
