//! The envelope the caller provides, the command writer, argument checks and the BDAT
//! content normaliser.

use crate::data::BarePolicy;
use crate::parse::params::{Notify, Ret, MAX_ENVID, MAX_ORCPT};

use super::error::{ApiError, Argument};

/// One recipient: its address and DSN parameters (RFC 3461; sent only when the server offers
/// DSN, dropped otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Recipient<'a> {
    /// The address, without angle brackets (`user@example.org`).
    pub address: &'a str,
    /// `NOTIFY=`.
    pub notify: Option<Notify>,
    /// `ORCPT=rfc822;<address>`: the original recipient, xtext-encoded by the client.
    pub orcpt: Option<&'a str>,
}

impl<'a> Recipient<'a> {
    /// A recipient without DSN parameters.
    pub const fn new(address: &'a str) -> Self {
        Self { address, notify: None, orcpt: None }
    }
}

/// The envelope of one message.
///
/// ```
/// use smtp_proto::client::{Envelope, Recipient};
/// let to = [Recipient::new("a@example.org"), Recipient::new("b@example.org")];
/// let mut env = Envelope::new("me@example.com", &to);
/// env.size = Some(1234);
/// assert_eq!(env.to.len(), 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Envelope<'a> {
    /// The reverse path without angle brackets; `""` for the null sender `<>`.
    pub from: &'a str,
    /// The recipients.
    pub to: &'a [Recipient<'a>],
    /// The message size to declare (`SIZE=`, RFC 1870) when the server offers SIZE. If the
    /// server announced a limit and this exceeds it, `send_mail` fails before MAIL.
    pub size: Option<u64>,
    /// `BODY=8BITMIME` (RFC 6152); refused if not offered.
    pub eight_bit: bool,
    /// `RET=` (DSN).
    pub ret: Option<Ret>,
    /// `ENVID=` (DSN), xtext-encoded by the client.
    pub envid: Option<&'a str>,
    /// `REQUIRETLS` (RFC 8689): the message may only travel over validated TLS; refused if the
    /// server does not offer it (it does only under TLS).
    pub requiretls: bool,
}

impl<'a> Envelope<'a> {
    /// An envelope with no parameters.
    pub const fn new(from: &'a str, to: &'a [Recipient<'a>]) -> Self {
        Self { from, to, size: None, eight_bit: false, ret: None, envid: None, requiretls: false }
    }
}

/// Refuses control characters (CR, LF, NUL, ...) and DEL anywhere, and with `address` the
/// angle brackets that would end the path early.
pub(crate) fn check(s: &str, what: Argument, address: bool) -> Result<(), ApiError> {
    let bad = s.bytes().any(|c| c < b' ' || c == 0x7f || (address && matches!(c, b'<' | b'>')));
    if bad {
        Err(ApiError::ForbiddenCharacter(what))
    } else {
        Ok(())
    }
}

/// Whether a byte goes out as itself in xtext (RFC 3461 §4); the others take `+XX`.
fn xtext_plain(c: u8) -> bool {
    (b'!'..=b'~').contains(&c) && c != b'+' && c != b'='
}

/// The length of `s` once xtext-encoded.
fn xtext_len(s: &str) -> usize {
    s.bytes().map(|c| if xtext_plain(c) { 1 } else { 3 }).sum()
}

/// Refuses an `ENVID` (`orcpt == false`) or an `ORCPT` address that is empty or too long once
/// encoded; the caller checked it for control characters already. The limits are the ones the server side's parser applies (RFC 3461: 100 octets for ENVID,
/// 500 for the ORCPT value, `rfc822;` included).
pub(crate) fn check_dsn(s: &str, what: Argument, orcpt: bool) -> Result<(), ApiError> {
    let (len, max) = if orcpt { ("rfc822;".len() + xtext_len(s), MAX_ORCPT) } else { (xtext_len(s), MAX_ENVID) };
    if s.is_empty() || len > max {
        Err(ApiError::BadParameter(what))
    } else {
        Ok(())
    }
}

/// A cursor writing into a fixed slice.
pub(crate) struct W<'o> {
    pub(crate) out: &'o mut [u8],
    pub(crate) len: usize,
}

impl W<'_> {
    pub(crate) fn bytes(&mut self, b: &[u8]) -> Result<(), ApiError> {
        let end = self.len.checked_add(b.len()).ok_or(ApiError::TooLong)?;
        self.out.get_mut(self.len..end).ok_or(ApiError::TooLong)?.copy_from_slice(b);
        self.len = end;
        Ok(())
    }

    pub(crate) fn num(&mut self, mut n: u64) -> Result<(), ApiError> {
        let mut buf = [0u8; 20];
        let mut i = buf.len();
        loop {
            i -= 1;
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.bytes(&buf[i..])
    }

    /// xtext (RFC 3461 §4): `+` `=` and bytes outside `!`..`~` as `+XX`.
    pub(crate) fn xtext(&mut self, s: &str) -> Result<(), ApiError> {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        for &c in s.as_bytes() {
            if xtext_plain(c) {
                self.bytes(&[c])?;
            } else {
                self.bytes(&[b'+', HEX[usize::from(c >> 4)], HEX[usize::from(c & 15)]])?;
            }
        }
        Ok(())
    }

    pub(crate) fn notify(&mut self, n: Notify) -> Result<(), ApiError> {
        self.bytes(b" NOTIFY=")?;
        if n.is_never() || n.0 & 7 == 0 {
            return self.bytes(b"NEVER");
        }
        let mut first = true;
        for (bit, name) in [(Notify::SUCCESS, "SUCCESS"), (Notify::FAILURE, "FAILURE"), (Notify::DELAY, "DELAY")] {
            if n.0 & bit != 0 {
                if !first {
                    self.bytes(b",")?;
                }
                first = false;
                self.bytes(name.as_bytes())?;
            }
        }
        Ok(())
    }
}

