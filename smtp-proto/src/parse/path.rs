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

/// Builds a 256-entry byte-class table from inclusive ranges (httparse style: one lookup per
/// byte on the hot path).
pub(crate) const fn byte_class(ranges: &[(u8, u8)]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut r = 0;
    while r < ranges.len() {
        let (lo, hi) = ranges[r];
        let mut c = lo as usize;
        while c <= hi as usize {
            t[c] = true;
            c += 1;
        }
        r += 1;
    }
    t
}

/// Characters of an atom in a dot-string local part:
///
/// ```text
/// atext = ALPHA / DIGIT /    ; RFC 5322 §3.2.3
///         "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "/" /
///         "=" / "?" / "^" / "_" / "`" / "{" / "|" / "}" / "~"
/// atext =/ UTF8-non-ascii    ; RFC 6531 §3.3
/// ```
///
/// The input is always a `str`, so a non-ASCII octet is part of a well-formed UTF-8 character.
pub(crate) static ATEXT: [bool; 256] = byte_class(&[
    (b'A', b'Z'),
    (b'a', b'z'),
    (b'0', b'9'),
    (b'!', b'!'),
    (b'#', b'\''),
    (b'*', b'+'),
    (b'-', b'-'),
    (b'/', b'/'),
    (b'=', b'='),
    (b'?', b'?'),
    (b'^', b'~'),
    (0x80, 0xFF),
]);

/// Characters of a quoted-string local part, outside quoted pairs:
///
/// ```text
/// qtextSMTP  = %d32-33 / %d35-91 / %d93-126   ; RFC 5321 §4.1.2
/// qtextSMTP =/ UTF8-non-ascii                  ; RFC 6531 §3.3
/// ```
static QTEXT: [bool; 256] = byte_class(&[(32, 33), (35, 91), (93, 126), (0x80, 0xFF)]);

/// Characters of a domain label other than the hyphen:
///
/// ```text
/// sub-domain = Let-dig [Ldh-str]               ; RFC 5321 §4.1.2
/// Let-dig    = ALPHA / DIGIT
/// Ldh-str    = *( ALPHA / DIGIT / "-" ) Let-dig
/// sub-domain =/ U-label                        ; RFC 6531 §3.3 (any UTF-8 non-ASCII here)
/// ```
static LET_DIG: [bool; 256] = byte_class(&[(b'A', b'Z'), (b'a', b'z'), (b'0', b'9'), (0x80, 0xFF)]);

/// `"-"`, for runs of hyphens inside a label.
static HYPHEN: [bool; 256] = byte_class(&[(b'-', b'-')]);

/// Characters inside an address literal's brackets (including the tag and its colon):
///
/// ```text
/// dcontent = %d33-90 / %d94-126   ; RFC 5321 §4.1.3: printable US-ASCII excl. "[", "\", "]"
/// ```
static DCONTENT: [bool; 256] = byte_class(&[(33, 90), (94, 126)]);

/// The index of the first byte at or after `i` that is not in `class` (or `b.len()`).
#[inline(always)]
pub(crate) fn span(b: &[u8], i: usize, class: &[bool; 256]) -> usize {
    match b.get(i..) {
        Some(rest) => i + rest.iter().position(|&c| !class[c as usize]).unwrap_or(rest.len()),
        None => i,
    }
}

/// Maximum local-part length in octets (RFC 5321 §4.5.3.1.1).
pub const MAX_LOCAL_PART: usize = 64;
/// Maximum domain length in octets (RFC 5321 §4.5.3.1.2).
pub const MAX_DOMAIN: usize = 255;
/// Maximum path length in octets, including `<` and `>` (RFC 5321 §4.5.3.1.3).
pub const MAX_PATH: usize = 256;

/// The longest valid-UTF-8 prefix of `input` as a `str` (the parsers stop at the first byte the
/// grammar does not allow, so a valid prefix is all they can use).
fn utf8_prefix(input: &[u8]) -> &str {
    match core::str::from_utf8(input) {
        Ok(s) => s,
        Err(e) => input.get(..e.valid_up_to()).and_then(|p| core::str::from_utf8(p).ok()).unwrap_or(""),
    }
}

