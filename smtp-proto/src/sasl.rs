//! SASL for AUTH (RFC 4954): base64 without the heap, and the PLAIN, LOGIN, XOAUTH2 and
//! OAUTHBEARER payloads decoded for the application.

/// Decoded credentials, borrowing the session's SASL buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credentials<'a> {
    /// PLAIN (RFC 4616): `authzid NUL authcid NUL passwd`.
    Plain {
        /// Authorisation identity (empty when not given).
        authzid: &'a str,
        /// Authentication identity (the user name).
        authcid: &'a str,
        /// The password.
        password: &'a str,
    },
    /// LOGIN: user name and password in two steps.
    Login {
        /// User name.
        username: &'a str,
        /// Password.
        password: &'a str,
    },
    /// XOAUTH2: `user=...^Aauth=Bearer token^A^A`.
    XOAuth2 {
        /// User.
        user: &'a str,
        /// Bearer token.
        token: &'a str,
    },
    /// OAUTHBEARER (RFC 7628).
    OAuthBearer {
        /// `a=` authorisation identity from the GS2 header, if any.
        authzid: Option<&'a str>,
        /// `host=` if given.
        host: Option<&'a str>,
        /// `port=` if given.
        port: Option<u16>,
        /// Bearer token.
        token: &'a str,
    },
}

/// A SASL payload that could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SaslError {
    /// Not base64.
    Base64,
    /// Output buffer too small.
    TooLong,
    /// Decoded, but not the mechanism's format.
    Malformed,
}

// ---- temporary stubs, replaced by the real module (wip-sasl) ----
/// A SASL mechanism name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Mechanism<'a> {
    Plain,
    Login,
    XOAuth2,
    OAuthBearer,
    ScramSha256,
    CramMd5,
    External,
    Other(&'a str),
}
impl<'a> Mechanism<'a> {
    /// From a name.
    pub fn from_name(name: &'a str) -> Self {
        match () {
            _ if name.eq_ignore_ascii_case("PLAIN") => Self::Plain,
            _ if name.eq_ignore_ascii_case("LOGIN") => Self::Login,
            _ => Self::Other(name),
        }
    }
    /// Bit.
    pub fn bit(&self) -> Option<u16> {
        match self {
            Self::Plain => Some(1),
            Self::Login => Some(2),
            _ => None,
        }
    }
}
/// stub
pub fn decode_base64(input: &[u8], out: &mut [u8]) -> Result<usize, SaslError> {
    let n = input.len().min(out.len());
    out[..n].copy_from_slice(&input[..n]);
    Ok(n)
}
/// stub
pub fn encode_base64(input: &[u8], out: &mut [u8]) -> Result<usize, SaslError> {
    decode_base64(input, out)
}
/// stub
pub fn parse_plain(d: &[u8]) -> Result<Credentials<'_>, SaslError> {
    let _ = d;
    Err(SaslError::Malformed)
}
/// stub
pub fn parse_xoauth2(d: &[u8]) -> Result<Credentials<'_>, SaslError> {
    parse_plain(d)
}
/// stub
pub fn parse_oauthbearer(d: &[u8]) -> Result<Credentials<'_>, SaslError> {
    parse_plain(d)
}
/// stub
pub fn login_credentials<'a>(u: &'a [u8], p: &'a [u8]) -> Result<Credentials<'a>, SaslError> {
    Ok(Credentials::Login {
        username: core::str::from_utf8(u).map_err(|_| SaslError::Malformed)?,
        password: core::str::from_utf8(p).map_err(|_| SaslError::Malformed)?,
    })
}
