//! The local cache of verified mail headers, `PROFILE/cache/headers.bin`: what lets a listing
//! of thousands of sealed mails skip fetching and decrypting the headers it has seen before.
//!
//! What it may be trusted for: the title (and the sender it was verified with) of a header
//! this client decrypted and verified itself. Nothing else: reading a mail always fetches,
//! decrypts and verifies it again; a cached title is used only when the server still lists
//! the mail under the same sender; only verified headers are ever stored.
//!
//! The file is private (0600, in a 0700 directory), bound to one server key and one user (a
//! profile pointed at another server or user starts afresh), written whole to a temporary file
//! and renamed over the old one (a crash leaves the old cache or the new, never half of one),
//! and ends with a SHA-256 of everything before it. A file that is damaged, foreign, of
//! another format or readable by others is discarded with a note on stderr: the listing then
//! simply fetches every header again.
//!
//! Format (all integers little-endian): `MAGIC`, then the server fingerprint and the user name
//! (each a u16 length and UTF-8 bytes), then a u32 count of records, each `folder: u8` (0 inbox,
//! 1 sent), `id: u64`, `from` and `title` (u16 length and UTF-8 bytes), then 32 bytes of
//! SHA-256 over all the bytes before them. Written through a buffer; read whole in one call and
//! parsed in place.

use std::cell::Cell;
use std::collections::HashMap;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use forkmail_protocol::messages::Folder;
use ring::digest::{digest, Context, SHA256};

/// First bytes of a cache file; a new format gets a new number.
const MAGIC: &[u8] = b"forkmail header cache 1\n";

/// The cache's place in a profile directory.
pub fn cache_path(profile: &Path) -> PathBuf {
    profile.join("cache").join("headers.bin")
}

/// One cached, verified header: the sender as an index into [`HeaderCache::senders`] (a
/// listing of 100,000 mails has a few dozen senders).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cached {
    id: u64,
    from: u32,
    /// Where the title is in [`HeaderCache::titles`]: one allocation for every title, not one
    /// each (loading 10,000 is then a read, not 10,000 allocations).
    start: u32,
    len: u16,
}

/// A title found in the cache (titles are only appended, so it stays valid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    start: u32,
    len: u16,
}

/// The verified headers of one user on one server.
#[derive(Debug)]
pub struct HeaderCache {
    path: PathBuf,
    server: String,
    user: String,
    /// Sorted by id, each id once (as written, so loading is a push per entry; a listing,
    /// in id order too, finds each entry next to the one before).
    inbox: Vec<Cached>,
    sent: Vec<Cached>,
    /// Where the last [`Self::find`] found its entry.
    hint: Cell<usize>,
    /// Every sender named by an entry, each once.
    senders: Vec<Box<str>>,
    /// Every title, back to back (a replaced or forgotten one stays until the next load).
    titles: String,
    sender_index: HashMap<Box<str>, u32>,
    /// Whether anything changed since loading: only then is the file written.
    dirty: bool,
}

impl HeaderCache {
    /// An empty cache that will be written to `path`.
    pub fn empty(path: PathBuf, server: &str, user: &str) -> Self {
        HeaderCache {
            path,
            server: server.to_owned(),
            user: user.to_owned(),
            inbox: Vec::new(),
            sent: Vec::new(),
            hint: Cell::new(0),
            senders: Vec::new(),
            sender_index: HashMap::new(),
            titles: String::new(),
            dirty: false,
        }
    }

    fn sender(&mut self, from: &str) -> u32 {
        if let Some(&i) = self.sender_index.get(from) {
            return i;
        }
        let i = self.senders.len() as u32;
        self.senders.push(from.into());
        self.sender_index.insert(from.into(), i);
        i
    }

