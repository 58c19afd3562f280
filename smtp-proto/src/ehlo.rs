//! EHLO capabilities: the set a server offers, written as an EHLO response (RFC 5321 §4.1.1.1).

/// SASL mechanisms, as a small bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AuthMechanisms(pub u16);

impl AuthMechanisms {
    /// `PLAIN` (RFC 4616)
    pub const PLAIN: u16 = 1 << 0;
    /// `LOGIN` (legacy)
    pub const LOGIN: u16 = 1 << 1;
    /// `XOAUTH2` (Google)
    pub const XOAUTH2: u16 = 1 << 2;
    /// `OAUTHBEARER` (RFC 7628)
    pub const OAUTHBEARER: u16 = 1 << 3;
    /// `SCRAM-SHA-256` (RFC 7677); the exchange is driven by the application.
    pub const SCRAM_SHA_256: u16 = 1 << 4;
    /// `EXTERNAL` (RFC 4422)
    pub const EXTERNAL: u16 = 1 << 5;
    /// `CRAM-MD5` (RFC 2195, deprecated); driven by the application.
    pub const CRAM_MD5: u16 = 1 << 6;

    /// Every mechanism with its name, in the order written in EHLO.
    pub const ALL: [(u16, &'static str); 7] = [
        (Self::PLAIN, "PLAIN"),
        (Self::LOGIN, "LOGIN"),
        (Self::XOAUTH2, "XOAUTH2"),
        (Self::OAUTHBEARER, "OAUTHBEARER"),
        (Self::SCRAM_SHA_256, "SCRAM-SHA-256"),
        (Self::EXTERNAL, "EXTERNAL"),
        (Self::CRAM_MD5, "CRAM-MD5"),
    ];

    /// None.
    pub const fn none() -> Self {
        Self(0)
    }
    /// Adds a mechanism.
    pub const fn with(self, m: u16) -> Self {
        Self(self.0 | m)
    }
    /// Whether `m` is in the set.
    pub const fn contains(&self, m: u16) -> bool {
        self.0 & m != 0
    }
    /// Whether the set is empty.
    pub const fn is_empty(&self) -> bool {
        self.0 == 0
    }
    /// The mechanism bit for a name (case-insensitive), if known.
    pub fn from_name(name: &str) -> Option<u16> {
        Self::ALL.iter().find(|(_, n)| n.eq_ignore_ascii_case(name)).map(|(b, _)| *b)
    }
}

/// The extensions a server offers. `Default` offers the usual modern set (see the fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Capabilities {
    /// `PIPELINING` (RFC 2920). Default on.
    pub pipelining: bool,
    /// `SIZE n` (RFC 1870): `Some(0)` writes `SIZE` without a number. Default: the config's
    /// message size limit is written.
    pub size: bool,
    /// `8BITMIME` (RFC 6152). Default on.
    pub eightbitmime: bool,
    /// `SMTPUTF8` (RFC 6531). Default on.
    pub smtputf8: bool,
    /// `CHUNKING` (RFC 3030). Default on.
    pub chunking: bool,
    /// `BINARYMIME` (RFC 3030, needs CHUNKING). Default off.
    pub binarymime: bool,
    /// `DSN` (RFC 3461). Default on.
    pub dsn: bool,
    /// `ENHANCEDSTATUSCODES` (RFC 2034); also switches enhanced codes in replies. Default on.
    pub enhanced_status_codes: bool,
    /// `STARTTLS` (RFC 3207); never written once TLS is active. Default off.
    pub starttls: bool,
    /// `AUTH` mechanisms (RFC 4954). Default none.
    pub auth: AuthMechanisms,
    /// `REQUIRETLS` (RFC 8689); written only under TLS. Default off.
    pub requiretls: bool,
    /// `MT-PRIORITY` (RFC 6710). Default off.
    pub mt_priority: bool,
    /// `FUTURERELEASE max-interval max-datetime` (RFC 4865). Default off.
    pub future_release: Option<u64>,
    /// `DELIVERBY [min]` (RFC 2852). Default off.
    pub deliver_by: Option<u64>,
    /// `VRFY` keyword. Default off.
    pub vrfy: bool,
    /// `HELP` keyword. Default off.
    pub help: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self {
            pipelining: true,
            size: true,
            eightbitmime: true,
            smtputf8: true,
            chunking: true,
            binarymime: false,
            dsn: true,
            enhanced_status_codes: true,
            starttls: false,
            auth: AuthMechanisms::none(),
            requiretls: false,
            mt_priority: false,
            future_release: None,
            deliver_by: None,
            vrfy: false,
            help: false,
        }
    }
}

// ---- temporary stub, replaced by the real writer (wip-sasl) ----
impl Capabilities {
    /// stub
    pub fn write_ehlo(
        &self,
        host: &str,
        greeting: &str,
        size_limit: Option<u64>,
        tls_active: bool,
        out: &mut [u8],
    ) -> Result<usize, crate::reply::BufferTooSmall> {
        let _ = (greeting, size_limit, tls_active);
        crate::reply::Reply::new(250, None, host).write(false, out)
    }
}
