//! The mail requests of protocol version 4 on a [`Session`]: every send sealed end to end
//! ([`crate::e2e::mail`]), listings as `List` plus `Headers` for the mail the header cache
//! has not seen, reading as `ReadLetter` opened and verified on this side.
//!
//! A listing reads the folder's metadata first (compactly: a listing of 100,000 holds about
//! 40 bytes per mail, the titles of sealed mail only as they are emitted), then goes through it
//! in id order, fetching the missing headers 200 at a time with the next request already on
//! the wire while a batch is decrypted in parallel, and hands each entry to the caller as soon
//! as everything before it is known: output streams, and nothing of the listing is built whole.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::ControlFlow;

use forkmail_protocol::messages::{Folder, ListEntry, MAX_HEADER_IDS};
use forkmail_protocol::{
    now_millis, Draft, Mail, MailSummary, Request, Response, SentSummary, SEND_ID_LEN,
};

use super::{new_send_id, unexpected, Session, E2E_VERSION};
use crate::e2e::cache::{cache_path, Found, HeaderCache};
use crate::e2e::keyring::Contact;
use crate::e2e::mail::{self, HeaderToOpen, OpenError, OpenedMail};
use crate::error::ClientError;

const LISTING: &str = "while listing mail";

/// What the listing says of a mail's title.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seal {
    /// Stored in plaintext before end-to-end encryption: the server's title.
    Plain,
    /// A sealed header this client decrypted and verified (now or in an earlier listing).
    Verified,
    /// A sealed header that did not open or verify: the title is not shown.
    Problem(OpenError),
}

/// One mail of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub id: u64,
    pub from: String,
    /// The recipients (sent folder; empty in the inbox).
    pub to: Vec<String>,
    pub date_ms: u64,
    pub read: bool,
    /// Empty unless [`Seal::Plain`] or [`Seal::Verified`].
    pub title: String,
    pub seal: Seal,
}

impl Listed {
    /// The title as a listing shows it: a problem in brackets in place of an unverified one.
    pub fn shown_title(&self) -> String {
        match &self.seal {
            Seal::Problem(problem) => format!("[{problem}]"),
            _ => self.title.clone(),
        }
    }

    pub fn into_summary(self) -> MailSummary {
        let title = match self.seal {
            Seal::Problem(problem) => format!("[{problem}]"),
            _ => self.title,
        };
        MailSummary {
            id: self.id,
            from: self.from,
            date_ms: self.date_ms,
            title,
            read: self.read,
        }
    }

    pub fn into_sent_summary(self) -> SentSummary {
        let title = match self.seal {
            Seal::Problem(problem) => format!("[{problem}]"),
            _ => self.title,
        };
        SentSummary {
            id: self.id,
            to: self.to,
            date_ms: self.date_ms,
            title,
        }
    }
}

/// A listing entry as held until it is emitted: names interned, no ciphertext.
struct Meta {
    id: u64,
    /// Index into the listing's table of sender (inbox) or recipient-list (sent) strings.
    who: u32,
    date_ms: u64,
    read: bool,
    /// A plaintext mail's title; `None` for a sealed one.
    title: Option<Box<str>>,
}

/// Strings seen in a listing, each held once.
#[derive(Default)]
struct Interned {
    index: HashMap<String, u32>,
    all: Vec<String>,
}

impl Interned {
    fn intern(&mut self, s: String) -> u32 {
        if let Some(&i) = self.index.get(&s) {
            return i;
        }
        let i = self.all.len() as u32;
        self.index.insert(s.clone(), i);
        self.all.push(s);
        i
    }
}

impl Session {
    /// Seals `draft` to its recipients and this user and sends it with `send_id`.
    pub(super) fn send_sealed(
        &mut self,
        send_id: &[u8; SEND_ID_LEN],
        draft: &Draft,
    ) -> Result<u64, ClientError> {
        if self.version < E2E_VERSION {
            return Err(ClientError::ServerCannotSeal {
                version: self.version,
            });
        }
        forkmail_protocol::limits::validate_recipients(&draft.to)?;
        forkmail_protocol::limits::validate_title(&draft.title)?;
        forkmail_protocol::limits::validate_body(&draft.body)?;
        let contacts = self.contacts(&draft.to)?;
        let recipients = mail::seal_to(
            contacts.into_iter().map(|c| c.age_recipient),
            &self.own.age_recipient,
        );
        let sealed = mail::seal(
            draft,
            &self.user,
            &self.user_key,
            &recipients,
            *send_id,
            now_millis(),
        )?;
        let request = Request::SendSealed {
            send_id: *send_id,
            draft: sealed,
        };
        self.guard(|s| match s.request(request, "while sending the mail")? {
            Response::Sent { id } => Ok(id),
            other => Err(unexpected("Sent", &other)),
        })
    }