/// End of a `Dot-string` starting at `i`: `Atom *("." Atom)`, `Atom = 1*atext`.
#[inline(always)]
fn dot_string_end(b: &[u8], mut i: usize) -> Result<usize, PathError> {
    loop {
        let atom = i;
        i = span(b, i, &ATEXT);
        if i == atom {
            return Err(PathError::Syntax);
        }
        if b.get(i) != Some(&b'.') {
            return Ok(i);
        }
        i += 1;
    }
}

/// End of a `Quoted-string` whose opening quote is at `i`:
/// `DQUOTE *(qtextSMTP / quoted-pairSMTP) DQUOTE`, `quoted-pairSMTP = %d92 %d32-126`.
fn quoted_string_end(b: &[u8], mut i: usize) -> Result<usize, PathError> {
    i += 1;
    loop {
        match b.get(i) {
            Some(b'"') => return Ok(i + 1),
            Some(b'\\') => match b.get(i + 1) {
                Some(32..=126) => i += 2,
                _ => return Err(PathError::Syntax),
            },
            Some(&c) if QTEXT[c as usize] => i += 1,
            _ => return Err(PathError::Syntax),
        }
    }
}

/// End of a domain name starting at `i`: `sub-domain *("." sub-domain)`.
#[inline(always)]
fn domain_name_end(b: &[u8], mut i: usize) -> Result<usize, PathError> {
    loop {
        // One label: Let-dig, then ALPHA / DIGIT / "-", ending with a Let-dig.
        match b.get(i) {
            Some(&c) if LET_DIG[c as usize] => i += 1,
            _ => return Err(PathError::Syntax),
        }
        // Runs of Let-dig joined by hyphens; the label may not end with one.
        loop {
            i = span(b, i, &LET_DIG);
            if b.get(i) != Some(&b'-') {
                break;
            }
            i = span(b, i, &HYPHEN);
            match b.get(i) {
                Some(&c) if LET_DIG[c as usize] => {}
                _ => return Err(PathError::Syntax),
            }
        }
        if b.get(i) != Some(&b'.') {
            return Ok(i);
        }
        i += 1;
    }
}

/// Whether `s` is an `Ldh-str` (`*( ALPHA / DIGIT / "-" ) Let-dig`), ASCII only.
fn is_ldh_str(s: &str) -> bool {
    let b = s.as_bytes();
    matches!(b.last(), Some(c) if c.is_ascii_alphanumeric())
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
}

/// The inside of `[...]`:
///
/// ```text
/// address-literal  = "[" ( IPv4-address-literal / IPv6-address-literal /
///                          General-address-literal ) "]"
/// IPv4-address-literal  = Snum 3("."  Snum)
/// IPv6-address-literal  = "IPv6:" IPv6-addr
/// General-address-literal  = Standardized-tag ":" 1*dcontent
/// Standardized-tag  = Ldh-str
/// ```
fn address_literal(inner: &str) -> Result<Domain<'_>, PathError> {
    if let (Some(tag), Some(addr)) = (inner.get(..5), inner.get(5..)) {
        if tag.eq_ignore_ascii_case("IPv6:") {
            return addr.parse::<Ipv6Addr>().map(Domain::Ipv6).map_err(|_| PathError::Syntax);
        }
    }
    if !inner.is_empty() && inner.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
        return inner.parse::<Ipv4Addr>().map(Domain::Ipv4).map_err(|_| PathError::Syntax);
    }
    match inner.split_once(':') {
        Some((tag, content)) if is_ldh_str(tag) && !content.is_empty() => Ok(Domain::General { tag, content }),
        _ => Err(PathError::Syntax),
    }
}

