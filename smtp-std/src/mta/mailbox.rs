//! Local delivery: the mailboxes of our accounts, as Maildirs under
//! `<data_dir>/mailboxes/<domain>/<local>/` or through LMTP ([`Store`]).
//!
//! A message for several of our recipients is stored once per mailbox: the recipients that
//! reached a mailbox are its `Delivered-To:` lines, under `Return-Path:` (RFC 5321 §4.4);
//! mailboxes reached by the same recipients (an alias's members) share one file through hard
//! links. Every file and its directory are fsynced before this returns; if one copy cannot
//! be stored, the copies already stored are removed again (the sender will try again).

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::lmtp::{LmtpOptions, LmtpTarget};
use crate::mta::config::valid_local_part;
use crate::mta::maildir::{Delivery, Maildir};

/// How messages reach the accounts' mailboxes.
#[derive(Debug)]
pub enum Store {
    /// A Maildir per account at `<root>/<domain>/<local>/`.
    Maildirs(PathBuf),
    /// One LMTP transaction per message (Dovecot), the accounts as recipients. The message
    /// is spooled in `spool/tmp/` meanwhile. Mail that DMARC quarantines is marked with
    /// `X-Spam-Flag: YES` for the LMTP server's filters (a Sieve rule files it as junk).
    Lmtp {
        /// Where the LMTP server listens.
        target: LmtpTarget,
        /// LHLO name and timeout.
        options: LmtpOptions,
        /// The spool.
        spool: Maildir,
    },
}

/// One stored file and the mailboxes that get it: those reached by the same recipients.
#[derive(Debug, Clone)]
pub(crate) struct Copy {
    /// The envelope recipients that reached these mailboxes (their `Delivered-To:`).
    pub(crate) delivered_to: Vec<String>,
    /// The mailboxes.
    pub(crate) maildirs: Vec<PathBuf>,
}

/// `Return-Path:` and `Delivered-To:` of a final delivery.
pub(crate) fn trace_prefix(from: &str, delivered_to: &[String]) -> String {
    let mut s = format!("Return-Path: <{}>\r\n", clean(from));
    for r in delivered_to {
        s.push_str(&format!("Delivered-To: {}\r\n", clean(r)));
    }
    s
}

/// An address as a header value: nothing that could break the line.
pub(crate) fn clean(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// The Maildir of `account` (`local@domain`, lower case) under `root`.
pub fn account_maildir(root: &Path, account: &str) -> io::Result<PathBuf> {
    match account.rsplit_once('@') {
        Some((local, domain))
            if valid_local_part(local)
                && !domain.is_empty()
                && !domain.contains(['/', '\\'])
                && !domain.starts_with('.') =>
        {
            Ok(root.join(domain).join(local))
        }
        _ => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{account:?} cannot name a mailbox"))),
    }
}

/// The copies for `rcpts` (each the recipient as given and the accounts it reaches): the
/// accounts' Maildirs under `root`, grouped by the recipients that reached them.
pub(crate) fn group_copies(root: &Path, rcpts: &[(String, Vec<String>)]) -> io::Result<Vec<Copy>> {
    // account → the recipients that reached it, in RCPT order.
    let mut by_account: Vec<(String, Vec<String>)> = Vec::new();
    for (rcpt, accounts) in rcpts {
        for a in accounts {
            match by_account.iter_mut().find(|(x, _)| x == a) {
                Some((_, rs)) => rs.push(rcpt.clone()),
                None => by_account.push((a.clone(), vec![rcpt.clone()])),
            }
        }
    }
    let mut copies: Vec<Copy> = Vec::new();
    for (account, rcpts) in by_account {
        let dir = account_maildir(root, &account)?;
        match copies.iter_mut().find(|c| c.delivered_to == rcpts) {
            Some(c) => c.maildirs.push(dir),
            None => copies.push(Copy { delivered_to: rcpts, maildirs: vec![dir] }),
        }
    }
    Ok(copies)
}

/// Stores `copies` of a message (see the module notes). The first copy is the spool file
/// `spool` when given (renamed into place as it is; with `header` fields to add, a new file
/// of them and the spooled content as it streams); otherwise, and for every other copy, a new
/// file from the file `source` (path, offset of the content) or the first copy. The message
/// is never held in memory. On failure the copies already stored are removed.
#[allow(clippy::too_many_arguments)]
pub(crate) fn store_copies(
    spool: Option<Delivery>,
    source: Option<(&Path, u64)>,
    copies: &[Copy],
    from: &str,
    header: &str,
    folder: Option<&str>,
) -> io::Result<Vec<PathBuf>> {
    let mut stored = Vec::new();
    let result = store_into(spool, source, copies, from, header, folder, &mut stored);
    if result.is_err() {
        for p in &stored {
            let _ = std::fs::remove_file(p);
        }
    }
    result.map(|()| stored)
}

#[allow(clippy::too_many_arguments)]
fn store_into(
    mut spool: Option<Delivery>,
    source: Option<(&Path, u64)>,
    copies: &[Copy],
    from: &str,
    header: &str,
    folder: Option<&str>,
    stored: &mut Vec<PathBuf>,
) -> io::Result<()> {
    let target = |dir: &Path| -> io::Result<Maildir> {
        let m = Maildir::create(dir)?;
        match folder {
            Some(f) => m.folder(f),
            None => Ok(m),
        }
    };
    let mut name = spool.as_ref().map(|d| d.name().to_owned());
    let mut first: Option<(PathBuf, u64)> = match (&spool, source) {
        (Some(d), _) => Some((d.tmp_path().to_owned(), d.content_start())),
        (None, Some((p, offset))) => Some((p.to_owned(), offset)),
        (None, None) => None,
    };
    for copy in copies {
        let prefix = format!("{}{header}", trace_prefix(from, &copy.delivered_to));
        let mut dirs = copy.maildirs.iter();
        let Some(dir) = dirs.next() else { continue };
        let dest = target(dir)?;
        let mut name = name.get_or_insert_with(|| dest.unique_name()).clone();
        let path = if let Some(mut d) = spool.take() {
            let p = match header.is_empty() {
                true => d.commit_into(dest.path())?,
                false => {
                    // Header fields to add: a new file of the prefix, those fields and the
                    // spooled content as it streams; the spool file goes when `d` does.
                    let fresh = dest.unique_name();
                    let p = dest.write_message(&fresh, &mut prefix.as_bytes().chain(d.content()?))?;
                    name = fresh;
                    p
                }
            };
            let offset = if !header.is_empty() { prefix.len() as u64 } else { first.as_ref().map_or(0, |f| f.1) };
            first = Some((p.clone(), offset));
            p
        } else {
            let mut body: Box<dyn Read> = match &first {
                Some((p, offset)) => {
                    let mut f = std::fs::File::open(p)?;
                    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(*offset))?;
                    Box::new(f)
                }
                None => return Err(io::Error::other("no content to store")),
            };
            dest.write_message(&name, &mut prefix.as_bytes().chain(&mut body))?
        };
        stored.push(path.clone());
        for dir in dirs {
            stored.push(target(dir)?.link_message(&path, &name)?);
        }
    }
    Ok(())
}

