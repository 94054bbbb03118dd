//! The heartbeat a session child sends its parent: one byte on a pipe of its own whenever it
//! makes progress, and a distinct byte when its store takes or releases the database's write
//! lock.
//!
//! Why: the idle timeout runs inside the child, so a child that is stopped (SIGSTOP) or wedged
//! never applies it and would hold its slot, and perhaps the write lock every login needs, for
//! ever. The parent reads the pipes ([`crate::daemon`]) and kills a child that stays silent too
//! long or holds the write lock too long. A pipe rather than a shared clock: the parent stays
//! single-threaded and holds nothing a child could corrupt; a child that dies closes its end.
//!
//! Both ends are non-blocking. A beat that would block (the parent has not drained the pipe for
//! hours) is dropped: nothing on a session's path ever waits on its heartbeat. Progress beats
//! are sent at most every [`MIN_BEAT_INTERVAL`], so a busy session cannot fill the pipe; lock
//! beats are always sent, so the parent's view of the lock stays exact.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, Read, Write};
use std::ops::ControlFlow;
use std::rc::Rc;
use std::time::{Duration, Instant};

use forkmail_protocol::e2e::{KeyRecord, SignedKeyRecord};
use forkmail_protocol::messages::{DirectoryEntry, Draft, Mail, MailSummary, SentSummary};
use forkmail_store::{
    Attempt, Counts, ImportedMail, Invite, LoginFailures, PasswordUpdate, SendLimits, Store,
    StoreError, StoredPassword, UserKey, UserRecord, WriteLock,
};
use nix::fcntl::OFlag;
use nix::unistd::pipe2;

/// The child made progress (any byte counts as progress).
pub const PROGRESS: u8 = b'.';
/// The child's store has just taken the database's write lock.
pub const LOCK_TAKEN: u8 = b'L';
/// The child's store has released it.
pub const LOCK_RELEASED: u8 = b'U';

/// Progress beats closer together than this are not sent: the parent judges silences of
/// seconds, and at most ten bytes a second a pipe's 64 KiB lasts hours without a reader.
const MIN_BEAT_INTERVAL: Duration = Duration::from_millis(100);

/// A new heartbeat pipe, made before the fork: the parent keeps the [`Monitor`], the child the
/// [`Heartbeat`]; each drops the other.
pub fn pipe() -> io::Result<(Monitor, Heartbeat)> {
    let (read, write) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    Ok((
        Monitor(File::from(read)),
        Heartbeat(Rc::new(Beats {
            pipe: File::from(write),
            last: Cell::new(None),
        })),
    ))
}

/// The child's end. Cheap to clone: the store's lock watcher holds one.
#[derive(Clone)]
pub struct Heartbeat(Rc<Beats>);

struct Beats {
    pipe: File,
    last: Cell<Option<Instant>>,
}

impl Heartbeat {
    /// Says "still making progress", unless it was said less than [`MIN_BEAT_INTERVAL`] ago.
    pub fn beat(&self) {
        let now = Instant::now();
        if self
            .0
            .last
            .get()
            .is_some_and(|last| now.duration_since(last) < MIN_BEAT_INTERVAL)
        {
            return;
        }
        self.send(PROGRESS, now);
    }

    /// Says that the store took or released the write lock; always sent.
    pub fn write_lock(&self, lock: WriteLock) {
        let byte = match lock {
            WriteLock::Taken => LOCK_TAKEN,
            WriteLock::Released => LOCK_RELEASED,
        };
        self.send(byte, Instant::now());
    }

    fn send(&self, byte: u8, now: Instant) {
        // A full pipe (WouldBlock) or a parent gone (EPIPE; SIGPIPE is ignored): dropped.
        if let Ok(1) = (&self.0.pipe).write(&[byte]) {
            self.0.last.set(Some(now));
        }
    }

    /// Runs a blocking step, beating before and after it.
    pub fn around<T>(&self, step: impl FnOnce() -> T) -> T {
        self.beat();
        let result = step();
        self.beat();
        result
    }
}

/// The parent's end of one child's heartbeat pipe.
pub struct Monitor(File);

