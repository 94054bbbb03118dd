//! The key directory on SQLite: one row per user in `key_records`, replaced only by a record
//! with a higher serial (an upsert whose `WHERE` compares serials, under the write lock).

use forkmail_protocol::e2e::{KeyRecord, SignedKeyRecord};
use forkmail_protocol::messages::DirectoryEntry;
use rusqlite::{params, OptionalExtension};

use super::{user_exists, Sql, SqliteStore};
use crate::StoreError;

impl SqliteStore {
    pub(super) fn key_records_of(
        &mut self,
        names: &[String],
    ) -> Result<Vec<DirectoryEntry>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT record, signature FROM key_records WHERE user_name = ?1")
            .sql()?;
        let mut entries = Vec::with_capacity(names.len());
        for name in names {
            let record = statement
                .query_row([name], |r| {
                    Ok(SignedKeyRecord {
                        record: r.get(0)?,
                        signature: r.get(1)?,
                    })
                })
                .optional()
                .sql()?;
            entries.push(DirectoryEntry {
                user: name.clone(),
                record,
            });
        }
        Ok(entries)
    }

    pub(super) fn publish_key_once(
        &mut self,
        user: &str,
        record: &KeyRecord,
        signed: &SignedKeyRecord,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let serial = serial_to_sql(user, record.serial)?;
        let tx = self.write_transaction()?;
        if !user_exists(&tx, user)? {
            return Err(StoreError::UnknownRecipient(user.to_owned()));
        }
        let changed = tx
            .prepare_cached(
                "INSERT INTO key_records
                     (user_name, serial, origin, record, signature, published_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (user_name) DO UPDATE SET
                     serial = excluded.serial, origin = excluded.origin,
                     record = excluded.record, signature = excluded.signature,
                     published_ms = excluded.published_ms
                 WHERE excluded.serial > key_records.serial",
            )
            .sql()?
            .execute(params![
                user,
                serial,
                record.origin.name(),
                signed.record,
                signed.signature,
                now_ms as i64
            ])
            .sql()?;
        if changed == 0 {
            let current: i64 = tx
                .prepare_cached("SELECT serial FROM key_records WHERE user_name = ?1")
                .sql()?
                .query_row([user], |r| r.get(0))
                .sql()?;
            return Err(StoreError::StaleKeyRecord {
                user: user.to_owned(),
                current: current.max(0) as u64,
                offered: record.serial,
            });
        }
        tx.commit().sql()
    }
}

/// A serial as the column holds it: serials above `i64::MAX` are refused as stale, since no
/// record can follow one.
pub(crate) fn serial_to_sql(user: &str, serial: u64) -> Result<i64, StoreError> {
    i64::try_from(serial).map_err(|_| StoreError::StaleKeyRecord {
        user: user.to_owned(),
        current: i64::MAX as u64,
        offered: serial,
    })
}