    /// Loads the cache at `path` for `server` (its key fingerprint) and `user`; a missing file
    /// is an empty cache, and one that cannot be used is discarded, `note` saying why.
    pub fn load(path: PathBuf, server: &str, user: &str, note: &dyn Fn(&str)) -> Self {
        let mut cache = Self::empty(path, server, user);
        match cache.read() {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => {
                note(&format!(
                    "the header cache {} cannot be used ({err}); it is discarded and the headers \
                     are fetched again",
                    cache.path.display()
                ));
                cache.inbox.clear();
                cache.sent.clear();
                // Written afresh at the next save.
                cache.dirty = true;
            }
        }
        cache
    }

    /// The cached title of `id` in `folder`, if it was verified as sent by `from`.
    pub fn title(&self, folder: Folder, id: u64, from: &str) -> Option<&str> {
        self.find(folder, id, from).map(|found| self.found(found))
    }

    /// Where the cached title of `id` in `folder` is, if it was verified as sent by `from`:
    /// [`Self::found`] gives it, still the same after later inserts (a listing looks each
    /// entry up once).
    pub fn find(&self, folder: Folder, id: u64, from: &str) -> Option<Found> {
        let entries = self.folder(folder);
        // The entry after the last one found first: a listing goes in id order.
        let next = self.hint.get().wrapping_add(1);
        let at = match entries.get(next) {
            Some(c) if c.id == id => next,
            _ => entries.binary_search_by_key(&id, |c| c.id).ok()?,
        };
        self.hint.set(at);
        entries
            .get(at)
            .filter(|c| &*self.senders[c.from as usize] == from)
            .map(|c| Found {
                start: c.start,
                len: c.len,
            })
    }

    /// The title that [`Self::find`] found.
    pub fn found(&self, found: Found) -> &str {
        let start = found.start as usize;
        self.titles
            .get(start..start + found.len as usize)
            .unwrap_or("")
    }

    fn text(&self, c: &Cached) -> &str {
        let start = c.start as usize;
        self.titles.get(start..start + c.len as usize).unwrap_or("")
    }

    /// Appends a title to [`Self::titles`].
    fn store_title(&mut self, title: &str) -> Option<(u32, u16)> {
        let start = u32::try_from(self.titles.len()).ok()?;
        let len = u16::try_from(title.len()).ok()?;
        start.checked_add(u32::from(len))?;
        self.titles.push_str(title);
        Some((start, len))
    }

    /// Remembers a header this client has verified.
    pub fn insert(&mut self, folder: Folder, id: u64, from: &str, title: &str) {
        if self.title(folder, id, from) == Some(title) {
            return;
        }
        let from = self.sender(from);
        let Some((start, len)) = self.store_title(title) else {
            return;
        };
        let entry = Cached {
            id,
            from,
            start,
            len,
        };
        let entries = self.folder_mut(folder);
        match entries.last() {
            Some(last) if last.id >= id => match entries.binary_search_by_key(&id, |c| c.id) {
                Ok(at) => entries[at] = entry,
                Err(at) => entries.insert(at, entry),
            },
            _ => entries.push(entry),
        }
        self.dirty = true;
    }

    /// After a complete listing of `folder`: forgets the mails no longer in it (`listed`
    /// sorted, as a listing is).
    pub fn retain(&mut self, folder: Folder, listed: &[u64]) {
        let entries = self.folder_mut(folder);
        let before = entries.len();
        // Both in id order: one walk through each.
        let mut rest = listed;
        entries.retain(|c| {
            while rest.first().is_some_and(|&id| id < c.id) {
                rest = &rest[1..];
            }
            rest.first() == Some(&c.id)
        });
        if entries.len() != before {
            self.dirty = true;
        }
    }