impl Monitor {
    /// Everything the child has sent since the last call, without blocking; empty if nothing.
    pub fn drain(&mut self) -> Vec<u8> {
        let mut beats = Vec::new();
        let mut buf = [0u8; 512];
        loop {
            match self.0.read(&mut buf) {
                Ok(0) => return beats,
                Ok(n) => beats.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return beats,
            }
        }
    }
}

/// A store whose every call beats before and after, so that a call that waits (for the busy
/// timeout, say) is one silent stretch, never two calls' worth; and whose write lock is
/// reported on the heartbeat.
pub struct Beating<'a> {
    store: &'a mut dyn Store,
    heart: &'a Heartbeat,
}

impl<'a> Beating<'a> {
    pub fn new(store: &'a mut dyn Store, heart: &'a Heartbeat) -> Self {
        let watcher = heart.clone();
        store.watch_write_lock(Box::new(move |lock| watcher.write_lock(lock)));
        Self { store, heart }
    }
}

impl Store for Beating<'_> {
    fn watch_write_lock(&mut self, watch: Box<dyn FnMut(WriteLock)>) {
        self.store.watch_write_lock(watch);
    }

    fn location(&self) -> String {
        self.store.location()
    }

    fn add_user(&mut self, user: &UserRecord, now_ms: u64) -> Result<(), StoreError> {
        self.heart.around(|| self.store.add_user(user, now_ms))
    }

    fn find_user(&mut self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        self.heart.around(|| self.store.find_user(name))
    }

    fn user_keys(&mut self) -> Result<Vec<UserKey>, StoreError> {
        self.heart.around(|| self.store.user_keys())
    }

    fn send(
        &mut self,
        from: &str,
        draft: &Draft,
        now_ms: u64,
        limits: &SendLimits,
    ) -> Result<u64, StoreError> {
        self.heart
            .around(|| self.store.send(from, draft, now_ms, limits))
    }

    fn inbox(
        &mut self,
        user: &str,
        page_len: usize,
        page: &mut dyn FnMut(Vec<MailSummary>, bool) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        self.heart.around(|| self.store.inbox(user, page_len, page))
    }

    fn send_once(
        &mut self,
        from: &str,
        send_id: &[u8],
        draft: &Draft,
        now_ms: u64,
        retention_ms: u64,
        limits: &SendLimits,
    ) -> Result<u64, StoreError> {
        self.heart.around(|| {
            self.store
                .send_once(from, send_id, draft, now_ms, retention_ms, limits)
        })
    }

    fn sent(
        &mut self,
        user: &str,
        page_len: usize,
        page: &mut dyn FnMut(Vec<SentSummary>, bool) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        self.heart.around(|| self.store.sent(user, page_len, page))
    }

    fn read(&mut self, user: &str, id: u64) -> Result<Mail, StoreError> {
        self.heart.around(|| self.store.read(user, id))
    }

    fn delete(&mut self, user: &str, id: u64) -> Result<(), StoreError> {
        self.heart.around(|| self.store.delete(user, id))
    }

    fn delete_many(&mut self, user: &str, ids: &[u64]) -> Result<(), StoreError> {
        self.heart.around(|| self.store.delete_many(user, ids))
    }

    fn mark_unread(&mut self, user: &str, ids: &[u64]) -> Result<(), StoreError> {
        self.heart.around(|| self.store.mark_unread(user, ids))
    }

    fn record_nonce(
        &mut self,
        nonce: &[u8],
        now_ms: u64,
        expires_at_ms: u64,
    ) -> Result<bool, StoreError> {
        self.heart
            .around(|| self.store.record_nonce(nonce, now_ms, expires_at_ms))
    }

    fn login_failures(&mut self, user: &str) -> Result<Option<LoginFailures>, StoreError> {
        self.heart.around(|| self.store.login_failures(user))
    }

    fn begin_login_attempt(
        &mut self,
        user: &str,
        now_ms: u64,
        lock_for: &dyn Fn(u32) -> u64,
    ) -> Result<Attempt, StoreError> {
        self.heart
            .around(|| self.store.begin_login_attempt(user, now_ms, lock_for))
    }

    fn clear_login_failures(&mut self, user: &str) -> Result<(), StoreError> {
        self.heart.around(|| self.store.clear_login_failures(user))
    }

    fn import(&mut self, mails: &mut dyn Iterator<Item = ImportedMail>) -> Result<u64, StoreError> {
        self.heart.around(|| self.store.import(mails))
    }

    fn counts(&mut self) -> Result<Counts, StoreError> {
        self.heart.around(|| self.store.counts())
    }

    fn check_integrity(&mut self) -> Result<(), StoreError> {
        self.heart.around(|| self.store.check_integrity())
    }

    fn schema_version(&mut self) -> Result<u32, StoreError> {
        self.heart.around(|| self.store.schema_version())
    }

    fn mailbox_bytes(&mut self, user: &str) -> Result<u64, StoreError> {
        self.heart.around(|| self.store.mailbox_bytes(user))
    }

    fn update_password(
        &mut self,
        user: &str,
        password: &StoredPassword,
        update: PasswordUpdate,
    ) -> Result<(), StoreError> {
        self.heart
            .around(|| self.store.update_password(user, password, update))
    }

    fn issue_ticket(
        &mut self,
        user: &str,
        ticket_hash: &[u8],
        now_ms: u64,
        expires_ms: u64,
    ) -> Result<(), StoreError> {
        self.heart.around(|| {
            self.store
                .issue_ticket(user, ticket_hash, now_ms, expires_ms)
        })
    }

    fn ticket_valid(
        &mut self,
        user: &str,
        ticket_hash: &[u8],
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        self.heart
            .around(|| self.store.ticket_valid(user, ticket_hash, now_ms))
    }

    fn revoke_tickets(&mut self, user: &str) -> Result<u64, StoreError> {
        self.heart.around(|| self.store.revoke_tickets(user))
    }

    fn key_records(&mut self, names: &[String]) -> Result<Vec<DirectoryEntry>, StoreError> {
        self.heart.around(|| self.store.key_records(names))
    }

    fn publish_key(
        &mut self,
        user: &str,
        record: &KeyRecord,
        signed: &SignedKeyRecord,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.heart
            .around(|| self.store.publish_key(user, record, signed, now_ms))
    }

    fn create_invite(
        &mut self,
        user: &str,
        token_hash: &[u8; 32],
        expires_ms: u64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.heart.around(|| {
            self.store
                .create_invite(user, token_hash, expires_ms, now_ms)
        })
    }

    fn invites(&mut self, now_ms: u64) -> Result<Vec<Invite>, StoreError> {
        self.heart.around(|| self.store.invites(now_ms))
    }

    fn enroll(
        &mut self,
        user: &UserRecord,
        token_hash: &[u8; 32],
        record: &KeyRecord,
        signed: &SignedKeyRecord,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.heart
            .around(|| self.store.enroll(user, token_hash, record, signed, now_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_beats_are_spaced_and_lock_beats_always_arrive() {
        let (mut monitor, heart) = pipe().unwrap();
        assert!(monitor.drain().is_empty());
        heart.beat();
        heart.beat();
        heart.write_lock(WriteLock::Taken);
        heart.beat();
        heart.write_lock(WriteLock::Released);
        assert_eq!(monitor.drain(), vec![PROGRESS, LOCK_TAKEN, LOCK_RELEASED]);
        std::thread::sleep(MIN_BEAT_INTERVAL);
        heart.beat();
        assert_eq!(monitor.drain(), vec![PROGRESS]);
    }

    #[test]
    fn a_full_pipe_never_blocks_the_child() {
        let (mut monitor, heart) = pipe().unwrap();
        for _ in 0..100_000 {
            heart.write_lock(WriteLock::Taken);
        }
        // The pipe holds what it holds (64 KiB by default); the rest was dropped, not waited on.
        let got = monitor.drain().len();
        assert!(got > 0 && got < 100_000, "{got} bytes");
    }

    #[test]
    fn a_monitor_whose_child_is_gone_reads_nothing() {
        let (mut monitor, heart) = pipe().unwrap();
        drop(heart);
        assert!(monitor.drain().is_empty());
    }
}
