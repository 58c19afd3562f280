//! A transaction's requests: [`Client::send_mail`] writes MAIL, every RCPT and DATA (or
//! prepares BDAT), [`Client::send_body`] and [`Client::finish_body`] push the content. The
//! replies are handled with the other state transitions, in the parent module.

use crate::data::Stuffer;
use crate::parse::params::Ret;

use super::envelope::{check, check_dsn, Normaliser, W};
use super::{ApiError, Argument, Client, Envelope, Error, ErrorKind, Extension, State, Step, Tx};
#[cfg(doc)]
use super::{Command, Config, Event};
use super::{BDAT_HEADER, OUTPUT_BUFFER, RESERVE};

impl<const N: usize> Client<N> {
    /// Starts a transaction: MAIL, every RCPT and (unless BDAT is used) DATA. With PIPELINING
    /// they leave in one group; otherwise one at a time as the replies arrive. Then an
    /// [`Event::Reply`] per reply, and [`Event::ReadyForData`] or [`Event::Failed`].
    ///
    /// # Errors
    /// Nothing is written on error: [`ApiError::NotReady`] unless idle;
    /// [`ApiError::NoRecipients`], [`ApiError::TooManyRecipients`] (more than `N`);
    /// [`ApiError::ForbiddenCharacter`] for CR, LF, NUL, any control character or `<`/`>` in
    /// an address, or a control character in ENVID/ORCPT; [`ApiError::BadParameter`] for an
    /// empty ENVID/ORCPT or one too long once encoded; [`ApiError::SizeExceeded`] if the
    /// declared size exceeds the server's SIZE; [`ApiError::NotOffered`] for a non-ASCII
    /// address without SMTPUTF8, `eight_bit` without 8BITMIME or `requiretls` without
    /// REQUIRETLS; [`ApiError::TooLong`] if the
    /// commands do not fit the output buffer.
    pub fn send_mail(&mut self, env: &Envelope<'_>) -> Result<(), ApiError> {
        self.ready()?;
        if env.to.is_empty() {
            return Err(ApiError::NoRecipients);
        }
        if env.to.len() > N {
            return Err(ApiError::TooManyRecipients);
        }
        check(env.from, Argument::Sender, true)?;
        let mut utf8 = !env.from.is_ascii();
        for (i, r) in env.to.iter().enumerate() {
            check(r.address, Argument::Recipient(i), true)?;
            if let Some(o) = r.orcpt {
                check(o, Argument::Orcpt(i), false)?;
                check_dsn(o, Argument::Orcpt(i), true)?;
            }
            utf8 |= !r.address.is_ascii();
        }
        if let Some(envid) = env.envid {
            check(envid, Argument::EnvId, false)?;
            check_dsn(envid, Argument::EnvId, false)?;
        }
        if let (Some(size), Some(limit)) = (env.size, self.size_limit) {
            if limit > 0 && size > limit && self.caps.size {
                return Err(ApiError::SizeExceeded { size, limit });
            }
        }
        if utf8 && !self.caps.smtputf8 {
            return Err(ApiError::NotOffered(Extension::SmtpUtf8));
        }
        if env.eight_bit && !self.caps.eightbitmime {
            return Err(ApiError::NotOffered(Extension::EightBitMime));
        }
        if env.requiretls && !self.caps.requiretls {
            return Err(ApiError::NotOffered(Extension::RequireTls));
        }
        let caps = self.caps;
        self.compact();
        let start = self.len;
        let mut w = W { out: &mut self.out[..OUTPUT_BUFFER - RESERVE], len: start };
        w.bytes(b"MAIL FROM:<")?;
        w.bytes(env.from.as_bytes())?;
        w.bytes(b">")?;
        if let (Some(size), true) = (env.size, caps.size) {
            w.bytes(b" SIZE=")?;
            w.num(size)?;
        }
        if env.eight_bit {
            w.bytes(b" BODY=8BITMIME")?;
        }
        if utf8 {
            w.bytes(b" SMTPUTF8")?;
        }
        if env.requiretls {
            w.bytes(b" REQUIRETLS")?;
        }
        if caps.dsn {
            match env.ret {
                Some(Ret::Full) => w.bytes(b" RET=FULL")?,
                Some(Ret::Hdrs) => w.bytes(b" RET=HDRS")?,
                None => {}
            }
            if let Some(envid) = env.envid {
                w.bytes(b" ENVID=")?;
                w.xtext(envid)?;
            }
        }
        w.bytes(b"\r\n")?;
        let mail_end = w.len;
        for (i, r) in env.to.iter().enumerate() {
            w.bytes(b"RCPT TO:<")?;
            w.bytes(r.address.as_bytes())?;
            w.bytes(b">")?;
            if caps.dsn {
                if let Some(n) = r.notify {
                    w.notify(n)?;
                }
                if let Some(o) = r.orcpt {
                    w.bytes(b" ORCPT=rfc822;")?;
                    w.xtext(o)?;
                }
            }
            w.bytes(b"\r\n")?;
            self.rcpt_ends[i] = w.len;
        }
        let chunked = self.config.chunking && caps.chunking && !self.config.lmtp;
        let data_end = if chunked {
            None
        } else {
            w.bytes(b"DATA\r\n")?;
            Some(w.len)
        };
        let end = w.len;
        self.len = end;
        self.pipelined = self.config.pipelining && caps.pipelining;
        self.released = if self.pipelined { end } else { mail_end };
        self.chunked = chunked;
        self.tx = Tx { count: env.to.len(), next: 0, data_end, ..Tx::default() };
        self.results[..env.to.len()].fill(None);
        self.stuffer = Stuffer::new(self.config.bare_line_endings);
        self.normaliser = Normaliser::new(self.config.bare_line_endings);
        self.state = State::Envelope;
        Ok(())
    }