    pub fn len(&self) -> usize {
        self.inbox.len() + self.sent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the cache if it changed: to a temporary file beside it (0600), then renamed over
    /// the old one. The directory is made 0700 if missing.
    pub fn save(&mut self) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let dir = self
            .path
            .parent()
            .ok_or_else(|| io::Error::other("the cache path has no directory"))?;
        match DirBuilder::new().recursive(true).mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        // One temporary name per save (process and call), so that two sessions of one profile
        // saving at once never rename each other's file away; the last rename wins.
        static SAVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let save = SAVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!(".headers.bin.{}.{save}.tmp", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let written = (|| {
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            let mut out = BufWriter::with_capacity(64 * 1024, Hashing::new(file));
            out.write_all(MAGIC)?;
            write_str(&mut out, &self.server)?;
            write_str(&mut out, &self.user)?;
            let count = u32::try_from(self.len()).map_err(|_| io::Error::other("too many"))?;
            out.write_all(&count.to_le_bytes())?;
            for (tag, entries) in [(0u8, &self.inbox), (1u8, &self.sent)] {
                for c in entries {
                    let id = c.id;
                    out.write_all(&[tag])?;
                    out.write_all(&id.to_le_bytes())?;
                    write_str(&mut out, &self.senders[c.from as usize])?;
                    write_str(&mut out, self.text(c))?;
                }
            }
            let hashing = out.into_inner().map_err(|e| e.into_error())?;
            let (mut file, digest) = hashing.finish();
            file.write_all(&digest)?;
            file.sync_all()?;
            fs::rename(&tmp, &self.path)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written?;
        self.dirty = false;
        Ok(())
    }

    fn folder(&self, folder: Folder) -> &Vec<Cached> {
        match folder {
            Folder::Inbox => &self.inbox,
            Folder::Sent => &self.sent,
        }
    }

    fn folder_mut(&mut self, folder: Folder) -> &mut Vec<Cached> {
        match folder {
            Folder::Inbox => &mut self.inbox,
            Folder::Sent => &mut self.sent,
        }
    }

    fn read(&mut self) -> io::Result<()> {
        self.read_file().map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                invalid("it ends early (truncated)".into())
            } else {
                e
            }
        })
    }

    fn read_file(&mut self) -> io::Result<()> {
        let mut file = File::open(&self.path)?;
        let meta = file.metadata()?;
        if meta.mode() & 0o077 != 0 {
            return Err(invalid(format!(
                "its mode is {:o}, readable by others",
                meta.mode() & 0o777
            )));
        }
        if meta.len() > MAX_FILE_LEN {
            return Err(invalid(format!(
                "it is {} bytes long, more than a cache is ever written ({MAX_FILE_LEN})",
                meta.len()
            )));
        }
        // One read of the whole file (10,000 titles are about 600 KB), then parsed in place.
        let mut bytes = Vec::with_capacity(meta.len() as usize + 1);
        (&mut file).take(MAX_FILE_LEN + 1).read_to_end(&mut bytes)?;
        let mut input = Input { rest: &bytes };
        if input.take(MAGIC.len())? != MAGIC {
            return Err(invalid(
                "not a forkmail header cache of this version".into(),
            ));
        }
        let server = input.str("the server")?;
        let user = input.str("the user")?;
        if server != self.server || user != self.user {
            return Err(invalid(format!(
                "it belongs to user {user:?} of the server with key {server}, not to this profile"
            )));
        }
        let count = u32::from_le_bytes(input.array()?);
        // At most as many entries as the file has bytes for (a record is at least 13 bytes).
        let capacity = (count as u64).min(bytes.len() as u64 / 13) as usize;
        self.inbox.reserve(capacity);
        self.titles.reserve(bytes.len());
        // The sender of the entry before: consecutive entries mostly share one.
        let mut last: Option<(&[u8], u32)> = None;
        for _ in 0..count {
            let [tag] = input.array()?;
            let id = u64::from_le_bytes(input.array()?);
            let len = u16::from_le_bytes(input.array()?);
            let from_bytes = input.take(len as usize)?;
            let from = match last {
                Some((name, i)) if name == from_bytes => i,
                _ => {
                    let name = std::str::from_utf8(from_bytes)
                        .map_err(|_| invalid("a sender is not UTF-8".into()))?;
                    let i = self.sender(name);
                    last = Some((from_bytes, i));
                    i
                }
            };
            let len = u16::from_le_bytes(input.array()?);
            let title = std::str::from_utf8(input.take(len as usize)?)
                .map_err(|_| invalid("a title is not UTF-8".into()))?;
            let start =
                u32::try_from(self.titles.len()).map_err(|_| invalid("too many titles".into()))?;
            self.titles.push_str(title);
            let entry = Cached {
                id,
                from,
                start,
                len,
            };
            match tag {
                0 => self.inbox.push(entry),
                1 => self.sent.push(entry),
                _ => return Err(invalid(format!("unknown folder {tag}"))),
            };
        }
        for entries in [&mut self.inbox, &mut self.sent] {
            // A file written before the entries were kept in order, or with an id twice.
            if !entries.windows(2).all(|w| w[0].id < w[1].id) {
                entries.sort_by_key(|c| c.id);
                entries.dedup_by_key(|c| c.id);
            }
        }
        let hashed = bytes.len() - input.rest.len();
        let stored = input.take(32)?;
        if stored != digest(&SHA256, &bytes[..hashed]).as_ref() {
            return Err(invalid("its checksum does not match (damaged)".into()));
        }
        if !input.rest.is_empty() {
            return Err(invalid("it has bytes after its checksum".into()));
        }
        Ok(())
    }
}