/// Parses a domain or address literal starting at `i`; returns it and where it ends.
/// Applies the 255-octet limit.
#[inline(always)]
fn domain_at(s: &str, i: usize) -> Result<(Domain<'_>, usize), PathError> {
    let b = s.as_bytes();
    if b.get(i) == Some(&b'[') {
        let j = span(b, i + 1, &DCONTENT);
        if b.get(j) != Some(&b']') {
            return Err(PathError::Syntax);
        }
        let end = j + 1;
        if end - i > MAX_DOMAIN {
            return Err(PathError::DomainTooLong);
        }
        let inner = s.get(i + 1..j).ok_or(PathError::Syntax)?;
        Ok((address_literal(inner)?, end))
    } else {
        let end = domain_name_end(b, i)?;
        if end - i > MAX_DOMAIN {
            return Err(PathError::DomainTooLong);
        }
        Ok((Domain::Name(s.get(i..end).ok_or(PathError::Syntax)?), end))
    }
}

/// Parses `Local-part "@" ( Domain / address-literal )` starting at `i`; returns the mailbox and
/// where it ends. Applies the 64- and 255-octet limits.
#[inline(always)]
fn mailbox_at(s: &str, i: usize) -> Result<(Mailbox<'_>, usize), PathError> {
    let b = s.as_bytes();
    let local_end = if b.get(i) == Some(&b'"') { quoted_string_end(b, i)? } else { dot_string_end(b, i)? };
    if local_end - i > MAX_LOCAL_PART {
        return Err(PathError::LocalPartTooLong);
    }
    if b.get(local_end) != Some(&b'@') {
        return Err(PathError::Syntax);
    }
    let (domain, end) = domain_at(s, local_end + 1)?;
    Ok((
        Mailbox {
            local_part: s.get(i..local_end).ok_or(PathError::Syntax)?,
            domain,
            domain_raw: s.get(local_end + 1..end).ok_or(PathError::Syntax)?,
        },
        end,
    ))
}

/// What is between `<` and `>`.
enum Inner<'a> {
    Null,
    Postmaster,
    Mailbox(Mailbox<'a>),
}

/// ```text
/// Path   = "<" [ A-d-l ":" ] Mailbox ">"
/// A-d-l  = At-domain *( "," At-domain )   ; source route: parsed and ignored
/// At-domain = "@" Domain
/// ```
/// plus `<>` and `<Postmaster>` (the callers decide which they allow).
#[inline(always)]
fn path(s: &str) -> Result<(Inner<'_>, usize), PathError> {
    let b = s.as_bytes();
    if b.first() != Some(&b'<') {
        return Err(PathError::Syntax);
    }
    let mut i = 1;
    match b.get(1) {
        Some(b'>') => return Ok((Inner::Null, 2)),
        Some(b'@') => loop {
            // Source route.
            let (_, end) = domain_at(s, i + 1)?;
            i = end;
            match b.get(i) {
                Some(b',') if b.get(i + 1) == Some(&b'@') => i += 1,
                Some(b':') => {
                    i += 1;
                    break;
                }
                _ => return Err(PathError::Syntax),
            }
        },
        Some(b'p' | b'P') => {
            if let Some(word) = b.get(1..11) {
                if word.eq_ignore_ascii_case(b"postmaster") && b.get(11) == Some(&b'>') {
                    return Ok((Inner::Postmaster, 12));
                }
            }
        }
        _ => {}
    }
    let (mailbox, end) = mailbox_at(s, i)?;
    if b.get(end) != Some(&b'>') {
        return Err(PathError::Syntax);
    }
    if end + 1 > MAX_PATH {
        return Err(PathError::PathTooLong);
    }
    Ok((Inner::Mailbox(mailbox), end + 1))
}

/// [`parse_reverse_path`] on a `str`.
#[inline(always)]
pub(crate) fn reverse_path_str(s: &str) -> Result<(ReversePath<'_>, usize), PathError> {
    match path(s)? {
        (Inner::Null, n) => Ok((ReversePath::Null, n)),
        (Inner::Postmaster, _) => Err(PathError::Syntax),
        (Inner::Mailbox(m), n) => Ok((ReversePath::Mailbox(m), n)),
    }
}

/// [`parse_forward_path`] on a `str`.
#[inline(always)]
pub(crate) fn forward_path_str(s: &str) -> Result<(ForwardPath<'_>, usize), PathError> {
    match path(s)? {
        (Inner::Null, _) => Err(PathError::Syntax),
        (Inner::Postmaster, n) => Ok((ForwardPath::Postmaster, n)),
        (Inner::Mailbox(m), n) => Ok((ForwardPath::Mailbox(m), n)),
    }
}

