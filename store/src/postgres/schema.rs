//! What a PostgreSQL database holds, and bringing it to the current schema.
//!
//! The store lives in the connection's current schema (`public` unless the URL's `options` set
//! a `search_path`). A forkmail store is recognised by its `schema_migrations` table (version 2
//! on) with forkmail's columns — Rails and golang-migrate also make a table of that name, with
//! other columns — or, for a store at version 1, by its six tables; a database with no tables
//! is empty; anything else is another program's and is never written to.
//!
//! Each migration is one transaction that first takes a transaction-scoped advisory lock and
//! then re-reads the version, so two servers starting together apply every migration once:
//! the second waits for the first's commit and finds nothing left to do.

use ::postgres::{Client, GenericClient};

use super::connection::{classify, store_error};
use crate::location::PostgresUrl;
pub(super) use crate::migrations::Probe;
use crate::migrations::{self, CURRENT_VERSION, V1_TABLES};
use crate::{Migrated, StoreError};

/// The advisory lock key migrations hold: "fkmlmigr" in ASCII, so it is recognisable in
/// `pg_locks` and unlikely to collide with another program's key.
pub(super) const MIGRATION_LOCK: i64 = 0x666B_6D6C_6D69_6772;

/// How many tables a refusal names before "and N more".
const TABLES_NAMED: usize = 5;

/// Whether an empty database may be given the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Create,
    Migrate,
}

pub(super) fn probe(client: &mut impl GenericClient) -> Result<Probe, ::postgres::Error> {
    let tables: Vec<String> = client
        .query(
            "SELECT c.relname::text FROM pg_catalog.pg_class c
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
             ORDER BY 1",
            &[],
        )?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    let has = |t: &str| tables.iter().any(|name| name == t);
    if tables.is_empty() {
        return Ok(Probe::Empty);
    }
    if has("schema_migrations") {
        let columns: Vec<(String, String)> = client
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
                 FROM pg_catalog.pg_attribute a
                 WHERE a.attrelid = format('%I.schema_migrations', current_schema())::regclass
                   AND a.attnum > 0 AND NOT a.attisdropped",
                &[],
            )?
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<_, ::postgres::Error>>()?;
        let ours = [
            ("version", "integer"),
            ("name", "text"),
            ("applied_ms", "bigint"),
        ]
        .iter()
        .all(|(name, ty)| columns.iter().any(|(n, t)| n == name && t == ty));
        if !ours {
            return Ok(Probe::Foreign(format!(
                "its schema_migrations table is another tool's ({}); tables: {}",
                columns
                    .iter()
                    .map(|(n, t)| format!("{n} {t}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                name_some(&tables)
            )));
        }
        let max: Option<i32> = client
            .query_one("SELECT max(version) FROM schema_migrations", &[])?
            .try_get(0)?;
        return Ok(match max.map(u32::try_from) {
            Some(Ok(v)) if v > 0 => Probe::Version(v),
            Some(_) => Probe::Foreign(format!("impossible schema version {max:?}")),
            None => Probe::Foreign("an empty schema_migrations table".into()),
        });
    }
    if V1_TABLES.iter().all(|t| has(t)) {
        return Ok(Probe::Version(1));
    }
    Ok(Probe::Foreign(format!(
        "tables: {}; another program's database",
        name_some(&tables)
    )))
}

fn name_some(tables: &[String]) -> String {
    let mut named = tables[..tables.len().min(TABLES_NAMED)].join(", ");
    if tables.len() > TABLES_NAMED {
        named.push_str(&format!(" and {} more", tables.len() - TABLES_NAMED));
    }
    named
}

/// Why `probe` means this store cannot be used as it is.
pub(super) fn refusal(location: String, probe: Probe) -> StoreError {
    migrations::refusal(
        location,
        probe,
        "an empty database; create it with forkmail-keygen init --store URL",
    )
}

/// Applies pending migrations one transaction each, under [`MIGRATION_LOCK`], until the store
/// is current. In [`Mode::Create`] the database must be empty when first probed (`Exists`
/// otherwise, before anything is written).
pub(super) fn migrate(
    client: &mut Client,
    url: &PostgresUrl,
    location: &str,
    mode: Mode,
) -> Result<Migrated, StoreError> {
    let pg = |e: ::postgres::Error| store_error(url, classify(&e), &e);
    let mut from = None;
    loop {
        let mut tx = client.transaction().map_err(pg)?;
        tx.batch_execute(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
            .map_err(pg)?;
        let version = match (probe(&mut tx).map_err(pg)?, mode) {
            (Probe::Empty, Mode::Create) => 0,
            (Probe::Version(_), Mode::Create) if from.is_none() => {
                return Err(StoreError::Exists(location.to_owned()))
            }
            (Probe::Version(v), _) if v <= CURRENT_VERSION => v,
            (probe, _) => return Err(refusal(location.to_owned(), probe)),
        };
        let from = *from.get_or_insert(version);
        let Some(next) = migrations::pending(version).first() else {
            tx.commit().map_err(pg)?;
            return Ok(Migrated {
                from,
                to: CURRENT_VERSION,
            });
        };
        tx.batch_execute(next.postgres).map_err(pg)?;
        if next.version >= 2 {
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_ms) VALUES ($1, $2, $3)",
                &[
                    &(next.version as i32),
                    &next.name,
                    &(forkmail_protocol::now_millis() as i64),
                ],
            )
            .map_err(pg)?;
        }
        tx.commit().map_err(pg)?;
        tracing::info!(
            "{location}: migrated the store to schema version {} ({})",
            next.version,
            next.name
        );
    }
}
