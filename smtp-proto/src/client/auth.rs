//! AUTH (RFC 4954) with PLAIN, LOGIN and XOAUTH2: every step is written at once and released
//! one by one as the server's `334` challenges arrive.

use crate::ehlo::AuthMechanisms;
use crate::sasl::{self, Credentials};

use super::envelope::{check, W};
#[cfg(doc)]
use super::Event;
use super::{ApiError, Argument, Client, Extension, State, OUTPUT_BUFFER, RESERVE};

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct AuthSteps {
    pub(super) ends: [usize; 3],
    pub(super) n: usize,
    /// Steps released so far.
    pub(super) at: usize,
}

impl AuthSteps {
    fn push(&mut self, end: usize) {
        if let Some(e) = self.ends.get_mut(self.n) {
            *e = end;
            self.n += 1;
        }
    }
}

/// `prefix` + base64 of the concatenated `payload` + CRLF.
fn b64_line(w: &mut W<'_>, raw: &mut [u8], prefix: &[u8], payload: &[&[u8]]) -> Result<(), ApiError> {
    let mut r = W { out: raw, len: 0 };
    for p in payload {
        r.bytes(p)?;
    }
    let n = r.len;
    w.bytes(prefix)?;
    let room = w.out.get_mut(w.len..).ok_or(ApiError::TooLong)?;
    w.len += sasl::encode_base64(&raw[..n], room).map_err(|_| ApiError::TooLong)?;
    w.bytes(b"\r\n")
}

impl<const N: usize> Client<N> {
    /// Authenticates with PLAIN (initial response), LOGIN (two `334` steps) or XOAUTH2
    /// (RFC 4954). Then [`Event::Authenticated`] or [`Event::Failed`] with the server's reply.
    ///
    /// # Errors
    /// [`ApiError::NotReady`] unless idle; [`ApiError::NotOffered`]`(Auth)` if the server does
    /// not offer the mechanism (or it is OAUTHBEARER, not implemented);
    /// [`ApiError::ForbiddenCharacter`] for a control character in the credentials;
    /// [`ApiError::TooLong`] if they do not fit.
    pub fn auth(&mut self, credentials: &Credentials<'_>) -> Result<(), ApiError> {
        self.ready()?;
        let (bit, fields): (u16, [&str; 3]) = match *credentials {
            Credentials::Plain { authzid, authcid, password } => (AuthMechanisms::PLAIN, [authzid, authcid, password]),
            Credentials::Login { username, password } => (AuthMechanisms::LOGIN, [username, password, ""]),
            Credentials::XOAuth2 { user, token } => (AuthMechanisms::XOAUTH2, [user, token, ""]),
            _ => return Err(ApiError::NotOffered(Extension::Auth)),
        };
        if !self.caps.auth.contains(bit) {
            return Err(ApiError::NotOffered(Extension::Auth));
        }
        for f in fields {
            check(f, Argument::Credentials, false)?;
        }
        self.compact();
        let mut raw = [0u8; 2048];
        let limit = OUTPUT_BUFFER - RESERVE;
        let mut w = W { out: &mut self.out[..limit], len: self.len };
        let mut steps = AuthSteps::default();
        let [a, b, c] = fields;
        match bit {
            AuthMechanisms::PLAIN => {
                b64_line(&mut w, &mut raw, b"AUTH PLAIN ", &[a.as_bytes(), b"\0", b.as_bytes(), b"\0", c.as_bytes()])?;
                steps.push(w.len);
            }
            AuthMechanisms::LOGIN => {
                w.bytes(b"AUTH LOGIN\r\n")?;
                steps.push(w.len);
                b64_line(&mut w, &mut raw, b"", &[a.as_bytes()])?;
                steps.push(w.len);
                b64_line(&mut w, &mut raw, b"", &[b.as_bytes()])?;
                steps.push(w.len);
            }
            _ => {
                let payload: [&[u8]; 5] = [b"user=", a.as_bytes(), b"\x01auth=Bearer ", b.as_bytes(), b"\x01\x01"];
                b64_line(&mut w, &mut raw, b"AUTH XOAUTH2 ", &payload)?;
                steps.push(w.len);
                // The answer to an error challenge (a 334 with a JSON status) is an empty line.
                w.bytes(b"\r\n")?;
                steps.push(w.len);
            }
        }
        self.len = w.len;
        steps.at = 1;
        self.released = steps.ends[0];
        self.auth = steps;
        self.state = State::Auth;
        Ok(())
    }
}
