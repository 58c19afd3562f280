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
