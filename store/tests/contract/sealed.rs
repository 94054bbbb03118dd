//! The contract of end-to-end encrypted mail (issue 11): a sealed send stores the ciphertexts
//! as given and counts them against the quota; `list` gives metadata without titles, `headers`
//! only the sealed headers of the user's own folder, `read_letter` both ciphertexts (or a
//! plaintext mail from before as it is).

use std::ops::ControlFlow;

use forkmail_protocol::messages::{Content, Folder, ListEntry, SealedDraft};
use forkmail_store::{ImportedMail, SealedContent, SendLimits, Store, StoreError};

use super::{draft, store_with_users, Backend};

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

pub fn sealed(to: &[&str], tag: u8) -> SealedDraft {
    SealedDraft {
        to: to.iter().map(|s| s.to_string()).collect(),
        header: vec![tag; 200],
        body: vec![tag ^ 0xFF; 700],
    }
}

pub fn list(store: &mut dyn Store, who: &str, folder: Folder) -> Vec<ListEntry> {
    let mut all = Vec::new();
    store
        .list(who, folder, 1000, &mut |entries, _| {
            all.extend(entries);
            ControlFlow::Continue(())
        })
        .expect("list");
    all
}

pub fn a_sealed_send_stores_the_ciphertexts_as_given_and_counts_them(b: &dyn Backend) {
    let (_, mut store) = store_with_users(b);
    let mail = sealed(&["bob", "carol"], 7);
    let id = store
        .send_sealed_once(
            "alice",
            b"sealed-send-id-1",
            &mail,
            10,
            DAY_MS,
            &SendLimits::NONE,
        )
        .unwrap();
    let again = store
        .send_sealed_once(
            "alice",
            b"sealed-send-id-1",
            &mail,
            11,
            DAY_MS,
            &SendLimits::NONE,
        )
        .unwrap();
    assert_eq!(again, id, "a repeated send id stores nothing new");
    assert_eq!(store.counts().unwrap().messages, 1);
    let size = (mail.header.len() + mail.body.len()) as u64;
    assert_eq!(
        store.mailbox_bytes("bob").unwrap(),
        size,
        "the quota counts ciphertext bytes"
    );
    assert_eq!(store.mailbox_bytes("carol").unwrap(), size);
    let letter = store.read_letter("bob", id).unwrap();
    assert_eq!((letter.from.as_str(), letter.date_ms), ("alice", 10));
    assert_eq!(letter.to, ["bob", "carol"]);
    assert_eq!(
        letter.content,
        Content::Sealed {
            header: mail.header.clone(),
            body: mail.body.clone()
        }
    );
    store.check_integrity().unwrap();
    // Under a quota the ciphertexts are what counts: one more such mail does not fit.
    let limits = SendLimits {
        quota_bytes: size * 2 - 1,
        ..SendLimits::NONE
    };
    let err = store
        .send_sealed_once("alice", b"sealed-send-id-2", &mail, 12, DAY_MS, &limits)
        .unwrap_err();
    assert!(matches!(err, StoreError::MailboxFull { .. }), "{err:?}");
    let err = store
        .send_sealed_once(
            "alice",
            b"sealed-send-id-3",
            &sealed(&["nobody"], 1),
            12,
            DAY_MS,
            &SendLimits::NONE,
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::UnknownRecipient(_)), "{err:?}");
    store.delete("bob", id).unwrap();
    assert_eq!(
        store.mailbox_bytes("bob").unwrap(),
        0,
        "a delete gives it back"
    );
    store.check_integrity().unwrap();
}

