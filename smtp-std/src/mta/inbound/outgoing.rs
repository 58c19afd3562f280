//! Mail that leaves through the queue: what our accounts submit for other domains (their
//! senders checked, DKIM-signed as it streams), forwarded mail (SRS), and bounces to SRS
//! addresses of ours.

use super::*;

/// Signs a message of ours (DKIM) as it streams: given its header block (CRLF line ends and
/// the empty line, as [`crate::mta::stream::read_header_block`] gives it) and a reader of its
/// body (CRLF line ends), the `DKIM-Signature:` field to put on top, or `None` to leave the
/// message unsigned.
pub type Signer = Box<dyn Fn(&[u8], &mut dyn io::BufRead) -> Option<Vec<u8>> + Send + Sync>;

/// Mail of our accounts for other domains: into the outbound queue.
pub struct Outgoing {
    /// The queue.
    pub queue: crate::mta::queue::Queue,
    /// Called with each entry queued, once the message is accepted (hands it to the delivery
    /// workers for an attempt now).
    pub notify: Box<dyn Fn(&str) + Send + Sync>,
    /// An entry is written with its next attempt this long after its submission: the time a
    /// crash during its first attempt leaves (the first retry wait; see
    /// [`crate::mta::queue::worker`]). Zero: due at once (the next scan of the queue finds it).
    pub first_attempt_after: std::time::Duration,
    /// Signs a message of ours before it is queued (DKIM, by its From: domain).
    pub sign: Signer,
    /// The key of the Sender Rewriting Scheme: forwarded mail leaves with an SRS sender in
    /// the forwarding alias's domain, and bounces to such addresses go back to the sender.
    pub srs_secret: Vec<u8>,
    /// `relay_networks`: clients in these networks, `(address, prefix length)`, may send to
    /// other domains without logging in (Postfix's `permit_mynetworks`), their mail queued
    /// and signed like an account's; for programs of this host, such as Dovecot's Sieve
    /// autoreplies. Empty: only authenticated clients relay.
    pub relay_networks: Vec<(std::net::IpAddr, u8)>,
}

impl Outgoing {
    /// Whether this session may send to other domains: logged in, or from `relay_networks`.
    pub(super) fn may_relay(&self, session: &Session) -> bool {
        let ip = session.peer.ip().to_canonical();
        session.user.is_some()
            || self.relay_networks.iter().any(|&(net, len)| crate::mta::auth::verify::in_network(ip, net, len))
    }
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing").field("queue", &self.queue).finish_non_exhaustive()
    }
}

impl InboundHandler {
    /// For an authenticated session: the refusal when the `From:` and `Sender:` fields of the
    /// spooled message name anyone but the user ([`crate::mta::sender`]; the envelope sender
    /// was checked at MAIL). `None`: it may go on (or there are no accounts to check against).
    pub(super) fn sender_refused(&self, session: &Session, d: &mut Delivery) -> Option<Decision> {
        let (Some(user), Route::Accounts { directory, .. }) = (&session.user, &self.policy.route) else {
            return None;
        };
        let refusal = match d.content() {
            Ok(content) => crate::mta::sender::check(directory, user, content).err()?,
            Err(e) => crate::mta::sender::Refusal::Header(e.into()),
        };
        match &refusal {
            crate::mta::sender::Refusal::Header(crate::mta::header::HeaderError::Io(e)) => {
                tracing::error!(id = d.name(), user, "cannot read the spooled message: {e}");
            }
            r => tracing::info!(
                id = d.name(),
                user,
                from = session.envelope.mail_from.as_deref().unwrap_or(""),
                "submission refused: {r}"
            ),
        }
        Some(refusal.reply())
    }

    /// `RCPT TO:<SRS0=...@ours>`: a bounce (or reply) to mail we forwarded goes back to the
    /// original sender, if the address is ours, intact and not too old.
    pub(super) fn srs_bounce(
        &mut self,
        session: &Session,
        directory: &Directory,
        out: &Outgoing,
        address: &str,
    ) -> Decision {
        let domain = address.rsplit_once('@').map_or("", |(_, d)| d).trim_end_matches('.').to_ascii_lowercase();
        if !directory.is_ours(&domain) {
            return refused(session, address, "relay denied: an SRS address of a domain not ours", Reply::RELAY_DENIED);
        }
        match crate::mta::srs::Srs::new(&out.srs_secret, &domain).reverse(address, SystemTime::now()) {
            Ok(original) => {
                tracing::info!(rcpt = address, to = original, "SRS address: back to the original sender");
                self.remote.push(crate::mta::queue::Recipient::new(&original));
                Decision::Accept
            }
            Err(e) => refused(
                session,
                address,
                &format!("invalid SRS address ({e})"),
                Decision::reply(550, Some((5, 1, 1)), format!("<{}>: invalid SRS address ({e})", clean(address))),
            ),
        }
    }