    /// Pushes message content: dot-stuffed (DATA) with bare CR/LF normalised to CRLF (or
    /// refused, per [`Config::bare_line_endings`]). Returns how many bytes of `chunk` were
    /// taken; push the rest after draining [`Client::poll_transmit`]. With BDAT each call
    /// sends one chunk and returns 0 until its reply ([`Event::Reply`] with
    /// [`Command::Bdat`]) arrived.
    ///
    /// # Errors
    /// [`ApiError::NotReady`] outside the content phase; [`ApiError::BareLineEnding`] under
    /// [`BarePolicy::Reject`](crate::data::BarePolicy::Reject): the session is over, close the connection.
    pub fn send_body(&mut self, chunk: &[u8]) -> Result<usize, ApiError> {
        if self.state == (State::Bdat { last: false }) {
            return Ok(0);
        }
        if !self.is_sending_body() {
            return Err(ApiError::NotReady);
        }
        self.compact();
        if self.chunked {
            return self.send_chunk(chunk);
        }
        match self.stuffer.stuff(chunk, &mut self.out[self.len..]) {
            Ok((consumed, written)) => {
                self.len += written;
                self.released = self.len;
                Ok(consumed)
            }
            Err(_) => Err(self.bare_line_ending()),
        }
    }

    fn send_chunk(&mut self, chunk: &[u8]) -> Result<usize, ApiError> {
        let at = self.len + BDAT_HEADER;
        if at + 2 > OUTPUT_BUFFER || chunk.is_empty() {
            return Ok(0);
        }
        let (consumed, k) = match self.normaliser.normalise(chunk, &mut self.out[at..]) {
            Ok(r) => r,
            Err(()) => return Err(self.bare_line_ending()),
        };
        if k > 0 {
            let mut head = [0u8; BDAT_HEADER];
            let mut w = W { out: &mut head, len: 0 };
            w.bytes(b"BDAT ")?;
            w.num(k as u64)?;
            w.bytes(b"\r\n")?;
            let h = w.len;
            self.out[self.len..self.len + h].copy_from_slice(&head[..h]);
            self.out.copy_within(at..at + k, self.len + h);
            self.len += h + k;
            self.released = self.len;
            self.state = State::Bdat { last: false };
        }
        Ok(consumed)
    }

    fn bare_line_ending(&mut self) -> ApiError {
        self.fatal(Error { step: Step::Body, kind: ErrorKind::BareLineEnding, reply: None });
        ApiError::BareLineEnding
    }

    /// Ends the content: the terminator `CRLF . CRLF` (DATA; a missing final CRLF is added),
    /// or the last BDAT chunk. Then [`Event::Delivered`] or [`Event::Failed`].
    ///
    /// # Errors
    /// [`ApiError::NotReady`] outside the content phase (with BDAT: also while a chunk's reply
    /// is outstanding); [`ApiError::OutputFull`]: drain and call again;
    /// [`ApiError::BareLineEnding`] for a final bare CR under [`BarePolicy::Reject`](crate::data::BarePolicy::Reject).
    pub fn finish_body(&mut self) -> Result<(), ApiError> {
        if !self.is_sending_body() {
            return Err(ApiError::NotReady);
        }
        self.compact();
        if OUTPUT_BUFFER - self.len < BDAT_HEADER {
            return Err(ApiError::OutputFull);
        }
        if self.chunked {
            let Ok(tail) = self.normaliser.finish() else {
                return Err(self.bare_line_ending());
            };
            let mut w = W { out: &mut self.out, len: self.len };
            w.bytes(b"BDAT ")?;
            w.num(tail.len() as u64)?;
            w.bytes(b" LAST\r\n")?;
            w.bytes(tail)?;
            self.len = w.len;
            self.state = State::Bdat { last: true };
        } else {
            match self.stuffer.finish(&mut self.out[self.len..]) {
                Ok(n) => self.len += n,
                Err(_) => return Err(self.bare_line_ending()),
            }
            self.state = State::DataEnd;
            if self.config.lmtp {
                self.lmtp_expect_replies();
            }
        }
        self.released = self.len;
        Ok(())
    }
}
