//! Paths (RFC 5321 §4.1.2): `<local@domain>`, the null path `<>`, `<postmaster>`, address
//! literals, source routes (accepted and ignored), UTF-8 per RFC 6531, limits 64/255/256.

use core::net::{Ipv4Addr, Ipv6Addr};

/// A domain or an address literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Domain<'a> {
    /// A domain name as written (may hold U-labels when UTF-8).
    Name(&'a str),
    /// `[192.0.2.1]`
    Ipv4(Ipv4Addr),
    /// `[IPv6:2001:db8::1]`
    Ipv6(Ipv6Addr),
    /// `[tag:content]`, a General-address-literal.
    General {
        /// Standardized-tag.
        tag: &'a str,
        /// dcontent.
        content: &'a str,
    },
}

/// `local-part@domain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mailbox<'a> {
    /// The local part as written: a dot-string, or a quoted-string with its quotes.
    pub local_part: &'a str,
    /// The domain or address literal.
    pub domain: Domain<'a>,
    /// The domain part as written (after `@`).
    pub domain_raw: &'a str,
}

/// MAIL FROM path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReversePath<'a> {
    /// `<>`: the null reverse path (bounces).
    Null,
    /// A mailbox.
    Mailbox(Mailbox<'a>),
}

/// RCPT TO path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForwardPath<'a> {
    /// `<postmaster>` without a domain (RFC 5321 §4.1.1.3).
    Postmaster,
    /// A mailbox.
    Mailbox(Mailbox<'a>),
}

/// Why a path did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathError {
    /// Not a path.
    Syntax,
    /// Local part longer than 64 octets.
    LocalPartTooLong,
    /// Domain longer than 255 octets.
    DomainTooLong,
    /// Path longer than 256 octets.
    PathTooLong,
}

impl Mailbox<'_> {
    /// Whether this address needs SMTPUTF8 (it has non-ASCII octets).
    pub fn needs_smtputf8(&self) -> bool {
        !self.local_part.is_ascii() || !self.domain_raw.is_ascii()
    }
}

impl core::fmt::Display for Mailbox<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}@{}", self.local_part, self.domain_raw)
    }
}

/// Parses `<...>` at the start of `input` as a reverse path; returns it and the bytes consumed.
pub fn parse_reverse_path(input: &[u8]) -> Result<(ReversePath<'_>, usize), PathError> {
    let _ = input;
    Err(PathError::Syntax) // helper: implement
}

/// Parses `<...>` at the start of `input` as a forward path; returns it and the bytes consumed.
pub fn parse_forward_path(input: &[u8]) -> Result<(ForwardPath<'_>, usize), PathError> {
    let _ = input;
    Err(PathError::Syntax) // helper: implement
}