/// Parses `<...>` at the start of `input` as a reverse path; returns it and the bytes consumed.
///
/// Accepts `<>`, source routes (ignored) and UTF-8 addresses; `<postmaster>` without a domain
/// is not a valid reverse path.
pub fn parse_reverse_path(input: &[u8]) -> Result<(ReversePath<'_>, usize), PathError> {
    reverse_path_str(utf8_prefix(input))
}

/// Parses `<...>` at the start of `input` as a forward path; returns it and the bytes consumed.
///
/// Accepts `<postmaster>` (any case) as [`ForwardPath::Postmaster`], source routes (ignored)
/// and UTF-8 addresses; `<>` is a syntax error.
pub fn parse_forward_path(input: &[u8]) -> Result<(ForwardPath<'_>, usize), PathError> {
    forward_path_str(utf8_prefix(input))
}

/// Parses a bare `local-part@domain` (no angle brackets); all of `input` must be the mailbox.
/// The 64/255-octet limits apply, and the 254-octet limit that a 256-octet path implies.
pub fn parse_mailbox(input: &[u8]) -> Result<Mailbox<'_>, PathError> {
    let s = core::str::from_utf8(input).map_err(|_| PathError::Syntax)?;
    let (mailbox, end) = mailbox_at(s, 0)?;
    if end != s.len() {
        return Err(PathError::Syntax);
    }
    if end + 2 > MAX_PATH {
        return Err(PathError::PathTooLong);
    }
    Ok(mailbox)
}

