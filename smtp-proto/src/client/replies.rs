//! The replies: what each one means in the state the client is in (the next step, an event,
//! a failed transaction, the end of the session).

use super::{summary, Client, Deferred, State};
use super::{Command, Error, ErrorKind, Event, RcptResult, Step};
use crate::ehlo::Capabilities;
use crate::parse::reply::ParsedReply;

impl<const N: usize> Client<N> {
    /// The step the client is in (for errors).
    pub(super) fn step(&self) -> Step {
        match self.state {
            State::Greeting => Step::Greeting,
            State::Ehlo if self.config.lmtp => Step::Lhlo,
            State::Ehlo => Step::Ehlo,
            State::Helo => Step::Helo,
            State::StartTls | State::TlsPending => Step::StartTls,
            State::Auth => Step::Auth,
            State::Envelope => match self.tx.next {
                0 => Step::Mail,
                i if i <= self.tx.count => Step::Rcpt,
                _ => Step::Data,
            },
            State::Body => Step::Body,
            State::Bdat { .. } | State::DataEnd | State::EmptyData => Step::DataEnd,
            State::Rset => Step::Rset,
            State::Quit => Step::Quit,
            State::Ready | State::Closed => Step::Idle,
        }
    }

    pub(super) fn on_reply<'b>(&mut self, r: ParsedReply<'b>, more: bool) -> Option<Event<'b>> {
        let step = self.step();
        let refused = |kind| Error { step, kind, reply: summary(&r) };
        if r.code() == 421 && self.state != State::Quit {
            // Service closing: no more replies will come.
            if self.state == State::DataEnd && self.config.lmtp {
                self.lmtp_record(&r);
            }
            let err = refused(ErrorKind::Refused);
            self.fatal(err);
            return Some(Event::Error(err));
        }
        let code = r.code();
        match self.state {
            State::Greeting => {
                if code != 220 {
                    return Some(self.fatal_quit(refused(ErrorKind::Refused)));
                }
                if self.hello(true).is_err() {
                    return Some(self.fatal_quit(refused(ErrorKind::Refused)));
                }
                Some(Event::Greeting(r))
            }
            State::Ehlo | State::Helo => {
                let ehlo = self.state == State::Ehlo;
                if code == 250 {
                    if ehlo {
                        let lines = r.text_lines().map(|l| core::str::from_utf8(l).unwrap_or(""));
                        let (caps, size) = Capabilities::from_ehlo_lines(lines);
                        self.caps = caps;
                        self.size_limit = size;
                    }
                    self.esmtp = ehlo;
                    self.state = State::Ready;
                    return Some(Event::Capabilities { reply: r, esmtp: ehlo });
                }
                if ehlo && !self.config.lmtp && (code == 500 || code == 502) && self.hello(false).is_ok() {
                    return Some(Event::Reply { command: Command::Ehlo, recipient: None, reply: r });
                }
                Some(self.fatal_quit(refused(ErrorKind::Refused)))
            }
            State::StartTls => {
                if code != 220 {
                    self.state = State::Ready;
                    return Some(Event::Failed(refused(ErrorKind::Refused)));
                }
                if more {
                    let err = refused(ErrorKind::ResponseInjection);
                    self.fatal(err);
                    return Some(Event::Error(err));
                }
                self.state = State::TlsPending;
                Some(Event::TlsHandshake)
            }
            State::Auth => {
                if code == 235 {
                    self.discard_unreleased();
                    self.authenticated = true;
                    self.state = State::Ready;
                    return Some(Event::Authenticated(r));
                }
                if code == 334 {
                    if self.auth.at < self.auth.n {
                        self.released = self.auth.ends[self.auth.at];
                        self.auth.at += 1;
                    } else {
                        // A challenge we have no answer for: cancel (RFC 4954 §4).
                        self.discard_unreleased();
                        self.compact();
                        let _ = self.command(b"*\r\n");
                    }
                    return Some(Event::Reply { command: Command::Auth, recipient: None, reply: r });
                }
                self.discard_unreleased();
                self.state = State::Ready;
                Some(Event::Failed(refused(ErrorKind::Refused)))
            }
            State::Envelope => self.envelope_reply(r, step),
            State::Bdat { last } => {
                if code != 250 {
                    let err = refused(ErrorKind::Refused);
                    return self.fail_transaction(err).or(Some(Event::Reply {
                        command: if last { Command::DataEnd } else { Command::Bdat },
                        recipient: None,
                        reply: r,
                    }));
                }
                if last {
                    self.state = State::Ready;
                    return Some(Event::Delivered { reply: r, accepted: self.tx.accepted });
                }
                self.state = State::Body;
                Some(Event::Reply { command: Command::Bdat, recipient: None, reply: r })
            }
            State::DataEnd if self.config.lmtp => Some(self.lmtp_reply(r)),
            State::DataEnd => {
                self.state = State::Ready;
                if code == 250 {
                    Some(Event::Delivered { reply: r, accepted: self.tx.accepted })
                } else {
                    Some(Event::Failed(refused(ErrorKind::Refused)))
                }
            }
            State::EmptyData => {
                self.state = State::Ready;
                Some(Event::Failed(Error { step: Step::Rcpt, kind: ErrorKind::NoValidRecipients, reply: None }))
            }
            State::Rset => {
                self.state = State::Ready;
                match self.failure.take() {
                    Some(f) => Some(Event::Failed(f)),
                    None => Some(Event::Reply { command: Command::Rset, recipient: None, reply: r }),
                }
            }
            State::Quit => {
                self.state = State::Closed;
                None
            }
            State::Ready | State::Body | State::TlsPending | State::Closed => {
                let err = refused(ErrorKind::UnexpectedReply);
                self.fatal(err);
                Some(Event::Error(err))
            }
        }
    }

    fn envelope_reply<'b>(&mut self, r: ParsedReply<'b>, step: Step) -> Option<Event<'b>> {
        let j = self.tx.next;
        self.tx.next += 1;
        let count = self.tx.count;
        let ok = r.is_success();
        if j == 0 {
            self.tx.mail_ok = ok;
            if !ok {
                let err = Error { step, kind: ErrorKind::Refused, reply: summary(&r) };
                if !self.pipelined {
                    if let Some(e) = self.fail_transaction(err) {
                        return Some(e);
                    }
                } else {
                    self.failure = Some(err);
                }
            } else if !self.pipelined {
                self.released = self.rcpt_ends[0];
            }
            return Some(Event::Reply { command: Command::Mail, recipient: None, reply: r });
        }
        if j <= count {
            let i = j - 1;
            if let Some(slot) = self.results.get_mut(i) {
                *slot = Some(RcptResult { code: r.code(), enhanced: r.enhanced() });
            }
            if ok && self.tx.mail_ok {
                self.tx.accepted += 1;
            }
            let ev = Event::Reply { command: Command::Rcpt, recipient: Some(i), reply: r };
            let usable = self.tx.mail_ok && self.tx.accepted > 0;
            if j < count {
                if !self.pipelined {
                    self.released = self.rcpt_ends[j];
                }
            } else if let Some(data_end) = self.tx.data_end {
                if !self.pipelined {
                    if usable {
                        self.released = data_end;
                    } else if let Some(e) = self.fail_transaction(self.no_valid_recipients()) {
                        return Some(e);
                    }
                }
            } else if usable {
                self.state = State::Body;
                self.deferred = Deferred::ReadyForData;
            } else {
                let f = self.failure.take().unwrap_or(self.no_valid_recipients());
                if let Some(e) = self.fail_transaction(f) {
                    return Some(e);
                }
            }
            return Some(ev);
        }
        // DATA.
        if r.code() == 354 {
            if self.tx.mail_ok && self.tx.accepted > 0 {
                self.state = State::Body;
                return Some(Event::ReadyForData);
            }
            if self.config.lmtp {
                // RFC 2033 §4.2: DATA must fail without a recipient. Ending the empty message
                // would leave an unknown number of replies to come: close without ending it.
                let err = Error { step, kind: ErrorKind::UnexpectedReply, reply: summary(&r) };
                self.fatal(err);
                return Some(Event::Error(err));
            }
            // RFC 2920 §3.1: end the empty message; its reply is a failure we report.
            self.compact();
            if self.command(b".\r\n").is_err() {
                let err = Error { step, kind: ErrorKind::Refused, reply: summary(&r) };
                return Some(self.fatal_quit(err));
            }
            self.state = State::EmptyData;
            return Some(Event::Reply { command: Command::Data, recipient: None, reply: r });
        }
        let err = match self.failure.take() {
            Some(f) => f,
            None if self.tx.accepted == 0 => self.no_valid_recipients(),
            None => Error { step, kind: ErrorKind::Refused, reply: summary(&r) },
        };
        if let Some(e) = self.fail_transaction(err) {
            return Some(e);
        }
        Some(Event::Reply { command: Command::Data, recipient: None, reply: r })
    }

    fn no_valid_recipients(&self) -> Error {
        Error { step: Step::Rcpt, kind: ErrorKind::NoValidRecipients, reply: None }
    }

    /// Drops unsent gated commands and sends RSET; `err` is reported after its reply. Returns
    /// the fatal event if even RSET does not fit (the caller did not drain the output).
    fn fail_transaction<'b>(&mut self, err: Error) -> Option<Event<'b>> {
        self.discard_unreleased();
        self.compact();
        self.failure = Some(err);
        if self.command(b"RSET\r\n").is_err() {
            self.fatal(err);
            return Some(Event::Error(err));
        }
        self.state = State::Rset;
        None
    }

    fn discard_unreleased(&mut self) {
        self.len = self.released;
        if self.sent == self.len {
            self.sent = 0;
            self.released = 0;
            self.len = 0;
        }
    }

    /// Ends the session without a QUIT.
    pub(super) fn fatal(&mut self, err: Error) {
        self.discard_unreleased();
        self.error = Some(err);
        self.state = State::Closed;
        self.deferred = Deferred::Nothing;
    }

    /// Reports a fatal error to a sane server: QUIT, then close after its reply.
    fn fatal_quit<'b>(&mut self, err: Error) -> Event<'b> {
        self.discard_unreleased();
        self.compact();
        self.error = Some(err);
        self.state = if self.command(b"QUIT\r\n").is_ok() { State::Quit } else { State::Closed };
        Event::Error(err)
    }
}
