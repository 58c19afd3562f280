//! Sending an entry's pending recipients: to our own mailboxes, through the smarthost, or to
//! the recipients' MX hosts; one outcome per recipient.

use super::*;

/// One outcome per pending recipient, in order.
pub(super) fn deliver_pending(ctx: &Context, s: &Settings, entry: &Entry, pending: &[usize]) -> Vec<Outcome> {
    let mut out: Vec<Option<Outcome>> = vec![None; pending.len()];
    let mut local: Vec<(usize, String, Vec<String>)> = Vec::new();
    let mut remote: Vec<usize> = Vec::new();
    for (k, &i) in pending.iter().enumerate() {
        let address = &entry.recipients[i].address;
        match s.local.as_ref().map(|l| l.directory.resolve(address)) {
            Some(Resolution::Local(accounts)) => local.push((k, address.clone(), accounts)),
            // Mail from the queue to a forwarding alias (a bounce, say) stays with our own.
            Some(Resolution::Forward { accounts, external }) if !accounts.is_empty() => {
                tracing::info!(rcpt = address, external = %external.join(","), "not forwarded again from the queue");
                local.push((k, address.clone(), accounts))
            }
            Some(Resolution::Unknown) => {
                out[k] = Some(Outcome::new(
                    Outcome3::Failed,
                    format!("550 5.1.1 <{address}>: user unknown"),
                    None,
                    (5, 1, 1),
                ))
            }
            _ => remote.push(k),
        }
    }
    if let (Some(l), false) = (&s.local, local.is_empty()) {
        let rcpts: Vec<(String, Vec<String>)> = local.iter().map(|(_, a, acc)| (a.clone(), acc.clone())).collect();
        let result = match ctx.queue.message(&entry.id) {
            Ok(m) => deliver_file(&l.store, &entry.from, &rcpts, m.path(), m.offset()),
            Err(e) => {
                Err(crate::mta::mailbox::LocalError { temporary: true, text: format!("the queued message: {e}") })
            }
        };
        let o = match result {
            Ok(()) => Outcome::new(Outcome3::Delivered, "250 2.0.0 delivered to the mailbox", None, (2, 0, 0)),
            Err(e) if e.temporary => Outcome::new(Outcome3::Deferred, e.text, None, (4, 2, 0)),
            Err(e) => Outcome::new(Outcome3::Failed, e.text, None, (5, 2, 0)),
        };
        for (k, _, _) in &local {
            out[*k] = Some(o.clone());
        }
    }
    if !remote.is_empty() {
        let results =
            deliver_remote(ctx, s, entry, &remote.iter().map(|&k| &entry.recipients[pending[k]]).collect::<Vec<_>>());
        for (k, o) in remote.into_iter().zip(results) {
            out[k] = Some(o);
        }
    }
    out.into_iter()
        .map(|o| o.unwrap_or_else(|| Outcome::new(Outcome3::Deferred, "not attempted", None, (4, 0, 0))))
        .collect()
}

pub(super) fn session_options(s: &Settings, server: &str) -> SendOptions {
    let mut o = SendOptions::new(server, &s.outbound.hostname);
    if let Some(t) = s.outbound.timeout {
        o = o.timeout(t);
    }
    o.bind = s.outbound.bind;
    o
}