    /// Lists `folder`, calling `each` with every mail in id order as soon as it is known;
    /// `each` returning `Break` stops early. Headers not in the cache are fetched, decrypted
    /// and verified; the cache is saved at the end (a failure to save is a note on stderr).
    pub fn list_each(
        &mut self,
        folder: Folder,
        each: &mut dyn FnMut(Listed) -> ControlFlow<()>,
    ) -> Result<(), ClientError> {
        if self.version < E2E_VERSION {
            return self.list_old(folder, each);
        }
        // The request goes first: the cache file is read while the server answers it.
        self.send_request(Request::List { folder }, LISTING)?;
        let mut cache = self.take_cache();
        let (metas, names) = match self.list_metadata(folder) {
            Ok(listed) => listed,
            Err(err) => {
                self.header_cache = Some(cache);
                return Err(err);
            }
        };
        let result = self.emit(folder, &metas, &names, &mut cache, each);
        if result.is_ok() {
            let listed: Vec<u64> = metas.iter().map(|m| m.id).collect();
            cache.retain(folder, &listed);
        }
        if let Err(err) = cache.save() {
            eprintln!(
                "note: the header cache could not be saved ({err}); the next listing fetches \
                 the headers again"
            );
        }
        self.header_cache = Some(cache);
        result
    }

    /// How many headers the listings of this session fetched from the server (for tests and
    /// the benchmark: a second listing of cached mail fetches none).
    pub fn headers_fetched(&self) -> u64 {
        self.headers_fetched
    }

    /// Reads one mail (the server marks it read) and opens it: a sealed mail decrypted and
    /// verified, or marked with why not; a plaintext one from before as it is.
    pub fn open(&mut self, id: u64) -> Result<OpenedMail, ClientError> {
        if self.version < E2E_VERSION {
            let mail = self.read_old(id)?;
            return Ok(OpenedMail {
                mail,
                encrypted: false,
                verified: false,
                problem: None,
            });
        }
        let letter = self.guard(|s| {
            match s.request(Request::ReadLetter { id }, "while reading the mail")? {
                Response::Letter(letter) => Ok(letter),
                other => Err(unexpected("Letter", &other)),
            }
        })?;
        let signer = match &letter.content {
            forkmail_protocol::messages::Content::Plain { .. } => Err(String::new()),
            forkmail_protocol::messages::Content::Sealed { .. } => self.sender_key(&letter.from),
        };
        Ok(mail::open_letter(
            letter,
            self.identities.all(),
            signer.as_deref().map_err(String::as_str),
            &self.user,
        ))
    }

    /// Reads one mail whose content can be trusted: plaintext from before, or sealed and
    /// verified; [`ClientError::NotGenuine`] otherwise (reply and forward never quote it).
    pub fn read(&mut self, id: u64) -> Result<Mail, ClientError> {
        let opened = self.open(id)?;
        match opened.problem {
            None => Ok(opened.mail),
            Some(problem) => Err(ClientError::NotGenuine {
                id,
                why: problem.to_string(),
            }),
        }
    }

    /// The signing key of `user` as the directory and the pins give it, or why there is none.
    fn sender_key(&mut self, user: &str) -> Result<Vec<u8>, String> {
        match self.contacts(&[user.to_owned()]) {
            Ok(mut contacts) => contacts
                .pop()
                .map(|c| c.signing_key)
                .ok_or_else(|| "no record".to_owned()),
            Err(err) => Err(err.to_string()),
        }
    }

    /// The signing keys of `names` (senders of a listing), each with why not where there is
    /// none: one round trip for all when every one checks, else one per name.
    fn sender_keys(
        &mut self,
        names: &[String],
    ) -> Result<HashMap<String, Result<Vec<u8>, String>>, ClientError> {
        let mut keys = HashMap::new();
        match self.contacts(names) {
            Ok(contacts) => {
                for c in contacts {
                    keys.insert(c.user.clone(), Ok(c.signing_key));
                }
            }
            Err(err) if err.ends_session() => return Err(err),
            Err(_) => {
                for name in names {
                    let key: Result<Contact, ClientError> =
                        self.contacts(std::slice::from_ref(name)).and_then(|mut c| {
                            c.pop()
                                .ok_or(ClientError::NoKeyRecord { user: name.clone() })
                        });
                    match key {
                        Ok(c) => keys.insert(name.clone(), Ok(c.signing_key)),
                        Err(err) if err.ends_session() => return Err(err),
                        Err(err) => keys.insert(name.clone(), Err(err.to_string())),
                    };
                }
            }
        }
        Ok(keys)
    }

