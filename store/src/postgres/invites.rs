//! Enrollment invitations and the enrollment itself on PostgreSQL ([`crate::Store::create_invite`],
//! [`crate::Store::invites`], [`crate::Store::enroll`]). The invitation's row is locked
//! (`FOR UPDATE`) for the enrollment's transaction, so of two enrollments racing with one token
//! the second sees it used; a user made meanwhile is caught by `ON CONFLICT DO NOTHING`.

use forkmail_protocol::e2e::{KeyRecord, SignedKeyRecord};

use super::{queries, Fail, PgStore};
use crate::{Invite, StoreError, UserRecord, INVITE_MEMORY_MS};

const USER_EXISTS: &str = "SELECT 1 FROM users WHERE name = $1";

const CREATE_INVITE: &str = "
INSERT INTO invites (token_hash, user_name, created_ms, expires_ms) VALUES ($1, $2, $3, $4)";

const INVITES: &str = "
SELECT token_hash, user_name, created_ms, expires_ms, used_ms FROM invites
WHERE COALESCE(used_ms, expires_ms) > $1 ORDER BY created_ms";

const LOCK_INVITE: &str =
    "SELECT user_name, expires_ms, used_ms FROM invites WHERE token_hash = $1 FOR UPDATE";

const INSERT_KEY_RECORD: &str = "
INSERT INTO key_records (user_name, serial, origin, record, signature, published_ms)
VALUES ($1, $2, $3, $4, $5, $6)";

const USE_INVITE: &str = "UPDATE invites SET used_ms = $2 WHERE token_hash = $1";

fn sql_ms(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

impl PgStore {
    pub(super) fn create_invite_once(
        &mut self,
        user: &str,
        token_hash: &[u8; 32],
        expires_ms: u64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.run(|conn| {
            let mut tx = conn.client.transaction()?;
            let exists = conn.statements.get(&mut tx, USER_EXISTS)?;
            if tx.query_opt(&exists, &[&user])?.is_some() {
                return Err(StoreError::UserExists(user.to_owned()).into());
            }
            let insert = conn.statements.get(&mut tx, CREATE_INVITE)?;
            tx.execute(
                &insert,
                &[
                    &&token_hash[..],
                    &user,
                    &sql_ms(now_ms),
                    &sql_ms(expires_ms),
                ],
            )?;
            tx.commit().map_err(Fail::Unsure)
        })
    }

    pub(super) fn list_invites(&mut self, now_ms: u64) -> Result<Vec<Invite>, StoreError> {
        let horizon = sql_ms(now_ms.saturating_sub(INVITE_MEMORY_MS));
        self.run(|conn| {
            let statement = conn.statements.get(&mut conn.client, INVITES)?;
            let rows = conn.client.query(&statement, &[&horizon])?;
            let mut invites = Vec::with_capacity(rows.len());
            for row in rows {
                let hash: Vec<u8> = row.try_get(0)?;
                let token_hash = hash.as_slice().try_into().map_err(|_| {
                    StoreError::Corrupt(format!(
                        "an invitation's token hash is {} bytes, not 32",
                        hash.len()
                    ))
                })?;
                invites.push(Invite {
                    token_hash,
                    user: row.try_get(1)?,
                    created_ms: row.try_get::<_, i64>(2)? as u64,
                    expires_ms: row.try_get::<_, i64>(3)? as u64,
                    used_ms: row.try_get::<_, Option<i64>>(4)?.map(|u| u as u64),
                });
            }
            Ok(invites)
        })
    }

    pub(super) fn enroll_once(
        &mut self,
        user: &UserRecord,
        token_hash: &[u8; 32],
        record: &KeyRecord,
        signed: &SignedKeyRecord,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.run(|conn| {
            let mut tx = conn.client.transaction()?;
            let lock = conn.statements.get(&mut tx, LOCK_INVITE)?;
            let Some(row) = tx.query_opt(&lock, &[&&token_hash[..]])? else {
                return Err(StoreError::InviteUnknown.into());
            };
            let invited: String = row.try_get(0)?;
            let expires_ms = row.try_get::<_, i64>(1)? as u64;
            let used = row.try_get::<_, Option<i64>>(2)?.is_some();
            crate::invite_verdict(&invited, expires_ms, used, user, now_ms)?;
            let add = conn.statements.get(&mut tx, queries::ADD_USER)?;
            let added = tx.execute(
                &add,
                &[
                    &user.name,
                    &user.password.kdf,
                    &i64::from(user.password.iterations),
                    &user.password.salt,
                    &user.password.hash,
                    &user.public_key,
                    &sql_ms(now_ms),
                ],
            )?;
            if added == 0 {
                return Err(StoreError::UserExists(user.name.clone()).into());
            }
            let insert = conn.statements.get(&mut tx, INSERT_KEY_RECORD)?;
            tx.execute(
                &insert,
                &[
                    &user.name,
                    &sql_ms(record.serial),
                    &record.origin.name(),
                    &signed.record,
                    &signed.signature,
                    &sql_ms(now_ms),
                ],
            )?;
            let use_invite = conn.statements.get(&mut tx, USE_INVITE)?;
            tx.execute(&use_invite, &[&&token_hash[..], &sql_ms(now_ms)])?;
            tx.commit().map_err(Fail::Unsure)
        })
    }
}
