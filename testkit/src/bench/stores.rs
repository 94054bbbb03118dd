//! Where the benchmark's deployments keep their stores (`--store`): each its own `mail.db`
//! (SQLite, the default), or each its own database in one throw-away PostgreSQL cluster that
//! the run starts and removes ([`forkmail_store::pgtest::Cluster`]).
//!
//! The suite and the scaling run ask [`Stores`] for deployments and copies of them and never
//! look at which backend they got, so both stores are measured by the same code. A copy gets a
//! store of its own on either backend: the `mail.db` file comes along with the files, a
//! PostgreSQL database is copied with `CREATE DATABASE .. TEMPLATE` and the copy's
//! `deployment.toml` pointed at it.

use std::path::Path;

use forkmail_store::pgtest::Cluster;
use serde::Serialize;

use super::setup;
use super::BenchError;
use crate::deployment::Deployment;

/// Which backend every deployment of a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// `mail.db` in each deployment's server directory.
    Sqlite,
    /// A database per deployment in a PostgreSQL 15 cluster the run starts on 127.0.0.1.
    Postgres,
}

impl StoreKind {
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "SQLite",
            StoreKind::Postgres => "PostgreSQL",
        }
    }
}

/// The stores of one run; for PostgreSQL, the cluster, stopped and removed on drop (after every
/// server of the run has stopped: drop the servers first).
pub struct Stores {
    cluster: Option<Cluster>,
}

impl Stores {
    /// SQLite needs nothing; PostgreSQL starts a cluster, or says why it cannot.
    pub fn start(kind: StoreKind) -> Result<Self, BenchError> {
        let cluster = match kind {
            StoreKind::Sqlite => None,
            StoreKind::Postgres => {
                Some(Cluster::start().map_err(|skip| BenchError::NoPostgres(skip.0))?)
            }
        };
        Ok(Self { cluster })
    }

    pub fn kind(&self) -> StoreKind {
        match self.cluster {
            None => StoreKind::Sqlite,
            Some(_) => StoreKind::Postgres,
        }
    }

    /// One line for the report's header.
    pub fn describe(&self) -> String {
        match &self.cluster {
            None => "store: SQLite, server/mail.db in each deployment (WAL; sends group-committed, fsynced before Sent)"
                .to_owned(),
            Some(cluster) => format!(
                "store: PostgreSQL 15, a database per deployment in a throw-away cluster on \
                 127.0.0.1:{} (fsync on, trust authentication, TCP)",
                cluster.port()
            ),
        }
    }

    /// A new benchmark deployment at `root` (see [`setup::create`]) with a store of its own;
    /// on PostgreSQL its database is named after `root`'s last component.
    pub fn create(&self, root: &Path, kdf_iterations: u32) -> Result<Deployment, BenchError> {
        let store = self
            .cluster
            .as_ref()
            .map(|cluster| cluster.create_database(&database_name(root)));
        setup::create(root, kdf_iterations, store)
    }

    /// A copy of `from` at `root` with a copy of its store. No server may be running on `from`.
    pub fn copy(&self, from: &Deployment, root: &Path) -> Result<Deployment, BenchError> {
        let copy = from.copy_to(root)?;
        if let Some(cluster) = &self.cluster {
            let store = cluster.copy_database(&database_name(from.root()), &database_name(root));
            copy.set_store(&store)?;
        }
        Ok(copy)
    }
}

/// A deployment's database: its directory's name, `-` made `_` (`inbox-100` -> `inbox_100`).
fn database_name(root: &Path) -> String {
    let name = root
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    name.replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn databases_are_named_after_their_deployments() {
        assert_eq!(database_name(Path::new("/tmp/b/inbox-100")), "inbox_100");
        assert_eq!(database_name(Path::new("low")), "low");
    }
}