/// Parses a domain name or an address literal (`[192.0.2.1]`, `[IPv6:...]`, `[tag:content]`);
/// all of `input` must be the domain. Handy for checking the EHLO argument.
pub fn parse_domain(input: &[u8]) -> Result<Domain<'_>, PathError> {
    let s = core::str::from_utf8(input).map_err(|_| PathError::Syntax)?;
    let (domain, end) = domain_at(s, 0)?;
    if end != s.len() {
        return Err(PathError::Syntax);
    }
    Ok(domain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::String;

    fn mb(s: &str) -> Mailbox<'_> {
        match parse_reverse_path(s.as_bytes()) {
            Ok((ReversePath::Mailbox(m), n)) => {
                assert_eq!(n, s.len());
                m
            }
            other => panic!("{s}: {other:?}"),
        }
    }

    fn err(s: &str) -> PathError {
        parse_reverse_path(s.as_bytes()).unwrap_err()
    }

    #[test]
    fn simple() {
        let m = mb("<a@b.example>");
        assert_eq!(m.local_part, "a");
        assert_eq!(m.domain, Domain::Name("b.example"));
        assert_eq!(m.domain_raw, "b.example");
        assert!(!m.needs_smtputf8());
        assert_eq!(parse_reverse_path(b"<>"), Ok((ReversePath::Null, 2)));
        assert_eq!(parse_reverse_path(b"<> SIZE=1"), Ok((ReversePath::Null, 2)));
        assert_eq!(parse_forward_path(b"<>"), Err(PathError::Syntax));
        let (p, n) = parse_reverse_path(b"<a@b> SIZE=1").unwrap();
        assert_eq!(n, 5);
        assert!(matches!(p, ReversePath::Mailbox(_)));
    }

    #[test]
    fn postmaster() {
        assert_eq!(parse_forward_path(b"<postmaster>"), Ok((ForwardPath::Postmaster, 12)));
        assert_eq!(parse_forward_path(b"<PostMaster>"), Ok((ForwardPath::Postmaster, 12)));
        assert_eq!(parse_reverse_path(b"<postmaster>"), Err(PathError::Syntax));
        match parse_forward_path(b"<postmaster@x.example>") {
            Ok((ForwardPath::Mailbox(m), 22)) => assert_eq!(m.local_part, "postmaster"),
            other => panic!("{other:?}"),
        }
        assert!(parse_forward_path(b"<postmasterx>").is_err());
        assert!(parse_forward_path(b"<postmaster").is_err());
    }

    #[test]
    fn local_parts() {
        assert_eq!(mb("<a.b.c@x>").local_part, "a.b.c");
        assert_eq!(mb("<!#$%&'*+-/=?^_`{|}~@x>").local_part, "!#$%&'*+-/=?^_`{|}~");
        assert_eq!(mb("<\"a b\"@x>").local_part, "\"a b\"");
        assert_eq!(mb("<\"a\\\"b\\\\\"@x>").local_part, "\"a\\\"b\\\\\"");
        assert_eq!(mb("<\"\"@x>").local_part, "\"\"");
        assert_eq!(mb("<\"<>@\"@x>").local_part, "\"<>@\"");
        assert_eq!(err("<.a@x>"), PathError::Syntax);
        assert_eq!(err("<a.@x>"), PathError::Syntax);
        assert_eq!(err("<a..b@x>"), PathError::Syntax);
        assert_eq!(err("<a b@x>"), PathError::Syntax);
        assert_eq!(err("<\"a@x>"), PathError::Syntax);
        assert_eq!(err("<\"a\tb\"@x>"), PathError::Syntax);
        assert_eq!(err("<\"a\\\tb\"@x>"), PathError::Syntax);
        assert_eq!(err("<a@>"), PathError::Syntax);
        assert_eq!(err("<@x>"), PathError::Syntax);
        assert_eq!(err("<ab>"), PathError::Syntax);
        assert_eq!(err("<a(b)@x>"), PathError::Syntax);
    }

    #[test]
    fn utf8() {
        let m = mb("<jöe@exämple.test>");
        assert_eq!(m.local_part, "jöe");
        assert_eq!(m.domain, Domain::Name("exämple.test"));
        assert!(m.needs_smtputf8());
        assert_eq!(mb("<\"ü x\"@a>").local_part, "\"ü x\"");
        // Invalid UTF-8 is never accepted.
        assert!(parse_reverse_path(b"<j\xffe@x>").is_err());
        // A valid path followed by invalid bytes still parses.
        assert_eq!(parse_reverse_path(b"<a@b> \xff").map(|r| r.1), Ok(5));
    }

    #[test]
    fn domains() {
        assert_eq!(mb("<a@x-y.example>").domain, Domain::Name("x-y.example"));
        assert_eq!(mb("<a@xn--bcher-kva.example>").domain, Domain::Name("xn--bcher-kva.example"));
        assert_eq!(mb("<a@1.2>").domain, Domain::Name("1.2"));
        for bad in ["<a@-x>", "<a@x->", "<a@x.>", "<a@.x>", "<a@x..y>", "<a@x_y>", "<a@x y>"] {
            assert_eq!(err(bad), PathError::Syntax, "{bad}");
        }
    }

    #[test]
    fn literals() {
        assert_eq!(mb("<a@[192.0.2.1]>").domain, Domain::Ipv4(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(mb("<a@[192.0.2.1]>").domain_raw, "[192.0.2.1]");
        assert_eq!(mb("<a@[IPv6:2001:db8::1]>").domain, Domain::Ipv6("2001:db8::1".parse().unwrap()));
        assert_eq!(mb("<a@[ipv6:::ffff:192.0.2.1]>").domain, Domain::Ipv6("::ffff:192.0.2.1".parse().unwrap()));
        assert_eq!(mb("<a@[x-tag:any!thing]>").domain, Domain::General { tag: "x-tag", content: "any!thing" });
        for bad in [
            "<a@[]>",
            "<a@[1.2.3]>",
            "<a@[1.2.3.256]>",
            "<a@[1.2.3.4.5]>",
            "<a@[IPv6:1.2.3.4]>",
            "<a@[IPv6:zz::1]>",
            "<a@[IPv6:]>",
            "<a@[tag:]>",
            "<a@[tag-:x]>",
            "<a@[:x]>",
            "<a@[notag]>",
            "<a@[1.2.3.4>",
            "<a@[a b:c]>",
            "<a@[a:b\\c]>",
        ] {
            assert_eq!(err(bad), PathError::Syntax, "{bad}");
        }
        assert_eq!(parse_domain(b"[192.0.2.1]"), Ok(Domain::Ipv4(Ipv4Addr::new(192, 0, 2, 1))));
        assert_eq!(parse_domain(b"mx.example"), Ok(Domain::Name("mx.example")));
        assert_eq!(parse_domain(b"mx.example "), Err(PathError::Syntax));
        assert_eq!(parse_domain(b""), Err(PathError::Syntax));
    }

    #[test]
    fn source_routes() {
        let m = mb("<@a.example,@b.example:user@c.example>");
        assert_eq!(m.local_part, "user");
        assert_eq!(m.domain_raw, "c.example");
        assert_eq!(mb("<@[192.0.2.1]:u@c>").local_part, "u");
        for bad in ["<@a.example:>", "<@:u@c>", "<@a,b:u@c>", "<@a.example u@c>", "<@a,@:u@c>", "<@a.example,:u@c>"] {
            assert_eq!(err(bad), PathError::Syntax, "{bad}");
        }
    }

    #[test]
    fn limits() {
        let l64 = "l".repeat(64);
        assert_eq!(mb(&std::format!("<{l64}@x>")).local_part, l64);
        assert_eq!(err(&std::format!("<{l64}l@x>")), PathError::LocalPartTooLong);
        let q = std::format!("\"{}\"", "q".repeat(62));
        assert_eq!(mb(&std::format!("<{q}@x>")).local_part, q);
        assert_eq!(err(&std::format!("<\"{}\"@x>", "q".repeat(63))), PathError::LocalPartTooLong);

        let d255 = domain_of(255);
        let d256 = domain_of(256);
        assert_eq!(parse_domain(d255.as_bytes()), Ok(Domain::Name(&d255)));
        assert_eq!(parse_domain(d256.as_bytes()), Err(PathError::DomainTooLong));
        assert_eq!(err(&std::format!("<a@{d256}>")), PathError::DomainTooLong);

        // Path: "<" + 64 + "@" + 189 + ">" = 256; one more octet is too long.
        let ok = std::format!("<{l64}@{}>", domain_of(189));
        assert_eq!(ok.len(), 256);
        assert_eq!(mb(&ok).local_part, l64);
        let long = std::format!("<{l64}@{}>", domain_of(190));
        assert_eq!(err(&long), PathError::PathTooLong);
        // a source route counts towards the path
        let routed = std::format!("<@{}:{l64}@x>", domain_of(187));
        assert_eq!(routed.len(), 257);
        assert_eq!(err(&routed), PathError::PathTooLong);
    }

    /// A valid domain name of exactly `n` octets (labels of at most 63).
    fn domain_of(n: usize) -> String {
        let mut s = String::new();
        loop {
            let rem = n - s.len();
            let mut want = rem.min(63);
            if rem > want && rem - want < 2 {
                want -= 1;
            }
            for _ in 0..want {
                s.push('d');
            }
            if s.len() == n {
                return s;
            }
            s.push('.');
        }
    }

    #[test]
    fn mailbox_and_domain() {
        let m = parse_mailbox(b"a@b.example").unwrap();
        assert_eq!(m.local_part, "a");
        assert_eq!(std::format!("{m}"), "a@b.example");
        assert_eq!(parse_mailbox(b"<a@b>"), Err(PathError::Syntax));
        assert_eq!(parse_mailbox(b"a@b "), Err(PathError::Syntax));
        assert_eq!(parse_mailbox(b"a@b\xff"), Err(PathError::Syntax));
        assert_eq!(parse_mailbox(b"ab"), Err(PathError::Syntax));
    }

    #[test]
    fn junk_does_not_panic() {
        for s in ["", "<", "<@", "<@,", "<\"", "<\"\\", "<a@[", "<a@[IPv6:", "<p", "<postmaste", "<a@b"] {
            assert!(parse_reverse_path(s.as_bytes()).is_err(), "{s}");
            assert!(parse_forward_path(s.as_bytes()).is_err(), "{s}");
        }
    }
}