/// The longest cache file read: far more than a million titles of the longest kind take.
const MAX_FILE_LEN: u64 = 1 << 30;

/// The unread rest of a cache file held in memory; running past its end is
/// [`io::ErrorKind::UnexpectedEof`] (a truncated file).
struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.rest.len() < n {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// A u16 length and that many bytes of UTF-8.
    fn str(&mut self, what: &str) -> io::Result<&'a str> {
        let len = u16::from_le_bytes(self.array()?);
        std::str::from_utf8(self.take(len as usize)?)
            .map_err(|_| invalid(format!("{what} is not UTF-8")))
    }
}

fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

fn write_str(out: &mut impl Write, s: &str) -> io::Result<()> {
    let len = u16::try_from(s.len()).map_err(|_| io::Error::other("a field is too long"))?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(s.as_bytes())
}

/// A writer that hashes the bytes that pass through it.
struct Hashing<T> {
    inner: T,
    digest: Context,
}

impl<T> Hashing<T> {
    fn new(inner: T) -> Self {
        Hashing {
            inner,
            digest: Context::new(&SHA256),
        }
    }

    fn finish(self) -> (T, [u8; 32]) {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.digest.finish().as_ref());
        (self.inner, out)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digest.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    type Notes = RefCell<Vec<String>>;

    fn notes() -> (Notes, impl Fn(&Notes, &str)) {
        (RefCell::new(Vec::new()), |n: &Notes, s: &str| {
            n.borrow_mut().push(s.to_owned())
        })
    }

    #[test]
    fn a_saved_cache_loads_back_private_and_bound_to_server_and_user() {
        let dir = tempfile::tempdir().unwrap();
        let path = cache_path(dir.path());
        let mut cache = HeaderCache::empty(path.clone(), "SHA256:server", "bob");
        cache.insert(Folder::Inbox, 7, "alice", "hello ✉");
        cache.insert(Folder::Sent, 7, "bob", "mine");
        cache.save().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let (heard, push) = notes();
        let note = |s: &str| push(&heard, s);
        let loaded = HeaderCache::load(path.clone(), "SHA256:server", "bob", &note);
        assert!(heard.borrow().is_empty(), "{:?}", heard.borrow());
        assert_eq!(loaded.title(Folder::Inbox, 7, "alice"), Some("hello ✉"));
        assert_eq!(loaded.title(Folder::Sent, 7, "bob"), Some("mine"));
        assert_eq!(
            loaded.title(Folder::Inbox, 7, "mallory"),
            None,
            "another sender"
        );
        assert_eq!(loaded.title(Folder::Inbox, 8, "alice"), None);
        // Another user's or another server's profile does not trust it.
        for (server, user) in [("SHA256:other", "bob"), ("SHA256:server", "carol")] {
            let other = HeaderCache::load(path.clone(), server, user, &note);
            assert!(other.is_empty());
        }
        assert_eq!(heard.borrow().len(), 2);
        assert!(
            heard.borrow()[0].contains("not to this profile"),
            "{:?}",
            heard.borrow()
        );
    }

