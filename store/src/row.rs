//! What one send stores, whichever kind of mail it is: a plaintext draft (stored before
//! end-to-end encryption, and still by `send`/`send_once` and imports) or a sealed one, whose
//! title and body columns stay `''` beside its two ciphertexts. Both backends insert from this,
//! so the size the quota counts is computed in one place.
//!
//! Where a sealed mail's ciphertexts go: the body in `bodies.sealed`; the header once, in the
//! sender's record `sent.header` (which outlives the deliveries, and which `headers` and
//! `read_letter` read for the inbox too). `messages.header` stays NULL: a ~700-byte header
//! inline in every `messages` row made an inbox listing of 10,000 scan 8 MB instead of 1 MB
//! (issue 11's benchmark), where the rows it reads are now as small as a plaintext mail's. A
//! listing tells the two kinds apart by `messages.title = ''`: a plaintext title is never empty
//! (every release has refused an empty title).

use forkmail_protocol::messages::{Draft, SealedDraft};

use crate::ImportedMail;

/// The columns of one mail.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MailRow<'a> {
    pub to: &'a [String],
    pub title: &'a str,
    pub body: &'a str,
    /// `sent.header`: `None` for a plaintext mail.
    pub header: Option<&'a [u8]>,
    /// `bodies.sealed`: `None` for a plaintext mail.
    pub sealed: Option<&'a [u8]>,
}

impl<'a> MailRow<'a> {
    pub fn plain(draft: &'a Draft) -> Self {
        MailRow {
            to: &draft.to,
            title: &draft.title,
            body: &draft.body,
            header: None,
            sealed: None,
        }
    }

    pub fn sealed(draft: &'a SealedDraft) -> Self {
        MailRow {
            to: &draft.to,
            title: "",
            body: "",
            header: Some(&draft.header),
            sealed: Some(&draft.body),
        }
    }

    pub fn imported(mail: &'a ImportedMail) -> Self {
        match &mail.sealed {
            None => Self::plain(&mail.draft),
            Some(content) => MailRow {
                to: &mail.draft.to,
                title: "",
                body: "",
                header: Some(&content.header),
                sealed: Some(&content.body),
            },
        }
    }

    /// What a delivery adds to its recipient's mailbox: every stored byte of the mail, as
    /// `octet_length` counts them in the size invariant (`migrations::INVARIANTS`).
    pub fn size(&self) -> u64 {
        (self.title.len()
            + self.body.len()
            + self.header.map_or(0, <[u8]>::len)
            + self.sealed.map_or(0, <[u8]>::len)) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_mail_counts_its_ciphertexts_and_a_plain_one_its_text() {
        let plain = Draft {
            to: vec!["bob".into()],
            title: "é".into(),
            body: "ab".into(),
        };
        assert_eq!(MailRow::plain(&plain).size(), 4, "bytes, not characters");
        let sealed = SealedDraft {
            to: vec!["bob".into()],
            header: vec![0; 300],
            body: vec![0; 1000],
        };
        assert_eq!(MailRow::sealed(&sealed).size(), 1300);
    }
}