/// Sends to recipients outside our domains: one outcome each, in order.
pub(super) fn deliver_remote(ctx: &Context, s: &Settings, entry: &Entry, rcpts: &[&Recipient]) -> Vec<Outcome> {
    let mut envelope = Envelope::new(
        &entry.from,
        rcpts.iter().map(|r| client::Recipient {
            address: r.address.clone(),
            notify: r.notify.as_deref().and_then(parse_notify),
            orcpt: r.orcpt.as_deref().map(|o| o.split_once(';').map_or(o, |(_, a)| a).to_owned()),
        }),
    );
    envelope.envid = entry.envid.clone();
    envelope.requiretls = entry.requiretls;
    envelope.ret =
        Some(if entry.ret_full { smtp_proto::parse::params::Ret::Full } else { smtp_proto::parse::params::Ret::Hdrs });
    let message = match ctx.queue.message(&entry.id) {
        Ok(m) => m,
        Err(e) => {
            let text = format!("the queued message cannot be read: {e}");
            return rcpts.iter().map(|_| Outcome::new(Outcome3::Deferred, text.clone(), None, (4, 3, 0))).collect();
        }
    };
    envelope.size = Some(message.len());
    if let Some(relay) = &s.outbound.smarthost {
        let mut o = session_options(s, &relay.server);
        o.tls = relay.tls;
        o.tls_config = relay.tls_config.clone();
        o.auth = relay.auth.clone();
        let host = Some(relay.server.clone());
        if entry.requiretls && relay.tls == TlsMode::Off {
            let text = format!("REQUIRETLS: the relay {} is used without TLS (smarthost_tls = \"none\")", relay.server);
            return rcpts
                .iter()
                .map(|_| Outcome::new(Outcome3::Failed, text.clone(), host.clone(), (5, 7, 30)))
                .collect();
        }
        let all = |e: &client::SendError| -> Vec<Outcome> {
            let requiretls = matches!(
                e,
                client::SendError::Request(smtp_proto::client::ApiError::NotOffered(
                    smtp_proto::client::Extension::RequireTls
                ))
            );
            let (state, status) = if requiretls {
                (Outcome3::Failed, (5, 7, 30))
            } else if e.is_transient() {
                (Outcome3::Deferred, (4, 4, 1))
            } else {
                (Outcome3::Failed, (5, 0, 0))
            };
            // No connection is no reply: say so, naming the relay.
            let text = match e {
                client::SendError::Connect { server, source } => format!("could not connect to {server}: {source}"),
                e => e.to_string(),
            };
            rcpts.iter().map(|_| Outcome::new(state, text.clone(), host.clone(), status)).collect()
        };
        let mut message = message;
        let key = format!("relay {}", relay.server);
        let kept = match s.pool.take(&key) {
            Some(mut session) => match message.reader() {
                Err(e) => return all(&client::SendError::Input(e)),
                Ok(mut body) => match session.send(&envelope, &mut body) {
                    // A kept session the relay has meanwhile closed: once more on a new one.
                    Err(e) if e.is_transient() => {
                        tracing::debug!("kept session to {} failed ({e}): a new one", relay.server);
                        None
                    }
                    r => Some((session, r)),
                },
            },
            None => None,
        };
        let (session, result) = match kept {
            Some(kept) => kept,
            None => match (client::SmtpClient::connect(&o), message.reader()) {
                (Ok(mut session), Ok(mut body)) => {
                    let r = session.send(&envelope, &mut body);
                    (session, r)
                }
                (Err(e), _) => return all(&e),
                (_, Err(e)) => return all(&client::SendError::Input(e)),
            },
        };
        return match result {
            Ok(d) => {
                s.pool.put(&key, session);
                d.recipients
                    .iter()
                    .map(|r| match &r.reply {
                        Some(_) if r.is_accepted() => Outcome::from_reply(&d.reply, host.clone()),
                        Some(reply) => Outcome::from_reply(reply, host.clone()),
                        None => Outcome::new(Outcome3::Deferred, "no reply", host.clone(), (4, 0, 0)),
                    })
                    .collect()
            }
            Err(e) => all(&e),
        };
    }
    // `TLS-Required: No` (RFC 8689 §5): the sender asks that DANE (and MTA-STS) not hold the
    // message back: opportunistic TLS only. Ignored with REQUIRETLS.
    let mut message = message;
    let tls_optional = !entry.requiretls && tls_required_no(&mut message);
    let mut mx = MxOptions::new(&s.outbound.hostname);
    mx.session = session_options(s, "");
    mx.session.tls = TlsMode::Opportunistic;
    mx.session.tls_config = Some(client::insecure_tls_config());
    mx.port = s.outbound.port;
    mx.pool = Some(s.pool.clone());
    mx.dane = if tls_optional { None } else { s.outbound.dane.clone() };
    mx.sts = if tls_optional { None } else { s.outbound.sts.clone() };
    mx.tls_outcomes = s.outbound.tls_outcomes.clone();
    let (file, offset, len) = message.into_parts();
    let mut spool = Spool::from_file_range(file, offset, len);
    deliver::deliver(&s.dns, &mx, &envelope, &mut spool)
        .into_iter()
        .map(|s| match (&s.reply, s.status) {
            (Some(reply), _) => Outcome::from_reply(reply, s.host.clone()),
            (None, deliver::Status::Accepted) => {
                Outcome::new(Outcome3::Delivered, "250 accepted", s.host.clone(), (2, 0, 0))
            }
            (None, deliver::Status::Deferred) => {
                Outcome::new(Outcome3::Deferred, s.error.clone().unwrap_or_default(), s.host.clone(), (4, 4, 1))
            }
            (None, deliver::Status::Failed) => Outcome::new(
                Outcome3::Failed,
                s.error.clone().unwrap_or_default(),
                s.host.clone(),
                s.enhanced.unwrap_or((5, 4, 4)),
            ),
        })
        .collect()
}

/// Whether the message's header has `TLS-Required: No`.
fn tls_required_no(message: &mut crate::mta::queue::store::Message) -> bool {
    use crate::mta::header::{read_fields, MAX_HEADER_SECTION};
    let fields = message.reader().ok().and_then(|r| read_fields(r, &["TLS-Required"], MAX_HEADER_SECTION).ok());
    fields.is_some_and(|f| f.iter().any(|f| String::from_utf8_lossy(&f.value).trim().eq_ignore_ascii_case("no")))
}

/// NOTIFY as stored (`NEVER` or words) → the client's flags.
pub(super) fn parse_notify(s: &str) -> Option<smtp_proto::parse::params::Notify> {
    use smtp_proto::parse::params::Notify;
    if s.eq_ignore_ascii_case("never") {
        return Some(Notify::NEVER);
    }
    let mut bits = 0;
    for w in s.split(',') {
        bits |= match w.trim().to_ascii_uppercase().as_str() {
            "SUCCESS" => Notify::SUCCESS,
            "FAILURE" => Notify::FAILURE,
            "DELAY" => Notify::DELAY,
            _ => 0,
        };
    }
    (bits != 0).then_some(Notify(bits))
}