    /// Every page of the answer to `List { folder }` (already sent), compactly.
    fn list_metadata(&mut self, folder: Folder) -> Result<(Vec<Meta>, Interned), ClientError> {
        self.guard(|s| {
            let mut metas = Vec::new();
            let mut names = Interned::default();
            let during = LISTING;
            let mut response = s.receive(during)?;
            loop {
                match response {
                    Response::ListPage { entries, more } => {
                        for ListEntry {
                            id,
                            from,
                            to,
                            date_ms,
                            read,
                            title,
                            ..
                        } in entries
                        {
                            let who = match folder {
                                Folder::Inbox => names.intern(from),
                                Folder::Sent => names.intern(to.join(";")),
                            };
                            metas.push(Meta {
                                id,
                                who,
                                date_ms,
                                read,
                                title: title.map(String::into_boxed_str),
                            });
                        }
                        if !more {
                            return Ok((metas, names));
                        }
                    }
                    other => return Err(unexpected("ListPage", &other)),
                }
                response = s.receive(during)?;
            }
        })
    }

    fn take_cache(&mut self) -> HeaderCache {
        if let Some(cache) = self.header_cache.take() {
            return cache;
        }
        HeaderCache::load(
            cache_path(&self.profile_dir.0),
            &self.server_fingerprint,
            &self.user,
            &|note| eprintln!("note: {note}"),
        )
    }