    #[test]
    fn a_damaged_truncated_or_open_cache_is_discarded_with_a_note() {
        let dir = tempfile::tempdir().unwrap();
        let path = cache_path(dir.path());
        let mut cache = HeaderCache::empty(path.clone(), "S", "bob");
        for id in 0..50 {
            cache.insert(Folder::Inbox, id, "alice", &format!("title {id}"));
        }
        cache.save().unwrap();
        let good = fs::read(&path).unwrap();
        let (heard, push) = notes();
        let note = |s: &str| push(&heard, s);
        let mut flipped = good.clone();
        flipped[good.len() / 2] ^= 1;
        let truncated = good[..good.len() - 10].to_vec();
        for (bytes, why) in [
            (flipped, "checksum"),
            (truncated, "truncated"),
            (
                b"some other program's file, long enough".to_vec(),
                "not a forkmail header cache",
            ),
        ] {
            fs::write(&path, &bytes).unwrap();
            let loaded = HeaderCache::load(path.clone(), "S", "bob", &note);
            assert!(loaded.is_empty(), "{why}");
            let last = heard.borrow().last().cloned().unwrap();
            assert!(last.contains(why), "{last}");
        }
        fs::write(&path, &good).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(HeaderCache::load(path.clone(), "S", "bob", &note).is_empty());
        assert!(heard
            .borrow()
            .last()
            .unwrap()
            .contains("readable by others"));
    }

    #[test]
    fn retain_forgets_deleted_mail_and_only_changes_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = cache_path(dir.path());
        let mut cache = HeaderCache::empty(path.clone(), "S", "bob");
        cache.insert(Folder::Inbox, 1, "alice", "a");
        cache.insert(Folder::Inbox, 2, "alice", "b");
        cache.save().unwrap();
        let written = fs::metadata(&path).unwrap().ino();
        cache.insert(Folder::Inbox, 1, "alice", "a");
        cache.save().unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().ino(),
            written,
            "nothing changed"
        );
        cache.retain(Folder::Inbox, &[2]);
        cache.save().unwrap();
        let loaded = HeaderCache::load(path, "S", "bob", &|_| {});
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded.title(Folder::Inbox, 2, "alice"), Some("b"));
    }

    #[test]
    fn entries_inserted_out_of_order_are_found_replaced_and_retained_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = cache_path(dir.path());
        let mut cache = HeaderCache::empty(path.clone(), "S", "bob");
        for id in [9, 3, 7, 1, 5] {
            cache.insert(Folder::Inbox, id, "alice", &format!("t{id}"));
        }
        cache.insert(Folder::Inbox, 7, "carol", "replaced");
        assert_eq!(cache.len(), 5);
        assert_eq!(cache.title(Folder::Inbox, 7, "alice"), None);
        assert_eq!(cache.title(Folder::Inbox, 7, "carol"), Some("replaced"));
        // Looked up in any order, ascending or not.
        for id in [1, 3, 5, 9, 3, 1] {
            let title = format!("t{id}");
            assert_eq!(cache.title(Folder::Inbox, id, "alice"), Some(&*title));
        }
        cache.retain(Folder::Inbox, &[1, 2, 7, 9, 10]);
        cache.save().unwrap();
        let loaded = HeaderCache::load(path, "S", "bob", &|_| {});
        assert_eq!(loaded.len(), 3);
        assert_eq!(loaded.title(Folder::Inbox, 1, "alice"), Some("t1"));
        assert_eq!(loaded.title(Folder::Inbox, 3, "alice"), None);
        assert_eq!(loaded.title(Folder::Inbox, 7, "carol"), Some("replaced"));
        assert_eq!(loaded.title(Folder::Inbox, 9, "alice"), Some("t9"));
    }
}