pub fn list_gives_metadata_without_titles_and_pages(b: &dyn Backend) {
    let (_, mut store) = store_with_users(b);
    let old = store
        .send(
            "alice",
            &draft(&["bob"], "plaintext from before"),
            5,
            &SendLimits::NONE,
        )
        .unwrap();
    let mut ids = vec![old];
    for i in 0..4u8 {
        ids.push(
            store
                .send_sealed_once(
                    "alice",
                    &[i; 16],
                    &sealed(&["bob", "carol"], i),
                    10 + u64::from(i),
                    DAY_MS,
                    &SendLimits::NONE,
                )
                .unwrap(),
        );
    }
    store.read_letter("bob", ids[1]).unwrap();
    let inbox = list(&mut *store, "bob", Folder::Inbox);
    assert_eq!(inbox.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    assert_eq!(inbox[0].title.as_deref(), Some("plaintext from before"));
    assert!(
        inbox[1..].iter().all(|e| e.title.is_none()),
        "sealed mail has no title here"
    );
    assert!(inbox.iter().all(|e| e.from == "alice" && e.to.is_empty()));
    assert_eq!(
        inbox.iter().map(|e| e.read).collect::<Vec<_>>(),
        [false, true, false, false, false]
    );
    assert_eq!(inbox[1].size, 900);
    assert_eq!(inbox[1].date_ms, 10);
    let sent = list(&mut *store, "alice", Folder::Sent);
    assert_eq!(sent.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    assert_eq!(sent[1].to, ["bob", "carol"]);
    assert!(sent.iter().all(|e| e.read));
    // The sent folder outlives every recipient's delete.
    store.delete("bob", ids[2]).unwrap();
    store.delete("carol", ids[2]).unwrap();
    let sent = list(&mut *store, "alice", Folder::Sent);
    assert_eq!(sent.len(), 5);
    assert!(sent[2].title.is_none());
    // Pages of page_len, the last with more == false, Break stops.
    let mut pages = Vec::new();
    store
        .list("bob", Folder::Inbox, 2, &mut |entries, more| {
            pages.push((entries.len(), more));
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(pages, [(2, true), (2, true), (0, false)]);
    let mut calls = 0;
    store
        .list("bob", Folder::Inbox, 1, &mut |_, _| {
            calls += 1;
            ControlFlow::Break(())
        })
        .unwrap();
    assert_eq!(calls, 1);
    let mut empty = Vec::new();
    store
        .list("carol", Folder::Sent, 10, &mut |entries, more| {
            empty.push((entries.len(), more));
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(empty, [(0, false)]);
}

pub fn headers_come_only_from_the_users_own_folder(b: &dyn Backend) {
    let (_, mut store) = store_with_users(b);
    let plain = store
        .send("alice", &draft(&["bob"], "plain"), 5, &SendLimits::NONE)
        .unwrap();
    let to_bob = store
        .send_sealed_once(
            "alice",
            &[1; 16],
            &sealed(&["bob"], 1),
            10,
            DAY_MS,
            &SendLimits::NONE,
        )
        .unwrap();
    let to_carol = store
        .send_sealed_once(
            "alice",
            &[2; 16],
            &sealed(&["carol"], 2),
            11,
            DAY_MS,
            &SendLimits::NONE,
        )
        .unwrap();
    let asked = [to_carol, to_bob, plain, to_bob, 999_999, u64::MAX];
    let got = store.headers("bob", Folder::Inbox, &asked).unwrap();
    assert_eq!(got.len(), 1, "only bob's sealed mail, once");
    assert_eq!((got[0].id, got[0].header.clone()), (to_bob, vec![1; 200]));
    let got = store.headers("alice", Folder::Sent, &asked).unwrap();
    assert_eq!(
        got.iter().map(|h| h.id).collect::<Vec<_>>(),
        [to_carol, to_bob],
        "in the order asked"
    );
    assert!(store
        .headers("alice", Folder::Inbox, &asked)
        .unwrap()
        .is_empty());
    assert!(store
        .headers("bob", Folder::Sent, &asked)
        .unwrap()
        .is_empty());
    // The sender's header outlives the recipients' deletes.
    store.delete("bob", to_bob).unwrap();
    assert_eq!(
        store
            .headers("alice", Folder::Sent, &[to_bob])
            .unwrap()
            .len(),
        1
    );
    assert!(store
        .headers("bob", Folder::Inbox, &[to_bob])
        .unwrap()
        .is_empty());
}

pub fn read_letter_marks_read_and_gives_plaintext_mail_as_it_was(b: &dyn Backend) {
    let (_, mut store) = store_with_users(b);
    let plain = store
        .send(
            "alice",
            &draft(&["bob", "carol"], "old"),
            5,
            &SendLimits::NONE,
        )
        .unwrap();
    let letter = store.read_letter("bob", plain).unwrap();
    assert_eq!(
        letter.content,
        Content::Plain {
            title: "old".into(),
            body: "body of old".into()
        }
    );
    let inbox = list(&mut *store, "bob", Folder::Inbox);
    assert!(inbox[0].read, "read by bob");
    assert!(
        !list(&mut *store, "carol", Folder::Inbox)[0].read,
        "not by carol"
    );
    for (who, id) in [("alice", plain), ("bob", 999_999), ("bob", u64::MAX)] {
        assert!(
            matches!(store.read_letter(who, id), Err(StoreError::NotFound(_))),
            "{who} {id}"
        );
    }
}

pub fn sealed_mail_imports_as_a_sealed_send_stores_it(b: &dyn Backend) {
    let (_, mut store) = store_with_users(b);
    let mut mails = (0..3u8).map(|i| ImportedMail {
        from: "alice".into(),
        sent_ms: 100 + u64::from(i),
        draft: draft(&["bob"], "not stored"),
        sealed: Some(SealedContent {
            header: vec![i; 50],
            body: vec![i; 150],
        }),
    });
    assert_eq!(store.import(&mut mails).unwrap(), 3);
    let inbox = list(&mut *store, "bob", Folder::Inbox);
    assert!(inbox.iter().all(|e| e.title.is_none() && e.size == 200));
    let ids: Vec<u64> = inbox.iter().map(|e| e.id).collect();
    assert_eq!(store.headers("alice", Folder::Sent, &ids).unwrap().len(), 3);
    assert_eq!(
        store.headers("bob", Folder::Inbox, &ids).unwrap()[2].header,
        vec![2; 50]
    );
    match store.read_letter("bob", ids[1]).unwrap().content {
        Content::Sealed { body, .. } => assert_eq!(body, vec![1; 150]),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.mailbox_bytes("bob").unwrap(), 600);
    store.check_integrity().unwrap();
}