    /// Queues the message: for the remote recipients with the client's sender (signed when a
    /// key applies), and for the forwarded ones with an SRS sender. The ids of the entries.
    pub(super) fn enqueue(&self, session: &Session, d: &mut Delivery) -> Result<Vec<String>, Decision> {
        let Some(out) = &self.policy.outgoing else {
            return Ok(Vec::new());
        };
        if self.remote.is_empty() && self.forward.is_empty() {
            return Ok(Vec::new());
        }
        let from = session.envelope.mail_from.as_deref().unwrap_or("");
        let now = SystemTime::now();
        let name = d.name().to_owned();
        let failed = |what: &str, e: io::Error| -> Decision {
            tracing::error!(id = name, "cannot {what}: {e}");
            Decision::io_error(&e)
        };
        // What is queued (and signed) is the message as the outbound client sends it, with
        // CRLF line ends; it streams from the spool file, never held whole.
        fn crlf(d: &mut Delivery) -> io::Result<CrlfReader<crate::mta::maildir::Content<'_>>> {
            d.content().map(CrlfReader::new)
        }
        let len = match crlf(d).and_then(|mut r| io::copy(&mut r, &mut io::sink())) {
            Ok(n) => n,
            Err(e) => return Err(failed("read the spooled message", e)),
        };
        let mut entries: Vec<(crate::mta::queue::Entry, Option<Vec<u8>>)> = Vec::new();
        if !self.remote.is_empty() {
            let mut signature = None;
            if let (true, Route::Accounts { .. }) = (out.may_relay(session), &self.policy.route) {
                // An account's senders were checked in `data_end` (`sender_refused`); the
                // relay_networks are this host's own programs, trusted like Postfix's
                // $mynetworks with a signing milter.
                let mut reader = match crlf(d) {
                    Ok(r) => io::BufReader::with_capacity(64 * 1024, r),
                    Err(e) => return Err(failed("read the spooled message", e)),
                };
                match read_header_block(&mut reader, MAX_HEADER_BLOCK) {
                    Ok(block) if !block.cut => signature = (out.sign)(&block.bytes, &mut reader),
                    Ok(_) => tracing::warn!(id = name, "header block too long to sign: queued unsigned"),
                    Err(e) => return Err(failed("read the spooled message", e)),
                }
            }
            let mut entry = crate::mta::queue::Entry::new(from, self.remote.clone(), now);
            entry.envid = self.envid.clone();
            // A bounce of a REQUIRETLS message may travel without TLS: headers only.
            entry.ret_full = self.ret_full && !self.requiretls;
            entry.smtputf8 = session.envelope.smtputf8;
            entry.requiretls = self.requiretls;
            entries.push((entry, signature));
        }
        if let (false, Some(domain)) = (self.forward.is_empty(), &self.forward_domain) {
            let sender = if from.is_empty() {
                String::new()
            } else {
                crate::mta::srs::Srs::new(&out.srs_secret, domain).forward(from, now)
            };
            let rcpts = self.forward.iter().map(|a| crate::mta::queue::Recipient::new(a)).collect();
            let mut entry = crate::mta::queue::Entry::new(&sender, rcpts, now);
            entry.smtputf8 = session.envelope.smtputf8;
            entry.requiretls = self.requiretls;
            entries.push((entry, None));
        }
        let mut ids = Vec::new();
        for (mut entry, signature) in entries {
            let prefix = signature.as_deref().unwrap_or_default();
            if !out.first_attempt_after.is_zero() {
                entry.next_attempt = crate::mta::queue::store::unix(now) + out.first_attempt_after.as_secs().max(1);
            }
            let size = prefix.len() as u64 + len;
            let submitted = crlf(d).and_then(|body| out.queue.submit_from(&mut entry, size, &mut prefix.chain(body)));
            match submitted {
                Ok(id) => {
                    let to: Vec<&str> = entry.recipients.iter().map(|r| r.address.as_str()).collect();
                    let (to, signed) = (to.join(","), signature.is_some());
                    tracing::info!(id, from = entry.from, to, size, signed, "queued");
                    ids.push(id);
                }
                Err(e) => {
                    for id in &ids {
                        let _ = out.queue.remove(id);
                    }
                    return Err(failed("queue the message", e));
                }
            }
        }
        Ok(ids)
    }
}
