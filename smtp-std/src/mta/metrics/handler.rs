//! [`Metered`]: a [`Handler`] around another that counts what its hooks decide — sessions,
//! messages, recipients, AUTH failures, limits — and changes nothing.
//!
//! The reason of a refusal is read from the reply's codes (RFC 3463 enhanced status codes,
//! as the mail server's hooks give them): `x.1.1` an unknown user, `550 5.7.1` relay denied,
//! `554 5.7.1` a DNSBL, `451 4.7.1` greylisting, other `x.7.x` a policy, `x.3.4` the size,
//! `x.3.1` the disk, other `x.3.x` a local error.

use std::io;
use std::net::SocketAddr;

use smtp_proto::data::DataError;
use smtp_proto::parse::{ForwardPath, MailParams, RcptParams, ReversePath};

use super::{get, Limit, Listener, RcptReason, Reason, Received};
use crate::handler::{AuthRequest, Decision, Handler, Limited, Session};
use crate::limits::Refusal;

/// `inner`, counted (see the module notes).
#[derive(Debug, Clone)]
pub struct Metered<H> {
    inner: H,
    /// The server of the submission listeners (587 and 465, told apart by implicit TLS).
    submission: bool,
    /// A piece of the current message could not be stored: the end of data is refused with
    /// `4xx` (the binding calls `data_abort` with no error).
    chunk_failed: Option<Reason>,
}

impl<H> Metered<H> {
    /// `inner` on the `smtp` listeners.
    pub fn smtp(inner: H) -> Self {
        Self { inner, submission: false, chunk_failed: None }
    }

    /// `inner` on the `submission` and `submissions` listeners.
    pub fn submission(inner: H) -> Self {
        Self { inner, submission: true, chunk_failed: None }
    }

    /// The handler inside.
    pub fn inner(&self) -> &H {
        &self.inner
    }
}

/// The reply code of a decision (`None`: the core's standard positive reply).
pub(super) fn code(d: &Decision) -> Option<u16> {
    match d {
        Decision::Accept => None,
        Decision::Reply(r) => Some(r.code),
    }
}

/// The code and enhanced code `(class, subject, detail)` of a refusal; `None` when positive.
fn refusal(d: &Decision) -> Option<(u16, (u8, u16, u16))> {
    match d {
        Decision::Reply(r) if r.code >= 400 => {
            let e = r.enhanced.map_or((0, 0, 0), |e| (e.class, e.subject, e.detail));
            Some((r.code, e))
        }
        _ => None,
    }
}

/// Why a message was refused, from the reply's codes.
pub(super) fn reason(code: u16, (_, subject, detail): (u8, u16, u16)) -> Reason {
    match (subject, detail) {
        (7, _) => Reason::Policy,
        (3, 4) => Reason::Size,
        (3, 1) => Reason::Storage,
        (3, _) => Reason::Local,
        (6, _) | (5, 2) => Reason::Content,
        _ if code == 554 => Reason::Local,
        _ => Reason::Other,
    }
}

/// Why a recipient was refused, from the reply's codes.
pub(super) fn rcpt_reason(code: u16, (_, subject, detail): (u8, u16, u16)) -> RcptReason {
    match (code, subject, detail) {
        (_, 1, 1) => RcptReason::UnknownUser,
        (550, 7, 1) => RcptReason::RelayDenied,
        (554, 7, 1) => RcptReason::Dnsbl,
        (451, 7, 1) => RcptReason::Greylisted,
        (_, 3, 1) => RcptReason::Storage,
        (400..=499, _, _) => RcptReason::Temporary,
        _ => RcptReason::Other,
    }
}

/// The message's end: accepted, or refused and why.
fn message_end(d: &Decision, session: &Session) {
    match refusal(d) {
        None => {
            get().received(Received::Accepted, Reason::None);
            if session.user.is_some() {
                get().submitted();
            }
        }
        Some((code, e)) => {
            let result = if code >= 500 { Received::Refused } else { Received::Deferred };
            get().received(result, reason(code, e));
        }
    }
}

impl<H: Handler> Handler for Metered<H> {
    fn connect(&mut self, session: &Session) -> Decision {
        let listener = match (self.submission, session.implicit_tls) {
            (false, _) => Listener::Smtp,
            (true, false) => Listener::Submission,
            (true, true) => Listener::Submissions,
        };
        get().session_opened(listener);
        self.inner.connect(session)
    }

