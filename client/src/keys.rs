//! `forkmail keys`: the contacts' pinned keys (PROTOCOL.md §9.1), `--accept NAME` after a key
//! changed, `--rotate` for this user's own identity. One function for the one-shot command
//! and the REPL, writing its result to `out` like the other verbs.

use std::io::Write;

use serde_json::json;

use crate::cli::KeysArgs;
use crate::e2e::keyring::{fingerprint, Contact, PinState, PinnedContact};
use crate::error::AppError;
use crate::escape::{escape_line, to_json};
use crate::session::Session;

/// Runs `keys` with `args` on `session`.
pub fn run(session: &mut Session, args: &KeysArgs, out: &mut dyn Write) -> Result<(), AppError> {
    if let Some(name) = &args.accept {
        if *name == session.own_contact().user {
            return Err(AppError::Usage(format!(
                "{} is you: your own key is not pinned; `forkmail keys --rotate` renews it",
                escape_line(name)
            )));
        }
        return accept(session, name, args.json, out);
    }
    if args.rotate {
        return rotate(session, args.json, out);
    }
    let contacts = session.pinned_contacts()?;
    let own = session.own_contact().clone();
    if args.json {
        let mut rows = vec![json!({
            "user": own.user,
            "fingerprint": own.fingerprint(),
            "age_recipient": own.age_recipient.to_string(),
            "serial": own.serial,
            "origin": own.origin.name(),
            "pinned": null,
            "state": "you",
        })];
        rows.extend(contacts.iter().map(contact_json));
        writeln!(out, "{}", to_json(&rows))?;
        return Ok(());
    }
    writeln!(
        out,
        "{}  {}  key record {} ({})  you",
        escape_line(&own.user),
        own.fingerprint(),
        own.serial,
        own.origin.name()
    )?;
    for contact in &contacts {
        writeln!(out, "{}", contact_line(contact))?;
    }
    if contacts.is_empty() {
        writeln!(
            out,
            "no contacts pinned yet: a contact's key is pinned the first time you mail them"
        )?;
    }
    Ok(())
}

fn contact_json(contact: &PinnedContact) -> serde_json::Value {
    let mut value = json!({
        "user": contact.user,
        "fingerprint": contact.pin.fingerprint,
        "age_recipient": contact.pin.age_recipient,
        "serial": contact.pin.serial,
        "origin": contact.pin.origin,
        "pinned": contact.pin.pinned,
        "state": contact.state.name(),
    });
    match &contact.state {
        PinState::Changed { presented } => value["presented"] = json!(presented),
        PinState::Invalid { why } => value["why"] = json!(why),
        PinState::Pinned | PinState::Missing => {}
    }
    value
}

fn contact_line(contact: &PinnedContact) -> String {
    let name = escape_line(&contact.user);
    let head = format!(
        "{name}  {}  key record {} ({})  pinned {}",
        contact.pin.fingerprint, contact.pin.serial, contact.pin.origin, contact.pin.pinned
    );
    match &contact.state {
        PinState::Pinned => head,
        PinState::Changed { presented } => format!(
            "{head}  CHANGED: the directory now has {presented}, not signed by the pinned key; no mail goes to {name} until you compare fingerprints with them and run `forkmail keys --accept {name}`"
        ),
        PinState::Missing => format!("{head}  MISSING: the directory has no key of {name} now"),
        PinState::Invalid { why } => format!(
            "{head}  INVALID: the directory serves a bad record ({})",
            escape_line(why)
        ),
    }
}

fn accept(
    session: &mut Session,
    name: &str,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), AppError> {
    let (old, contact) = session.accept_contact(name)?;
    let previous = old.map(|pin| pin.fingerprint);
    if json {
        let value = json!({
            "user": contact.user,
            "previous": previous,
            "fingerprint": contact.fingerprint(),
            "serial": contact.serial,
            "origin": contact.origin.name(),
        });
        writeln!(out, "{}", to_json(&value))?;
        return Ok(());
    }
    let name = escape_line(name);
    match previous {
        Some(previous) if previous == contact.fingerprint() => writeln!(
            out,
            "{name}: pinned {} again (key record {}, same signing key as before)",
            contact.fingerprint(),
            contact.serial
        )?,
        Some(previous) => writeln!(
            out,
            "{name}: was pinned {previous}, now pinned {} (key record {})",
            contact.fingerprint(),
            contact.serial
        )?,
        None => writeln!(
            out,
            "{name}: pinned {} (key record {})",
            contact.fingerprint(),
            contact.serial
        )?,
    }
    Ok(())
}

fn rotate(session: &mut Session, json: bool, out: &mut dyn Write) -> Result<(), AppError> {
    let own: Contact = session.rotate_key()?;
    let kept = session.identities().all().len() - 1;
    if json {
        let value = json!({
            "user": own.user,
            "fingerprint": fingerprint(&own.signing_key),
            "age_recipient": own.age_recipient.to_string(),
            "serial": own.serial,
            "kept": kept,
        });
        writeln!(out, "{}", to_json(&value))?;
        return Ok(());
    }
    writeln!(
        out,
        "published key record {} with the new age identity {}, signed by your key {}; {kept} older identit{} kept so old mail stays readable",
        own.serial,
        own.age_recipient,
        own.fingerprint(),
        if kept == 1 { "y" } else { "ies" }
    )?;
    Ok(())
}