/// Where the normaliser is in the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum NormState {
    /// At the start of a line (or of the content).
    #[default]
    LineStart,
    /// Inside a line.
    Text,
    /// A CR was consumed and nothing written for it yet.
    Cr,
}

/// CR/LF normalisation for BDAT content (no dot-stuffing: BDAT counts octets): bare CR and
/// bare LF become CRLF (or are refused), and [`Normaliser::finish`] ends the content with CRLF,
/// so that BDAT and DATA deliver the same canonical content.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Normaliser {
    policy: BarePolicy,
    state: NormState,
}

impl Normaliser {
    pub(crate) fn new(policy: BarePolicy) -> Self {
        Self { policy, state: NormState::LineStart }
    }

    /// `(consumed, written)`; `Err` if a call starts at a bare CR/LF under `Reject`.
    pub(crate) fn normalise(&mut self, input: &[u8], out: &mut [u8]) -> Result<(usize, usize), ()> {
        let (mut i, mut w) = (0, 0);
        while i < input.len() {
            let c = input[i];
            if self.state == NormState::Cr {
                if c != b'\n' && self.policy == BarePolicy::Reject {
                    return if i == 0 && w == 0 { Err(()) } else { Ok((i, w)) };
                }
                let Some(o) = out.get_mut(w..w + 2) else { return Ok((i, w)) };
                o.copy_from_slice(b"\r\n");
                w += 2;
                self.state = NormState::LineStart;
                if c == b'\n' {
                    i += 1;
                }
                continue;
            }
            match c {
                b'\r' => {
                    self.state = NormState::Cr;
                    i += 1;
                }
                b'\n' => {
                    if self.policy == BarePolicy::Reject {
                        return if i == 0 && w == 0 { Err(()) } else { Ok((i, w)) };
                    }
                    let Some(o) = out.get_mut(w..w + 2) else { return Ok((i, w)) };
                    o.copy_from_slice(b"\r\n");
                    w += 2;
                    i += 1;
                    self.state = NormState::LineStart;
                }
                _ => {
                    // Copy a run up to the next CR or LF.
                    let room = out.len().saturating_sub(w);
                    if room == 0 {
                        return Ok((i, w));
                    }
                    let end = input.len().min(i + room);
                    let run = memchr::memchr2(b'\r', b'\n', &input[i..end]).unwrap_or(end - i);
                    out[w..w + run].copy_from_slice(&input[i..i + run]);
                    w += run;
                    i += run;
                    self.state = NormState::Text;
                }
            }
        }
        Ok((i, w))
    }

    /// What ends the content: `""` after a CRLF, else `"\r\n"`; `Err` for a held bare CR under
    /// `Reject`.
    pub(crate) fn finish(&mut self) -> Result<&'static [u8], ()> {
        let tail: &'static [u8] = match self.state {
            NormState::LineStart => b"",
            NormState::Cr if self.policy == BarePolicy::Reject => return Err(()),
            NormState::Cr | NormState::Text => b"\r\n",
        };
        self.state = NormState::LineStart;
        Ok(tail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn norm(policy: BarePolicy, pieces: &[&[u8]], out_size: usize) -> Result<Vec<u8>, ()> {
        let mut n = Normaliser::new(policy);
        let mut res = Vec::new();
        let mut buf = std::vec![0u8; out_size];
        for p in pieces {
            let mut p = *p;
            while !p.is_empty() {
                let (c, w) = n.normalise(p, &mut buf)?;
                res.extend_from_slice(&buf[..w]);
                p = &p[c..];
            }
        }
        res.extend_from_slice(n.finish()?);
        Ok(res)
    }

    #[test]
    fn normalises_any_split() {
        let input = b"a\rb\nc\r\n.d\r\r\n\n\re";
        let want = b"a\r\nb\r\nc\r\n.d\r\n\r\n\r\n\r\ne\r\n";
        for cut in 0..input.len() {
            for size in [2, 3, 64] {
                let (a, b) = input.split_at(cut);
                assert_eq!(norm(BarePolicy::Allow, &[a, b], size).unwrap(), want, "cut {cut} size {size}");
            }
        }
        assert_eq!(norm(BarePolicy::Reject, &[b"ok\r\n", b"x\ny"], 8), Err(()));
        assert_eq!(norm(BarePolicy::Reject, &[b"ok\r", b"\nx"], 8).unwrap(), b"ok\r\nx\r\n");
        assert_eq!(norm(BarePolicy::Reject, &[b"ok\r"], 8), Err(()));
    }

    #[test]
    fn writes_params() {
        let mut buf = [0u8; 64];
        let mut w = W { out: &mut buf, len: 0 };
        w.xtext("a+b=c d\u{e9}").unwrap();
        w.notify(Notify(Notify::SUCCESS | Notify::DELAY)).unwrap();
        w.notify(Notify::NEVER).unwrap();
        let n = w.len;
        assert_eq!(&buf[..n], b"a+2Bb+3Dc+20d+C3+A9 NOTIFY=SUCCESS,DELAY NOTIFY=NEVER");
    }
}