    fn helo(&mut self, session: &Session, host: &str) -> Decision {
        self.inner.helo(session, host)
    }

    fn auth(&mut self, session: &Session, auth: &AuthRequest<'_>) -> Decision {
        let d = self.inner.auth(session, auth);
        // A permanent refusal is a wrong guess (as the limits count it); 454 is ours.
        if code(&d).is_some_and(|c| c >= 500) {
            get().auth_failed();
        }
        d
    }

    fn knows_user(&mut self, session: &Session, identity: &str) -> bool {
        self.inner.knows_user(session, identity)
    }

    fn mail_from(&mut self, session: &Session, from: &ReversePath<'_>, params: &MailParams<'_>) -> Decision {
        self.inner.mail_from(session, from, params)
    }

    fn rcpt_to(&mut self, session: &Session, to: &ForwardPath<'_>, params: &RcptParams<'_>) -> Decision {
        let d = self.inner.rcpt_to(session, to, params);
        if let Some((code, e)) = refusal(&d) {
            get().rcpt_refused(rcpt_reason(code, e));
        }
        d
    }

    fn data_start(&mut self, session: &Session) -> Decision {
        self.chunk_failed = None;
        let d = self.inner.data_start(session);
        if refusal(&d).is_some() {
            message_end(&d, session);
        }
        d
    }

    fn data_chunk(&mut self, session: &Session, chunk: &[u8]) -> io::Result<()> {
        let result = self.inner.data_chunk(session, chunk);
        if let Err(e) = &result {
            let storage = crate::handler::is_storage_full(e);
            self.chunk_failed = Some(if storage { Reason::Storage } else { Reason::Local });
        }
        result
    }

    fn data_end(&mut self, session: &Session, size: u64) -> Decision {
        let d = self.inner.data_end(session, size);
        message_end(&d, session);
        d
    }

    fn data_abort(&mut self, session: &Session, error: Option<DataError>) {
        let (result, why) = match (error, self.chunk_failed.take()) {
            (None, Some(why)) => (Received::Deferred, why),
            (None, None) => (Received::Lost, Reason::None),
            (Some(DataError::TooBig), _) => (Received::Refused, Reason::Size),
            (Some(DataError::BareLineEnding | DataError::LineTooLong), _) => (Received::Refused, Reason::Content),
            (Some(_), _) => (Received::Refused, Reason::Other),
        };
        get().received(result, why);
        self.inner.data_abort(session, error)
    }

    fn close(&mut self, session: &Session) {
        self.inner.close(session)
    }

    fn limited(&self, peer: SocketAddr, limit: Limited) {
        get().limit_hit(match limit {
            Limited::Client(Refusal::TooManyConnections) => Limit::ConnectionsPerClient,
            Limited::Client(Refusal::RateExceeded) => Limit::ConnectionRate,
            Limited::Client(Refusal::AuthLocked) => Limit::AuthFailures,
            _ => Limit::MaxClients,
        });
        self.inner.limited(peer, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_from_the_codes_the_server_gives() {
        assert_eq!(rcpt_reason(550, (5, 1, 1)), RcptReason::UnknownUser);
        assert_eq!(rcpt_reason(550, (5, 7, 1)), RcptReason::RelayDenied);
        assert_eq!(rcpt_reason(554, (5, 7, 1)), RcptReason::Dnsbl);
        assert_eq!(rcpt_reason(451, (4, 7, 1)), RcptReason::Greylisted);
        assert_eq!(rcpt_reason(452, (4, 3, 1)), RcptReason::Storage);
        assert_eq!(rcpt_reason(451, (4, 3, 0)), RcptReason::Temporary);
        assert_eq!(rcpt_reason(553, (5, 1, 3)), RcptReason::Other);
        assert_eq!(reason(550, (5, 7, 1)), Reason::Policy);
        assert_eq!(reason(451, (4, 7, 24)), Reason::Policy);
        assert_eq!(reason(552, (5, 3, 4)), Reason::Size);
        assert_eq!(reason(452, (4, 3, 1)), Reason::Storage);
        assert_eq!(reason(451, (4, 3, 0)), Reason::Local);
        assert_eq!(reason(554, (5, 0, 0)), Reason::Local);
        assert_eq!(reason(550, (5, 6, 0)), Reason::Content);
    }
}
