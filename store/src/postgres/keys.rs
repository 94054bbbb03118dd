//! The key directory on PostgreSQL: one row per user in `key_records`, replaced only by a
//! record with a higher serial. The upsert's `WHERE` is evaluated on the locked row, so racing
//! publishers are serialised by PostgreSQL itself.

use forkmail_protocol::e2e::{KeyRecord, SignedKeyRecord};
use forkmail_protocol::messages::DirectoryEntry;

use super::{Fail, PgStore};
use crate::StoreError;

/// Each name of `$1` in order, with its record if it has one.
const KEY_RECORDS: &str = "
SELECT r.name, k.record, k.signature
FROM unnest($1::text[]) WITH ORDINALITY AS r(name, i)
LEFT JOIN key_records k ON k.user_name = r.name
ORDER BY r.i";

/// Inserts or replaces the record of an existing user whose current serial is lower; touches
/// no row otherwise.
const PUBLISH_KEY: &str = "
INSERT INTO key_records (user_name, serial, origin, record, signature, published_ms)
SELECT $1::text, $2::bigint, $3::text, $4::bytea, $5::bytea, $6::bigint
WHERE EXISTS (SELECT 1 FROM users WHERE name = $1::text)
ON CONFLICT (user_name) DO UPDATE SET
    serial = excluded.serial, origin = excluded.origin, record = excluded.record,
    signature = excluded.signature, published_ms = excluded.published_ms
WHERE excluded.serial > key_records.serial";

/// Why a publish touched no row: the user's current serial, if the user has a record.
const CURRENT_SERIAL: &str = "SELECT serial FROM key_records WHERE user_name = $1";

impl PgStore {
    pub(super) fn key_records_of(
        &mut self,
        names: &[String],
    ) -> Result<Vec<DirectoryEntry>, StoreError> {
        self.run(|conn| {
            let statement = conn.statements.get(&mut conn.client, KEY_RECORDS)?;
            let rows = conn.client.query(&statement, &[&names])?;
            let mut entries = Vec::with_capacity(rows.len());
            for row in rows {
                let record: Option<Vec<u8>> = row.try_get(1)?;
                let signature: Option<Vec<u8>> = row.try_get(2)?;
                entries.push(DirectoryEntry {
                    user: row.try_get(0)?,
                    record: record
                        .zip(signature)
                        .map(|(record, signature)| SignedKeyRecord { record, signature }),
                });
            }
            Ok(entries)
        })
    }

    pub(super) fn publish(
        &mut self,
        user: &str,
        record: &KeyRecord,
        signed: &SignedKeyRecord,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let serial = crate::sqlite::keys::serial_to_sql(user, record.serial)?;
        self.run(|conn| {
            let mut tx = conn.client.transaction()?;
            let statement = conn.statements.get(&mut tx, PUBLISH_KEY)?;
            let changed = tx.execute(
                &statement,
                &[
                    &user,
                    &serial,
                    &record.origin.name(),
                    &signed.record,
                    &signed.signature,
                    &(now_ms as i64),
                ],
            )?;
            if changed == 0 {
                let current = conn.statements.get(&mut tx, CURRENT_SERIAL)?;
                let refusal = match tx.query_opt(&current, &[&user])? {
                    Some(row) => StoreError::StaleKeyRecord {
                        user: user.to_owned(),
                        current: row.try_get::<_, i64>(0)?.max(0) as u64,
                        offered: record.serial,
                    },
                    None => StoreError::UnknownRecipient(user.to_owned()),
                };
                return Err(Fail::Store(refusal));
            }
            tx.commit().map_err(Fail::Unsure)
        })
    }
}
