//! The application's decisions on a pending event: [`Server::accept`] with the standard
//! positive reply, [`Server::reply`] with one of its own, and what each does to the session.

use super::{ApiMisuse, Buffers, Discard, HeloKind, Pending, PrefixBuf, Server, State, Transaction};
use crate::data::{BareCheck, DataDecoder};
use crate::reply::Reply;
use core::fmt::Write as _;

impl<B: Buffers> Server<B> {
    /// Accepts the pending event with its standard positive reply.
    pub fn accept(&mut self) -> Result<(), ApiMisuse> {
        let reply = match self.pending.ok_or(ApiMisuse::NoDecisionPending)? {
            Pending::Helo(_) => Reply::new(250, None, ""),
            Pending::Mail { .. } => Reply::MAIL_OK,
            Pending::Rcpt => Reply::RCPT_OK,
            Pending::DataStart { .. } => Reply::DATA_GO_AHEAD,
            Pending::DataEnd => Reply::MESSAGE_OK,
            Pending::Auth => Reply::AUTH_OK,
            Pending::StartTls => Reply::STARTTLS_READY,
        };
        self.reply(reply)
    }

    /// Answers the pending event. A positive reply must have the code the event calls for
    /// (250 to HELO/EHLO/MAIL/end of data, 250–252 to RCPT, 354 to DATA, 235 to AUTH, 220 to
    /// STARTTLS); a 4xx/5xx reply refuses; `421` also closes the session. For HELO/EHLO, the
    /// text of a positive reply follows the host name on the first line.
    pub fn reply(&mut self, reply: Reply<'_>) -> Result<(), ApiMisuse> {
        let pending = self.pending.ok_or(ApiMisuse::NoDecisionPending)?;
        if !reply.is_valid() {
            return Err(ApiMisuse::WrongReplyCode);
        }
        if reply.is_positive() {
            let ok = match pending {
                Pending::Helo(_) | Pending::Mail { .. } | Pending::DataEnd => reply.code == 250,
                Pending::Rcpt => (250..=252).contains(&reply.code),
                Pending::DataStart { bdat: None } => reply.code == 354,
                Pending::DataStart { bdat: Some(_) } => true,
                Pending::Auth => reply.code == 235,
                Pending::StartTls => reply.code == 220,
            };
            if !ok {
                return Err(ApiMisuse::WrongReplyCode);
            }
            self.positive(pending, reply)?;
        } else {
            self.negative(pending, reply)?;
        }
        self.settle_sasl();
        Ok(())
    }

    fn positive(&mut self, pending: Pending, reply: Reply<'_>) -> Result<(), ApiMisuse> {
        match pending {
            Pending::Helo(kind) => {
                let n = match kind {
                    HeloKind::Helo => {
                        let mut prefixed = PrefixBuf::new();
                        let _ = write!(prefixed, "{}", self.config.hostname.as_str());
                        if !reply.text.is_empty() {
                            let _ = write!(prefixed, " ");
                        }
                        reply.write_with(false, prefixed.as_str(), self.out_free())?
                    }
                    HeloKind::Ehlo | HeloKind::Lhlo => {
                        let mut caps = self.config.capabilities;
                        if !self.tls && !self.config.allow_insecure_auth {
                            caps.auth = crate::ehlo::AuthMechanisms::none();
                        }
                        caps.write_ehlo(
                            self.config.hostname.as_str(),
                            reply.text,
                            self.config.max_message_size,
                            self.tls,
                            &mut self.buffers.output()[self.out_len..self.out_cap],
                        )?
                    }
                };
                self.out_len += n;
                self.helo = Some(kind);
                self.tx = None;
            }
            Pending::Mail { smtputf8, body } => {
                self.write(reply)?;
                self.tx = Some(Transaction {
                    smtputf8,
                    body,
                    recipients: 0,
                    chunked: false,
                    size: 0,
                    bare: BareCheck::default(),
                });
            }
            Pending::Rcpt => {
                self.write(reply)?;
                if let Some(tx) = self.tx.as_mut() {
                    tx.recipients += 1;
                }
            }
            Pending::DataStart { bdat: None } => {
                self.write(reply)?;
                let c = &self.config;
                self.state = State::Data(DataDecoder::new(c.bare_line_endings, c.max_message_size, c.max_text_line));
            }
            Pending::DataStart { bdat: Some((size, last)) } => {
                if let Some(tx) = self.tx.as_mut() {
                    tx.chunked = true;
                }
                self.start_chunk(size, last, Discard::No);
            }
            Pending::DataEnd => {
                self.write(reply)?;
                self.errors = 0;
                self.pending = None;
                self.end_of_data_decision();
                return Ok(());
            }
            Pending::Auth => {
                self.write(reply)?;
                self.authenticated = true;
            }
            Pending::StartTls => {
                self.write(reply)?;
                self.state = State::TlsPending;
            }
        }
        self.pending = None;
        Ok(())
    }

    fn negative(&mut self, pending: Pending, reply: Reply<'_>) -> Result<(), ApiMisuse> {
        match pending {
            Pending::DataStart { bdat: Some((size, last)) } => {
                // Held back from the first byte of the refusal, set once it is written (a reply
                // that does not fit leaves everything as it was: drain, then reply again).
                let at = self.out_len;
                self.write(reply)?;
                self.hold = Some(at);
                self.start_chunk(size, last, Discard::Refused);
            }
            _ => self.write(reply)?,
        }
        self.pending = None;
        if pending == Pending::DataEnd {
            self.end_of_data_decision();
        }
        if reply.code == 421 {
            self.state = State::Closed;
        } else {
            self.count_error();
        }
        Ok(())
    }

    fn end_of_data_decision(&mut self) {
        self.lmtp_left = self.lmtp_left.saturating_sub(1);
        if self.lmtp_left > 0 {
            self.pending = Some(Pending::DataEnd);
        } else {
            self.tx = None;
        }
    }
}