/// The accounts `rcpts` (each the recipient as given and the accounts it reaches) reach, each
/// once, in RCPT order: the recipients of an LMTP transaction.
pub(crate) fn unique_accounts(rcpts: &[(String, Vec<String>)]) -> Vec<&str> {
    let mut accounts: Vec<&str> = Vec::new();
    for a in rcpts.iter().flat_map(|(_, a)| a) {
        if !accounts.contains(&a.as_str()) {
            accounts.push(a);
        }
    }
    accounts
}

/// Why a local delivery failed, and whether it may work later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalError {
    /// Try again later (a `4xx`, an I/O error) rather than bounce.
    pub temporary: bool,
    /// What happened, for the log and a bounce.
    pub text: String,
}

/// Delivers the message in the file at `path` (from `offset` to its end) from `from` to `rcpts` (each the recipient
/// as given and the accounts it reaches) through `store`: the queue's way to our own
/// mailboxes (bounces to our accounts, for instance). Every copy is durable when this
/// returns `Ok`.
pub fn deliver_file(
    store: &Store,
    from: &str,
    rcpts: &[(String, Vec<String>)],
    path: &Path,
    offset: u64,
) -> Result<(), LocalError> {
    let io_err = |e: io::Error| LocalError { temporary: true, text: format!("local delivery: {e}") };
    match store {
        Store::Maildirs(root) => {
            let copies = group_copies(root, rcpts).map_err(|e| LocalError { temporary: false, text: e.to_string() })?;
            store_copies(None, Some((path, offset)), &copies, from, "", None).map(|_| ()).map_err(io_err)
        }
        Store::Lmtp { target, options, .. } => {
            let accounts = unique_accounts(rcpts);
            for group in accounts.chunks(crate::lmtp::MAX_RECIPIENTS) {
                let mut file = std::fs::File::open(path).map_err(io_err)?;
                std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(offset)).map_err(io_err)?;
                match crate::lmtp::deliver(target, options, from, group, &mut file) {
                    Ok(replies) => {
                        if let Some((a, r)) = group.iter().zip(&replies).find(|(_, r)| r.code / 100 != 2) {
                            return Err(LocalError {
                                temporary: r.code / 100 == 4,
                                text: format!("<{a}>: {} {}", r.code, r.text),
                            });
                        }
                    }
                    Err(e) => return Err(LocalError { temporary: e.is_temporary(), text: format!("LMTP: {e}") }),
                }
            }
            Ok(())
        }
    }
}
