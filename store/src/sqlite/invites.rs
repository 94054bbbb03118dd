//! Enrollment invitations and the enrollment itself on SQLite ([`Store::create_invite`],
//! [`Store::invites`], [`Store::enroll`]).
//!
//! [`Store::create_invite`]: crate::Store::create_invite
//! [`Store::invites`]: crate::Store::invites
//! [`Store::enroll`]: crate::Store::enroll

use forkmail_protocol::e2e::{KeyRecord, SignedKeyRecord};
use rusqlite::{params, OptionalExtension};

use super::{user_exists, Sql, SqliteStore};
use crate::{Invite, StoreError, UserRecord, INVITE_MEMORY_MS};

impl SqliteStore {
    pub(super) fn create_invite_once(
        &mut self,
        user: &str,
        token_hash: &[u8; 32],
        expires_ms: u64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let tx = self.write_transaction()?;
        if user_exists(&tx, user)? {
            return Err(StoreError::UserExists(user.to_owned()));
        }
        tx.execute(
            "INSERT INTO invites (token_hash, user_name, created_ms, expires_ms)
             VALUES (?1, ?2, ?3, ?4)",
            params![&token_hash[..], user, sql_ms(now_ms), sql_ms(expires_ms)],
        )
        .sql()?;
        tx.commit().sql()
    }

    pub(super) fn list_invites(&mut self, now_ms: u64) -> Result<Vec<Invite>, StoreError> {
        let horizon = now_ms.saturating_sub(INVITE_MEMORY_MS);
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT token_hash, user_name, created_ms, expires_ms, used_ms FROM invites
                 WHERE COALESCE(used_ms, expires_ms) > ?1 ORDER BY created_ms",
            )
            .sql()?;
        let rows = statement
            .query_map([sql_ms(horizon)], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                ))
            })
            .sql()?;
        let mut invites = Vec::new();
        for row in rows {
            let (hash, user, created, expires, used) = row.sql()?;
            invites.push(Invite {
                token_hash: token_hash(&hash)?,
                user,
                created_ms: created as u64,
                expires_ms: expires as u64,
                used_ms: used.map(|u| u as u64),
            });
        }
        Ok(invites)
    }

    pub(super) fn enroll_once(
        &mut self,
        user: &UserRecord,
        token_hash: &[u8; 32],
        record: &KeyRecord,
        signed: &SignedKeyRecord,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let tx = self.write_transaction()?;
        let invite = tx
            .prepare_cached(
                "SELECT user_name, expires_ms, used_ms FROM invites WHERE token_hash = ?1",
            )
            .sql()?
            .query_row([&token_hash[..]], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                ))
            })
            .optional()
            .sql()?;
        let Some((invited, expires_ms, used_ms)) = invite else {
            return Err(StoreError::InviteUnknown);
        };
        crate::invite_verdict(&invited, expires_ms as u64, used_ms.is_some(), user, now_ms)?;
        if user_exists(&tx, &user.name)? {
            return Err(StoreError::UserExists(user.name.clone()));
        }
        tx.execute(
            "INSERT INTO users (name, kdf, iterations, salt, hash, public_key, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                user.name,
                user.password.kdf,
                user.password.iterations,
                user.password.salt,
                user.password.hash,
                user.public_key,
                sql_ms(now_ms)
            ],
        )
        .sql()?;
        tx.execute(
            "INSERT INTO key_records (user_name, serial, origin, record, signature, published_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                user.name,
                i64::try_from(record.serial).unwrap_or(i64::MAX),
                record.origin.name(),
                signed.record,
                signed.signature,
                sql_ms(now_ms)
            ],
        )
        .sql()?;
        tx.execute(
            "UPDATE invites SET used_ms = ?2 WHERE token_hash = ?1",
            params![&token_hash[..], sql_ms(now_ms)],
        )
        .sql()?;
        tx.commit().sql()
    }
}

fn sql_ms(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn token_hash(bytes: &[u8]) -> Result<[u8; 32], StoreError> {
    bytes.try_into().map_err(|_| {
        StoreError::Corrupt(format!(
            "an invitation's token hash is {} bytes, not 32",
            bytes.len()
        ))
    })
}
