//! What can fail in the kit's fallible calls (the ones the benchmark makes). Each message names
//! the file or program involved and what to do.

use std::io;
use std::path::PathBuf;

use forkmail_keygen::deploy::DeployError;

use crate::db::DbError;

#[derive(Debug, thiserror::Error)]
pub enum KitError {
    #[error("making the deployment {}: {source}", .path.display())]
    Deploy { path: PathBuf, source: DeployError },
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot start {}: {source}; build it first with `cargo build --bins` (add --release for forkmail-bench)", .path.display())]
    ServerSpawn { path: PathBuf, source: io::Error },
    /// The server ran but never printed `listening on IP:PORT`; `log` says where its log is, or
    /// holds it.
    #[error("{} did not start listening ({detail}); {log}", .path.display())]
    ServerStartup {
        path: PathBuf,
        detail: String,
        log: String,
    },
    #[error("{} has no VmRSS/VmHWM lines; is this Linux with /proc mounted?", .path.display())]
    NoMemoryFigures { path: PathBuf },
    #[error(transparent)]
    Db(#[from] DbError),
}

impl KitError {
    /// `map_err` helper for I/O on `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| KitError::Io { path, source }
    }
}