    /// Goes through `metas` in order, fetching and opening the headers the cache lacks (the
    /// next batch requested before the current one is opened), and emits every entry.
    fn emit(
        &mut self,
        folder: Folder,
        metas: &[Meta],
        names: &Interned,
        cache: &mut HeaderCache,
        each: &mut dyn FnMut(Listed) -> ControlFlow<()>,
    ) -> Result<(), ClientError> {
        let sender_of = |m: &Meta| -> String {
            match folder {
                Folder::Inbox => names.all[m.who as usize].clone(),
                Folder::Sent => String::new(),
            }
        };
        // Each sealed entry looked up in the cache once.
        let known: Vec<Option<Found>> = metas
            .iter()
            .map(|m| match m.title {
                Some(_) => None,
                None => {
                    let from = match folder {
                        Folder::Inbox => names.all[m.who as usize].as_str(),
                        Folder::Sent => self.user.as_str(),
                    };
                    cache.find(folder, m.id, from)
                }
            })
            .collect();
        let missing: Vec<usize> = metas
            .iter()
            .zip(&known)
            .enumerate()
            .filter(|(_, (m, found))| m.title.is_none() && found.is_none())
            .map(|(i, _)| i)
            .collect();
        // The senders whose keys the missing headers need, fetched once for the listing.
        let keys = if missing.is_empty() {
            HashMap::new()
        } else {
            let mut senders: Vec<String> = match folder {
                Folder::Inbox => missing.iter().map(|&i| sender_of(&metas[i])).collect(),
                Folder::Sent => vec![self.user.clone()],
            };
            senders.sort();
            senders.dedup();
            self.sender_keys(&senders)?
        };
        let batches: Vec<&[usize]> = missing.chunks(MAX_HEADER_IDS).collect();
        let mut in_flight: VecDeque<usize> = VecDeque::new();
        let mut next_batch = 0;
        let mut opened: HashMap<u64, Result<String, OpenError>> = HashMap::new();
        let mut emitted = 0;
        let user = self.user.clone();
        while emitted < metas.len() {
            // Keep two Headers requests on the wire while there are batches left.
            while next_batch < batches.len() && in_flight.len() < 2 {
                let ids: Vec<u64> = batches[next_batch].iter().map(|&i| metas[i].id).collect();
                self.send_request(Request::Headers { folder, ids }, "while fetching headers")?;
                in_flight.push_back(next_batch);
                next_batch += 1;
            }
            // Emit what is known, up to the first entry still waiting for its header.
            while emitted < metas.len() {
                let m = &metas[emitted];
                let from = match folder {
                    Folder::Inbox => names.all[m.who as usize].clone(),
                    Folder::Sent => user.clone(),
                };
                let (title, seal) = if let Some(title) = &m.title {
                    (title.to_string(), Seal::Plain)
                } else if let Some(found) = known[emitted] {
                    (cache.found(found).to_owned(), Seal::Verified)
                } else if let Some(result) = opened.remove(&m.id) {
                    match result {
                        Ok(title) => (title, Seal::Verified),
                        Err(problem) => (String::new(), Seal::Problem(problem)),
                    }
                } else if in_flight.is_empty() {
                    // Asked for, but the server left it out: not (or no longer) sealed in
                    // this folder as listed.
                    (String::new(), Seal::Problem(OpenError::Undecryptable))
                } else {
                    break;
                };
                let to = match folder {
                    Folder::Inbox => Vec::new(),
                    Folder::Sent => names.all[m.who as usize]
                        .split(';')
                        .map(str::to_owned)
                        .collect(),
                };
                let listed = Listed {
                    id: m.id,
                    from,
                    to,
                    date_ms: m.date_ms,
                    read: m.read,
                    title,
                    seal,
                };
                emitted += 1;
                if each(listed).is_break() {
                    // The answers still on the wire must be read before the next request.
                    while in_flight.pop_front().is_some() {
                        self.receive_headers()?;
                    }
                    return Ok(());
                }
            }
            let Some(batch) = in_flight.pop_front() else {
                continue;
            };
            let headers = self.receive_headers()?;
            self.headers_fetched += headers.len() as u64;
            let asked: HashSet<u64> = batches[batch].iter().map(|&i| metas[i].id).collect();
            let froms: HashMap<u64, String> = batches[batch]
                .iter()
                .map(|&i| {
                    let from = match folder {
                        Folder::Inbox => names.all[metas[i].who as usize].clone(),
                        Folder::Sent => user.clone(),
                    };
                    (metas[i].id, from)
                })
                .collect();
            let to_open: Vec<HeaderToOpen<'_>> = headers
                .iter()
                .filter(|h| asked.contains(&h.id))
                .map(|h| HeaderToOpen {
                    id: h.id,
                    ciphertext: &h.header,
                    server_from: froms[&h.id].as_str(),
                })
                .collect();
            let signer = |name: &str| -> Result<&[u8], String> {
                match keys.get(name) {
                    Some(Ok(key)) => Ok(key.as_slice()),
                    Some(Err(why)) => Err(why.clone()),
                    None => Err("no key was fetched".to_owned()),
                }
            };
            let results = mail::open_headers(&to_open, self.identities.all(), &signer, &user);
            for (h, result) in to_open.iter().zip(results) {
                let result = result.map(|header| {
                    cache.insert(folder, h.id, h.server_from, &header.title);
                    header.title
                });
                opened.insert(h.id, result);
            }
            for id in asked {
                opened.entry(id).or_insert(Err(OpenError::Undecryptable));
            }
        }
        Ok(())
    }

    fn receive_headers(
        &mut self,
    ) -> Result<Vec<forkmail_protocol::messages::SealedHeader>, ClientError> {
        self.guard(|s| match s.receive("while fetching headers")? {
            Response::Headers { headers } => Ok(headers),
            other => Err(unexpected("Headers", &other)),
        })
    }

    /// A listing from a server older than version 4: its own titles, all plaintext.
    fn list_old(
        &mut self,
        folder: Folder,
        each: &mut dyn FnMut(Listed) -> ControlFlow<()>,
    ) -> Result<(), ClientError> {
        let entries: Vec<Listed> = match folder {
            Folder::Inbox => self
                .inbox_old()?
                .into_iter()
                .map(|m| Listed {
                    id: m.id,
                    from: m.from,
                    to: Vec::new(),
                    date_ms: m.date_ms,
                    read: m.read,
                    title: m.title,
                    seal: Seal::Plain,
                })
                .collect(),
            Folder::Sent => {
                let from = self.user.clone();
                self.sent_old()?
                    .into_iter()
                    .map(|m| Listed {
                        id: m.id,
                        from: from.clone(),
                        to: m.to,
                        date_ms: m.date_ms,
                        read: true,
                        title: m.title,
                        seal: Seal::Plain,
                    })
                    .collect()
            }
        };
        for entry in entries {
            if each(entry).is_break() {
                break;
            }
        }
        Ok(())
    }
}

/// A fresh send id, for a send that asked for none.
pub(super) fn fresh_send_id() -> Result<[u8; SEND_ID_LEN], ClientError> {
    new_send_id()
}
