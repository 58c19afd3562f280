//! The PROXY protocol, versions 1 and 2 (HAProxy's `proxy-protocol.txt`): the header a proxy
//! in front of the server sends as the very first bytes of a connection to say who the client
//! really is.
//!
//! [`parse`] looks at the start of the input and answers with the header and the bytes it spans
//! ([`Status::Complete`]), [`Status::Partial`] while the input is a strict prefix of a header
//! that can still be valid, or a [`ProxyError`] as soon as the bytes show that it is not one.
//! Fed byte by byte, a valid header gives `Partial` at every prefix and `Complete` exactly when
//! its last byte arrives; nothing after the header is looked at (it belongs to the next
//! protocol, SMTP here). No copying, no heap: the [`Header`] borrows its TLVs from the input.
//!
//! ```text
//! v1: "PROXY" SP ( "TCP4" | "TCP6" ) SP src-addr SP dst-addr SP src-port SP dst-port CRLF
//!   / "PROXY" SP "UNKNOWN" [ SP <anything up to the CRLF> ] CRLF             ; ≤ 107 octets
//! v2: sig(12) = 0D 0A 0D 0A 00 0D 0A 51 55 49 54 0A
//!     ver_cmd(1) = 0x20 LOCAL | 0x21 PROXY      fam(1) = 0x00 | 0x11 | 0x21 | 0x31 | ...
//!     len(2, big-endian)    addresses (12 for TCP4, 36 for TCP6, 216 for UNIX)    TLVs
//! ```
//!
//! Validation is strict (the spec: "any sequence which does not exactly match the protocol must
//! be discarded and cause the receiver to abort the connection"):
//! - **v1**: exactly one space between fields; the protocol is `TCP4`, `TCP6` or `UNKNOWN`
//!   (case-sensitive); IPv4 addresses as four decimal numbers 0..=255 without leading zeros;
//!   IPv6 addresses of the stated family only; ports 0..=65535 in plain decimal (no sign, no
//!   leading zero); only printable US-ASCII; the line ends with CRLF (a bare CR or LF is an
//!   error) within [`V1_MAX_LEN`] octets. After `UNKNOWN` the rest of the line is ignored.
//! - **v2**: the signature; version 2; command LOCAL or PROXY; one of the family/transport
//!   bytes the spec lists; a length that holds the addresses of the family; TLVs that each fit
//!   in the header; a `PP2_TYPE_CRC32C` TLV, when present, that matches; the whole header
//!   within [`MAX_LEN`] octets (a bound of ours: the spec allows 16 + 65,535). LOCAL (a
//!   health check by the proxy itself) ignores the family and the address block. PROXY over
//!   UNSPEC or a UNIX stream carries no IP address ([`Origin::Unknown`]); PROXY over a datagram
//!   transport is refused (SMTP runs over a stream).
//!
//! Accept a header **only from configured proxy addresses and only as the first bytes** of a
//! connection: from anyone else it would let a client pick the address it is seen with. The
//! caller also bounds the wait for it with a deadline (time is not the core's business).
//!
//! ```
//! use smtp_proto::parse::Status;
//! use smtp_proto::proxy::{parse, Origin, Version};
//!
//! let input = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\r\nEHLO client.example\r\n";
//! let Ok(Status::Complete((len, header))) = parse(input) else { panic!("complete") };
//! assert_eq!(&input[len..], b"EHLO client.example\r\n"); // SMTP from here on
//! assert_eq!(header.version, Version::V1);
//! assert_eq!(header.source(), Some("192.0.2.7:56324".parse().unwrap()));
//! assert!(matches!(header.origin, Origin::Tcp { .. }));
//! assert_eq!(parse(&input[..20]), Ok(Status::Partial));
//! assert!(parse(b"EHLO client.example\r\n").is_err());
//! ```

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::parse::Status;

/// The longest v1 line, CRLF included (`PROXY UNKNOWN` with two full IPv6 addresses and
/// ports).
pub const V1_MAX_LEN: usize = 107;

/// The 12-byte signature that starts a v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The fixed part of a v2 header: signature, version/command, family, length.
pub const V2_FIXED_LEN: usize = 16;

/// The longest header accepted, v2 TLVs included. A buffer of this size always holds a whole
/// header or shows the error.
pub const MAX_LEN: usize = 2048;

/// v2 TLV types (`PP2_TYPE_*`) registered by the spec.
pub mod tlv {
    /// Application-Layer Protocol Negotiation.
    pub const ALPN: u8 = 0x01;
    /// The host name the client asked for (TLS SNI).
    pub const AUTHORITY: u8 = 0x02;
    /// CRC32c of the header (checked by [`super::parse`]).
    pub const CRC32C: u8 = 0x03;
    /// Padding, to be ignored.
    pub const NOOP: u8 = 0x04;
    /// An opaque connection identifier of up to 128 octets.
    pub const UNIQUE_ID: u8 = 0x05;
    /// TLS details, with sub-TLVs.
    pub const SSL: u8 = 0x20;
    /// The network namespace's name.
    pub const NETNS: u8 = 0x30;
}

/// Which version of the protocol the header used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Version {
    /// The text line.
    V1,
    /// The binary header.
    V2,
}

/// Where the connection really comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Origin {
    /// v2 LOCAL: the proxy opened the connection itself (a health check). Keep the
    /// connection's own addresses.
    Local,
    /// v1 `UNKNOWN`, or v2 PROXY over UNSPEC or a UNIX socket: relayed, but with no IP address
    /// to tell. Keep the connection's own addresses.
    Unknown,
    /// A relayed TCP connection (both addresses of the same family).
    Tcp {
        /// The client: the address to see the session as coming from.
        source: SocketAddr,
        /// The address the client connected to (on the proxy).
        destination: SocketAddr,
    },
}

/// A complete, valid header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header<'a> {
    /// v1 or v2.
    pub version: Version,
    /// The original connection.
    pub origin: Origin,
    /// The v2 TLVs after the addresses (validated), empty for v1, LOCAL and UNSPEC.
    tlvs: &'a [u8],
}

impl<'a> Header<'a> {
    /// The client's address, when the header carries one.
    pub fn source(&self) -> Option<SocketAddr> {
        match self.origin {
            Origin::Tcp { source, .. } => Some(source),
            _ => None,
        }
    }

    /// The address the client connected to, when the header carries one.
    pub fn destination(&self) -> Option<SocketAddr> {
        match self.origin {
            Origin::Tcp { destination, .. } => Some(destination),
            _ => None,
        }
    }

    /// The v2 TLVs (type, value), in order; none for v1.
    pub fn tlvs(&self) -> Tlvs<'a> {
        Tlvs { rest: self.tlvs }
    }
}

/// One v2 TLV: a type (see [`tlv`]) and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tlv<'a> {
    /// The `PP2_TYPE_*`.
    pub kind: u8,
    /// The value, borrowed from the input.
    pub value: &'a [u8],
}

/// Iterator over the TLVs of a [`Header`].
#[derive(Debug, Clone)]
pub struct Tlvs<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Tlvs<'a> {
    type Item = Tlv<'a>;

    fn next(&mut self) -> Option<Tlv<'a>> {
        let (kind, value, rest) = split_tlv(self.rest)?;
        self.rest = rest;
        Some(Tlv { kind, value })
    }
}

/// Input that is not a valid PROXY header. The connection must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProxyError {
    /// Neither `PROXY` (v1) nor the v2 signature.
    NotProxy,
    /// v1: wrong spacing or field count, a bare CR or LF, a byte that is not printable
    /// US-ASCII.
    Syntax,
    /// v1: a protocol other than `TCP4`, `TCP6` or `UNKNOWN`.
    Protocol,
    /// v1: an address that is not in canonical form or not of the stated family.
    Address,
    /// v1: a port that is not 0..=65535 in plain decimal.
    Port,
    /// v1: no CRLF within [`V1_MAX_LEN`] octets.
    LineTooLong,
    /// v2: a version other than 2.
    Version,
    /// v2: a command other than LOCAL or PROXY.
    Command,
    /// v2: a family/transport byte not in the spec, or a datagram transport.
    Family,
    /// v2: a length too short for the addresses of the family.
    Length,
    /// v2: a header longer than [`MAX_LEN`].
    TooLong,
    /// v2: a TLV that overruns the header.
    Tlv,
    /// v2: the CRC32c TLV does not match the header.
    Checksum,
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProxyError::NotProxy => "not a PROXY protocol header",
            ProxyError::Syntax => "PROXY v1 line: bad syntax",
            ProxyError::Protocol => "PROXY v1 line: unknown protocol",
            ProxyError::Address => "PROXY v1 line: bad address",
            ProxyError::Port => "PROXY v1 line: bad port",
            ProxyError::LineTooLong => "PROXY v1 line: no CRLF within 107 octets",
            ProxyError::Version => "PROXY v2 header: version is not 2",
            ProxyError::Command => "PROXY v2 header: unknown command",
            ProxyError::Family => "PROXY v2 header: unsupported family or transport",
            ProxyError::Length => "PROXY v2 header: length too short for the addresses",
            ProxyError::TooLong => "PROXY v2 header: too long",
            ProxyError::Tlv => "PROXY v2 header: malformed TLV",
            ProxyError::Checksum => "PROXY v2 header: CRC32c mismatch",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ProxyError {}

/// Parses a PROXY header (v1 or v2) at the start of `input`: `Complete((bytes spanned,
/// header))`, or `Partial` while `input` is a strict prefix of a header that can still be valid.
/// See the [module docs](self).
///
/// # Errors
/// Any [`ProxyError`], as soon as the input shows it.
pub fn parse(input: &[u8]) -> Result<Status<(usize, Header<'_>)>, ProxyError> {
    match input.first() {
        None => Ok(Status::Partial),
        Some(b'P') => parse_v1(input),
        Some(b'\r') => parse_v2(input),
        Some(_) => Err(ProxyError::NotProxy),
    }
}

/// Whether the known bytes of `input` agree with `expected` (a prefix of either may be there).
fn agrees(input: &[u8], expected: &[u8]) -> bool {
    let n = input.len().min(expected.len());
    input[..n] == expected[..n]
}

fn parse_v1(input: &[u8]) -> Result<Status<(usize, Header<'_>)>, ProxyError> {
    if !agrees(input, b"PROXY") {
        return Err(ProxyError::NotProxy);
    }
    if !agrees(input, b"PROXY ") {
        return Err(ProxyError::Syntax);
    }
    let window = &input[..input.len().min(V1_MAX_LEN)];
    for (i, &c) in window.iter().enumerate() {
        match c {
            b'\r' => match window.get(i + 1) {
                Some(b'\n') => return v1_line(&window[..i]).map(|h| Status::Complete((i + 2, h))),
                Some(_) => return Err(ProxyError::Syntax),
                None => break,
            },
            b'\n' => return Err(ProxyError::Syntax),
            0x20..=0x7e => {}
            _ => return Err(ProxyError::Syntax),
        }
    }
    if input.len() >= V1_MAX_LEN {
        Err(ProxyError::LineTooLong)
    } else {
        Ok(Status::Partial)
    }
}

/// A whole v1 line without its CRLF (printable ASCII, starting with `PROXY `).
fn v1_line(line: &[u8]) -> Result<Header<'static>, ProxyError> {
    let mut fields = line[6..].split(|&c| c == b' ');
    let v4 = match fields.next().unwrap_or_default() {
        // "The receiver must ignore anything presented before the CRLF is found."
        b"UNKNOWN" => return Ok(Header { version: Version::V1, origin: Origin::Unknown, tlvs: &[] }),
        b"TCP4" => true,
        b"TCP6" => false,
        b"" => return Err(ProxyError::Syntax),
        _ => return Err(ProxyError::Protocol),
    };
    let mut f = [&[][..]; 4];
    for slot in &mut f {
        *slot = fields.next().filter(|s| !s.is_empty()).ok_or(ProxyError::Syntax)?;
    }
    if fields.next().is_some() {
        return Err(ProxyError::Syntax);
    }
    let address = |s: &[u8]| -> Result<IpAddr, ProxyError> {
        let ip = if v4 { ipv4(s).map(IpAddr::V4) } else { ipv6(s).map(IpAddr::V6) };
        ip.ok_or(ProxyError::Address)
    };
    let port = |s: &[u8]| decimal(s).and_then(|p| u16::try_from(p).ok()).ok_or(ProxyError::Port);
    let (src, dst) = (address(f[0])?, address(f[1])?);
    let (sport, dport) = (port(f[2])?, port(f[3])?);
    let origin = Origin::Tcp { source: SocketAddr::new(src, sport), destination: SocketAddr::new(dst, dport) };
    Ok(Header { version: Version::V1, origin, tlvs: &[] })
}

/// 1 to 5 decimal digits, no leading zero (but `0` itself).
fn decimal(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 5 || (s.len() > 1 && s[0] == b'0') || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u32, |v, &c| v * 10 + u32::from(c - b'0')))
}

/// Exactly four decimal numbers 0..=255 without leading zeros, separated by single dots.
fn ipv4(s: &[u8]) -> Option<Ipv4Addr> {
    let mut parts = s.split(|&c| c == b'.');
    let mut octets = [0u8; 4];
    for o in &mut octets {
        *o = u8::try_from(decimal(parts.next()?)?).ok()?;
    }
    parts.next().is_none().then_some(Ipv4Addr::from(octets))
}

/// An IPv6 address: groups of 1 to 4 hex digits, one `::` at most; the dotted tail that
/// `inet_ntop` writes for IPv4-mapped addresses is accepted too.
fn ipv6(s: &[u8]) -> Option<Ipv6Addr> {
    if !s.iter().all(|c| c.is_ascii_hexdigit() || matches!(c, b':' | b'.')) {
        return None;
    }
    core::str::from_utf8(s).ok()?.parse().ok()
}

fn parse_v2(input: &[u8]) -> Result<Status<(usize, Header<'_>)>, ProxyError> {
    if !agrees(input, &V2_SIGNATURE) {
        return Err(ProxyError::NotProxy);
    }
    let local = match input.get(12) {
        None => return Ok(Status::Partial),
        Some(v) if v >> 4 != 2 => return Err(ProxyError::Version),
        Some(0x20) => true,
        Some(0x21) => false,
        Some(_) => return Err(ProxyError::Command),
    };
    let Some(&family) = input.get(13) else { return Ok(Status::Partial) };
    // The address block of each family/transport the spec lists; `None`: refused.
    let addresses = match family {
        0x00 => Some(0),
        0x11 => Some(12),
        0x21 => Some(36),
        0x31 => Some(216),
        // Datagrams are valid v2 but not an SMTP connection; LOCAL ignores the family.
        0x12 | 0x22 | 0x32 if local => Some(0),
        _ => None,
    }
    .ok_or(ProxyError::Family)?;
    let Some(&[hi, lo]) = input.get(14..16) else { return Ok(Status::Partial) };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    let total = V2_FIXED_LEN + len;
    if total > MAX_LEN {
        return Err(ProxyError::TooLong);
    }
    if !local && len < addresses {
        return Err(ProxyError::Length);
    }
    let Some(header) = input.get(..total) else { return Ok(Status::Partial) };
    let block = &header[V2_FIXED_LEN..];
    let done = |origin, tlvs| Ok(Status::Complete((total, Header { version: Version::V2, origin, tlvs })));
    if local {
        // "Discard the protocol block including the family which is ignored."
        return done(Origin::Local, &[]);
    }
    if family == 0x00 {
        // UNSPEC: the address block has no known layout; it is skipped whole.
        return done(Origin::Unknown, &[]);
    }
    let (addr, tlvs) = block.split_at(addresses);
    check_tlvs(header, tlvs)?;
    let origin = match *addr {
        [s0, s1, s2, s3, d0, d1, d2, d3, sp0, sp1, dp0, dp1] => Origin::Tcp {
            source: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(s0, s1, s2, s3)), u16::from_be_bytes([sp0, sp1])),
            destination: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(d0, d1, d2, d3)), u16::from_be_bytes([dp0, dp1])),
        },
        _ if family == 0x21 => {
            let ip = |at: usize| {
                let mut o = [0u8; 16];
                o.copy_from_slice(&addr[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(o))
            };
            let port = |at: usize| u16::from_be_bytes([addr[at], addr[at + 1]]);
            Origin::Tcp { source: SocketAddr::new(ip(0), port(32)), destination: SocketAddr::new(ip(16), port(34)) }
        }
        // A UNIX stream: no IP address to tell.
        _ => Origin::Unknown,
    };
    done(origin, tlvs)
}

/// Splits the first TLV off `b`: (type, value, rest), or `None` if it does not fit.
fn split_tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&[kind, hi, lo], rest) = b.split_first_chunk::<3>()?;
    let n = usize::from(u16::from_be_bytes([hi, lo]));
    (n <= rest.len()).then(|| (kind, &rest[..n], &rest[n..]))
}

/// Every TLV fits; a CRC32c TLV matches the whole `header` (its own value counted as zeros).
fn check_tlvs(header: &[u8], mut tlvs: &[u8]) -> Result<(), ProxyError> {
    while !tlvs.is_empty() {
        let (kind, value, rest) = split_tlv(tlvs).ok_or(ProxyError::Tlv)?;
        if kind == tlv::CRC32C {
            let Ok(&sent) = <&[u8; 4]>::try_from(value) else { return Err(ProxyError::Tlv) };
            let at = header.len() - rest.len() - 4;
            let zeros = [0u8; 4];
            let crc = crc32c(crc32c(crc32c(!0, &header[..at]), &zeros), &header[at + 4..]);
            if !crc != u32::from_be_bytes(sent) {
                return Err(ProxyError::Checksum);
            }
        }
        tlvs = rest;
    }
    Ok(())
}

/// CRC32c (Castagnoli, RFC 4960 Appendix B), bitwise: a header is checked once per
/// connection, so no table. Start with `!0`, finish with `!crc`.
fn crc32c(mut crc: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0x82F6_3B78 & (crc & 1).wrapping_neg());
        }
    }
    crc
}

/// Writes a v2 header for `origin` (no TLVs) into `out`: its length, or `None` when `out`
/// is too small or the two addresses of [`Origin::Tcp`] are of different families.
pub fn encode_v2(origin: &Origin, out: &mut [u8]) -> Option<usize> {
    let mut h = [0u8; V2_FIXED_LEN + 36];
    h[..12].copy_from_slice(&V2_SIGNATURE);
    let len = match *origin {
        Origin::Local => {
            h[12] = 0x20;
            0
        }
        Origin::Unknown => {
            h[12] = 0x21;
            0
        }
        Origin::Tcp { source, destination } => {
            h[12] = 0x21;
            let ports = |h: &mut [u8]| {
                h[..2].copy_from_slice(&source.port().to_be_bytes());
                h[2..4].copy_from_slice(&destination.port().to_be_bytes());
            };
            match (source.ip(), destination.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    h[13] = 0x11;
                    h[16..20].copy_from_slice(&s.octets());
                    h[20..24].copy_from_slice(&d.octets());
                    ports(&mut h[24..28]);
                    12
                }
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    h[13] = 0x21;
                    h[16..32].copy_from_slice(&s.octets());
                    h[32..48].copy_from_slice(&d.octets());
                    ports(&mut h[48..52]);
                    36
                }
                _ => return None,
            }
        }
    };
    h[14..16].copy_from_slice(&(len as u16).to_be_bytes());
    let total = V2_FIXED_LEN + len;
    out.get_mut(..total)?.copy_from_slice(&h[..total]);
    Some(total)
}

/// Writes a v1 line for `origin` into `out`: its length, or `None` when `out` is too small or
/// the two addresses of [`Origin::Tcp`] are of different families. [`Origin::Local`] has no v1
/// form and is written as `UNKNOWN`, like [`Origin::Unknown`].
pub fn encode_v1(origin: &Origin, out: &mut [u8]) -> Option<usize> {
    use fmt::Write;
    struct Cursor<'b>(&'b mut [u8], usize);
    impl Write for Cursor<'_> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            let end = self.1 + s.len();
            self.0.get_mut(self.1..end).ok_or(fmt::Error)?.copy_from_slice(s.as_bytes());
            self.1 = end;
            Ok(())
        }
    }
    let mut c = Cursor(out, 0);
    let r = match *origin {
        Origin::Local | Origin::Unknown => c.write_str("PROXY UNKNOWN\r\n"),
        Origin::Tcp { source, destination } => {
            let proto = match (source, destination) {
                (SocketAddr::V4(_), SocketAddr::V4(_)) => "TCP4",
                (SocketAddr::V6(_), SocketAddr::V6(_)) => "TCP6",
                _ => return None,
            };
            let (s, d) = (source.ip(), destination.ip());
            write!(c, "PROXY {proto} {s} {d} {} {}\r\n", source.port(), destination.port())
        }
    };
    r.ok().map(|()| c.1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;
    use std::vec;
    use std::vec::Vec;

    fn complete(input: &[u8]) -> (usize, Header<'_>) {
        match parse(input) {
            Ok(Status::Complete(c)) => c,
            other => panic!("{:?}: {other:?}", input.escape_ascii().to_string()),
        }
    }

    fn err(input: &[u8]) -> ProxyError {
        match parse(input) {
            Err(e) => e,
            other => panic!("{:?}: {other:?}", input.escape_ascii().to_string()),
        }
    }

    fn tcp(src: &str, dst: &str) -> Origin {
        Origin::Tcp { source: src.parse().unwrap(), destination: dst.parse().unwrap() }
    }

    /// Every strict prefix is Partial, the whole is Complete, a tail is never looked at.
    fn splits(header: &[u8]) -> Header<'_> {
        for i in 0..header.len() {
            assert_eq!(
                parse(&header[..i]),
                Ok(Status::Partial),
                "prefix {i} of {:?}",
                header.escape_ascii().to_string()
            );
        }
        let (n, h) = complete(header);
        assert_eq!(n, header.len());
        let mut tailed = header.to_vec();
        tailed.extend_from_slice(b"EHLO x\r\n\r\n\0garbage");
        assert_eq!(parse(&tailed), Ok(Status::Complete((n, h))));
        h
    }

    fn v2(ver_cmd: u8, fam: u8, block: &[u8]) -> Vec<u8> {
        let mut v = V2_SIGNATURE.to_vec();
        v.extend_from_slice(&[ver_cmd, fam]);
        v.extend_from_slice(&(block.len() as u16).to_be_bytes());
        v.extend_from_slice(block);
        v
    }

    const V4_BLOCK: [u8; 12] = [192, 0, 2, 7, 198, 51, 100, 1, 0xdc, 0x04, 0, 25];

    fn v6_block() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(&[0xdc, 0x04, 0, 25]);
        b
    }

    /// A v2 TCP4 header with these TLVs after the addresses, with a correct CRC32c TLV when
    /// `crc`.
    fn v2_tlvs(tlvs: &[u8], crc: bool) -> Vec<u8> {
        let mut block = V4_BLOCK.to_vec();
        block.extend_from_slice(tlvs);
        if crc {
            block.extend_from_slice(&[tlv::CRC32C, 0, 4, 0, 0, 0, 0]);
        }
        let mut h = v2(0x21, 0x11, &block);
        if crc {
            let sum = !crc32c(!0, &h);
            let at = h.len() - 4;
            h[at..].copy_from_slice(&sum.to_be_bytes());
        }
        h
    }

    #[test]
    fn crc32c_reference_values() {
        // RFC 3720 B.4 test vectors.
        assert_eq!(!crc32c(!0, &[0u8; 32]), 0x8a91_36aa);
        assert_eq!(!crc32c(!0, &[0xffu8; 32]), 0x62a8_ab43);
        assert_eq!(!crc32c(!0, b"123456789"), 0xe306_9283);
    }

    #[test]
    fn v1_tcp4() {
        let line = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\r\n";
        let h = splits(line);
        assert_eq!(h, Header { version: Version::V1, origin: tcp("192.0.2.7:56324", "198.51.100.1:25"), tlvs: &[] });
        assert_eq!(h.destination(), Some("198.51.100.1:25".parse().unwrap()));
        assert_eq!(h.tlvs().count(), 0);
        // The extremes of the spec's table.
        let max = b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
        assert_eq!(max.len(), 56);
        assert_eq!(splits(max).origin, tcp("255.255.255.255:65535", "255.255.255.255:65535"));
        assert_eq!(splits(b"PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n").origin, tcp("0.0.0.0:0", "0.0.0.0:0"));
    }

    #[test]
    fn v1_tcp6() {
        let h = splits(b"PROXY TCP6 2001:db8::7 2001:DB8::1 56324 25\r\n");
        assert_eq!(h.origin, tcp("[2001:db8::7]:56324", "[2001:db8::1]:25"));
        // inet_ntop writes IPv4-mapped addresses with a dotted tail.
        let h = splits(b"PROXY TCP6 ::ffff:192.0.2.7 ::1 1 2\r\n");
        assert_eq!(h.origin, tcp("[::ffff:192.0.2.7]:1", "[::1]:2"));
        let full = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        assert_eq!(full.len(), 104);
        splits(full);
    }

    #[test]
    fn v1_unknown() {
        let h = splits(b"PROXY UNKNOWN\r\n");
        assert_eq!(h, Header { version: Version::V1, origin: Origin::Unknown, tlvs: &[] });
        assert_eq!(h.source(), None);
        // The rest of the line is ignored, up to the 107-octet worst case.
        splits(b"PROXY UNKNOWN whatever 1 2 ::x\r\n");
        let mut worst = b"PROXY UNKNOWN ".to_vec();
        worst.extend_from_slice(&[b'f'; V1_MAX_LEN - 16]);
        worst.extend_from_slice(b"\r\n");
        assert_eq!(worst.len(), V1_MAX_LEN);
        splits(&worst);
    }

    #[test]
    fn v1_malformed() {
        use ProxyError::*;
        let cases: &[(&[u8], ProxyError)] = &[
            (b"EHLO x\r\n", NotProxy),
            (b"PROXZ TCP4 1.2.3.4 5.6.7.8 1 2\r\n", NotProxy),
            (b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", NotProxy),
            (b"PROXY\r\n", Syntax),
            (b"PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n", Syntax),
            (b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", Syntax),
            (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", Syntax),
            (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", Syntax),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n", Syntax),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", Syntax),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", Syntax),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", Syntax),
            (b"PROXY TCP4\r\n", Syntax),
            (b"PROXY \r\n", Syntax),
            (b"PROXY UNKNOWNX\r\n", Protocol),
            (b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", Protocol),
            (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", Protocol),
            (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", Protocol),
            // Line ends: bare LF, bare CR, LF CR, a NUL, a non-ASCII byte, a tab.
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", Syntax),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", Syntax),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n\r", Syntax),
            (b"PROXY UNKNOWN \0\r\n", Syntax),
            (b"PROXY UNKNOWN \xc3\xa9\r\n", Syntax),
            (b"PROXY UNKNOWN \t\r\n", Syntax),
            (b"PROXY UNKNOWN \r \r\n", Syntax),
            // Addresses.
            (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", Address),
            (b"PROXY TCP4 1.2.3.4 5.6.7.08 1 2\r\n", Address),
            (b"PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n", Address),
            (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", Address),
            (b"PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n", Address),
            (b"PROXY TCP4 1.2..4 5.6.7.8 1 2\r\n", Address),
            (b"PROXY TCP4 1.2.3.4. 5.6.7.8 1 2\r\n", Address),
            (b"PROXY TCP4 +1.2.3.4 5.6.7.8 1 2\r\n", Address),
            (b"PROXY TCP4 0x1.2.3.4 5.6.7.8 1 2\r\n", Address),
            (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", Address),
            (b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n", Address),
            (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", Address),
            (b"PROXY TCP6 ::1 5.6.7.8 1 2\r\n", Address),
            (b"PROXY TCP6 1::2::3 ::1 1 2\r\n", Address),
            (b"PROXY TCP6 12345::1 ::1 1 2\r\n", Address),
            (b"PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n", Address),
            (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", Address),
            (b"PROXY TCP6 [::1] ::1 1 2\r\n", Address),
            (b"PROXY TCP6 ::g ::1 1 2\r\n", Address),
            // Ports.
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", Port),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", Port),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", Port),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", Port),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", Port),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n", Port),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 0x1 2\r\n", Port),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 000001 2\r\n", Port),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2a\r\n", Port),
        ];
        for (input, want) in cases {
            assert_eq!(err(input), *want, "{:?}", input.escape_ascii().to_string());
        }
    }

    #[test]
    fn v1_errors_show_early() {
        // As soon as the bytes show it, not at the line end.
        assert_eq!(err(b"E"), ProxyError::NotProxy);
        assert_eq!(err(b"PX"), ProxyError::NotProxy);
        assert_eq!(err(b"PROXY\r"), ProxyError::Syntax);
        assert_eq!(err(b"PROXY TCP4 1.2\n"), ProxyError::Syntax);
        assert_eq!(err(b"PROXY TCP4 1.2\rX"), ProxyError::Syntax);
        assert_eq!(err(b"PROXY TCP4 \x001"), ProxyError::Syntax);
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r"), Ok(Status::Partial));
    }

    #[test]
    fn v1_length_cap() {
        // 107 octets without the CRLF in them: too long, whatever follows.
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(V1_MAX_LEN, b'f');
        assert_eq!(parse(&long[..V1_MAX_LEN - 1]), Ok(Status::Partial));
        assert_eq!(err(&long), ProxyError::LineTooLong);
        // The CR as the 107th octet: the LF would be the 108th.
        long[V1_MAX_LEN - 1] = b'\r';
        assert_eq!(err(&long), ProxyError::LineTooLong);
        long.push(b'\n');
        assert_eq!(err(&long), ProxyError::LineTooLong);
    }

    #[test]
    fn v2_tcp4_tcp6() {
        let header = v2(0x21, 0x11, &V4_BLOCK);
        let h = splits(&header);
        assert_eq!(h, Header { version: Version::V2, origin: tcp("192.0.2.7:56324", "198.51.100.1:25"), tlvs: &[] });
        let header = v2(0x21, 0x21, &v6_block());
        let h = splits(&header);
        assert_eq!(h.origin, tcp("[2001:db8::7]:56324", "[2001:db8::1]:25"));
    }

    #[test]
    fn v2_local_unspec_unix() {
        // LOCAL: the family and the whole block are ignored, whatever they hold.
        for fam in [0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32] {
            assert_eq!(splits(&v2(0x20, fam, &[])).origin, Origin::Local);
            assert_eq!(splits(&v2(0x20, fam, &[1, 2, 3])).origin, Origin::Local);
        }
        let local = v2(0x20, 0x11, &V4_BLOCK);
        let h = splits(&local);
        assert_eq!((h.origin, h.tlvs().count()), (Origin::Local, 0));
        // PROXY over UNSPEC: relayed, no address; the block is skipped.
        assert_eq!(splits(&v2(0x21, 0x00, &[])).origin, Origin::Unknown);
        assert_eq!(splits(&v2(0x21, 0x00, &[0xff; 7])).origin, Origin::Unknown);
        // PROXY over a UNIX stream: no IP address; TLVs after the 216 octets.
        let mut block = vec![b'/'; 216];
        block.extend_from_slice(&[tlv::NOOP, 0, 1, 0]);
        let unix = v2(0x21, 0x31, &block);
        let h = splits(&unix);
        assert_eq!(h.origin, Origin::Unknown);
        assert_eq!(h.tlvs().collect::<Vec<_>>(), [Tlv { kind: tlv::NOOP, value: &[0] }]);
    }

    #[test]
    fn v2_tlvs_are_skipped_and_readable() {
        let tlvs = [tlv::ALPN, 0, 4, b's', b'm', b't', b'p', tlv::NOOP, 0, 0, tlv::UNIQUE_ID, 0, 2, 7, 8];
        let header = v2_tlvs(&tlvs, true);
        let h = splits(&header);
        assert_eq!(h.source(), Some("192.0.2.7:56324".parse().unwrap()));
        let got: Vec<Tlv<'_>> = h.tlvs().collect();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0], Tlv { kind: tlv::ALPN, value: b"smtp" });
        assert_eq!(got[1], Tlv { kind: tlv::NOOP, value: b"" });
        assert_eq!(got[2], Tlv { kind: tlv::UNIQUE_ID, value: &[7, 8] });
        assert_eq!(got[3].kind, tlv::CRC32C);
        // Without a checksum too.
        assert_eq!(splits(&v2_tlvs(&tlvs, false)).tlvs().count(), 3);
    }

    #[test]
    fn haproxy_capture() {
        // What HAProxy 2.6 sent with `send-proxy-v2 proxy-v2-options crc32c` for a client at
        // 127.0.0.7 talking to the frontend at 127.0.0.5:24999, and the client's first bytes.
        let capture = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x13\x7f\x00\x00\x07\x7f\x00\x00\x05\xa7\xd9\x61\xa7\
                        \x03\x00\x04\xaf\x88\xfb\x65EHLO x\r\n";
        let (n, h) = complete(capture);
        assert_eq!(&capture[n..], b"EHLO x\r\n");
        assert_eq!(h.origin, tcp("127.0.0.7:42969", "127.0.0.5:24999"));
        assert_eq!(h.tlvs().map(|t| t.kind).collect::<Vec<_>>(), [tlv::CRC32C]);
        splits(&capture[..n]);
    }

    #[test]
    fn v2_crc32c() {
        let good = v2_tlvs(&[tlv::AUTHORITY, 0, 3, b'm', b'x', b'.'], true);
        splits(&good);
        // Any flipped bit is caught (by a check or the sum) or changes the header (the command
        // bit turns PROXY into LOCAL).
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[i] ^= 1 << bit;
                assert!(
                    !matches!(parse(&bad), Ok(Status::Complete((n, h))) if n == good.len() && h == complete(&good).1)
                );
            }
        }
        let mut bad = good.clone();
        let at = bad.len() - 1;
        bad[at] ^= 1;
        assert_eq!(err(&bad), ProxyError::Checksum);
        // A checksum TLV of the wrong size.
        assert_eq!(err(&v2_tlvs(&[tlv::CRC32C, 0, 3, 0, 0, 0], false)), ProxyError::Tlv);
    }

    #[test]
    fn v2_malformed() {
        use ProxyError::*;
        let mut bad_sig = v2(0x21, 0x11, &V4_BLOCK);
        bad_sig[11] = b'X';
        let long_tlv = {
            let mut b = V4_BLOCK.to_vec();
            b.extend_from_slice(&[tlv::NOOP, 0, 5, 1, 2, 3, 4]);
            b
        };
        let short_tlv = {
            let mut b = V4_BLOCK.to_vec();
            b.extend_from_slice(&[tlv::NOOP, 0]);
            b
        };
        let cases: Vec<(Vec<u8>, ProxyError)> = vec![
            (bad_sig, NotProxy),
            (b"\r\n\r\n\0\r\nQUIX\n".to_vec(), NotProxy),
            (b"\r\nEHLO".to_vec(), NotProxy),
            (v2(0x11, 0x11, &V4_BLOCK), Version),
            (v2(0x31, 0x11, &V4_BLOCK), Version),
            (v2(0x01, 0x11, &V4_BLOCK), Version),
            (v2(0x22, 0x11, &V4_BLOCK), Command),
            (v2(0x2f, 0x11, &V4_BLOCK), Command),
            (v2(0x21, 0x12, &V4_BLOCK), Family),
            (v2(0x21, 0x22, &v6_block()), Family),
            (v2(0x21, 0x32, &[0; 216]), Family),
            (v2(0x21, 0x13, &V4_BLOCK), Family),
            (v2(0x21, 0x41, &V4_BLOCK), Family),
            (v2(0x21, 0x01, &V4_BLOCK), Family),
            (v2(0x21, 0x10, &V4_BLOCK), Family),
            (v2(0x20, 0x41, &[]), Family),
            (v2(0x21, 0x11, &V4_BLOCK[..11]), Length),
            (v2(0x21, 0x11, &[]), Length),
            (v2(0x21, 0x21, &v6_block()[..35]), Length),
            (v2(0x21, 0x21, &V4_BLOCK), Length),
            (v2(0x21, 0x31, &[0; 215]), Length),
            (v2(0x21, 0x11, &long_tlv), Tlv),
            (v2(0x21, 0x11, &short_tlv), Tlv),
            (v2(0x21, 0x11, &[&V4_BLOCK[..], &[0]].concat()), Tlv),
        ];
        for (input, want) in &cases {
            assert_eq!(err(input), *want, "{:?}", input.escape_ascii().to_string());
        }
    }

    #[test]
    fn v2_errors_show_early_and_length_cap() {
        assert_eq!(err(b"\r\n\n"), ProxyError::NotProxy);
        assert_eq!(parse(&V2_SIGNATURE[..5]), Ok(Status::Partial));
        assert_eq!(err(&[&V2_SIGNATURE[..], &[0x11]].concat()), ProxyError::Version);
        assert_eq!(err(&[&V2_SIGNATURE[..], &[0x21, 0x12]].concat()), ProxyError::Family);
        // The length is judged as soon as it is there: too long, or too short for the family.
        let head = |len: u16| [&V2_SIGNATURE[..], &[0x21, 0x11], &len.to_be_bytes()[..]].concat();
        assert_eq!(err(&head(11)), ProxyError::Length);
        assert_eq!(err(&head(u16::MAX)), ProxyError::TooLong);
        assert_eq!(err(&head((MAX_LEN - V2_FIXED_LEN + 1) as u16)), ProxyError::TooLong);
        assert_eq!(parse(&head((MAX_LEN - V2_FIXED_LEN) as u16)), Ok(Status::Partial));
        // The longest header accepted: addresses and NOOP padding up to MAX_LEN.
        let pad = MAX_LEN - V2_FIXED_LEN - 12 - 3;
        let mut tlvs = vec![tlv::NOOP];
        tlvs.extend_from_slice(&(pad as u16).to_be_bytes());
        tlvs.resize(3 + pad, 0);
        let max = v2_tlvs(&tlvs, false);
        assert_eq!(max.len(), MAX_LEN);
        splits(&max);
    }

    #[test]
    fn byte_by_byte_and_every_split() {
        // A caller that appends what each read brings and parses again: Partial until the
        // header's last byte, then the same header; the SMTP after it is left alone.
        let headers: Vec<Vec<u8>> = vec![
            b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\r\n".to_vec(),
            b"PROXY TCP6 ::1 ::2 1 2\r\n".to_vec(),
            b"PROXY UNKNOWN\r\n".to_vec(),
            v2(0x21, 0x11, &V4_BLOCK),
            v2(0x21, 0x21, &v6_block()),
            v2(0x20, 0x00, &[]),
            v2_tlvs(&[tlv::ALPN, 0, 1, b'x'], true),
        ];
        for header in &headers {
            let mut stream = header.clone();
            stream.extend_from_slice(b"EHLO client.example\r\n");
            let want = complete(&stream);
            assert_eq!(want.0, header.len());
            for cut in 0..=stream.len() {
                let mut buf = Vec::new();
                let mut got = None;
                for piece in [&stream[..cut], &stream[cut..]] {
                    for &b in piece {
                        buf.push(b);
                        match parse(&buf) {
                            Ok(Status::Partial) => assert!(buf.len() < header.len()),
                            Ok(Status::Complete(c)) => {
                                got = Some((c.0, c.1.version, c.1.origin));
                                break;
                            }
                            Err(e) => panic!("{e} at {} of {:?}", buf.len(), header.escape_ascii().to_string()),
                        }
                    }
                    if got.is_some() {
                        break;
                    }
                }
                assert_eq!(got, Some((want.0, want.1.version, want.1.origin)));
            }
        }
    }

    #[test]
    fn encoders_round_trip() {
        let origins = [
            Origin::Local,
            Origin::Unknown,
            tcp("192.0.2.7:56324", "198.51.100.1:25"),
            tcp("[2001:db8::7]:1", "[::ffff:1.2.3.4]:65535"),
        ];
        for o in origins {
            let mut buf = [0u8; 128];
            let n = encode_v2(&o, &mut buf).unwrap();
            let (len, h) = complete(&buf[..n]);
            assert_eq!((len, h.version, h.origin), (n, Version::V2, o));
            assert_eq!(encode_v2(&o, &mut buf[..n - 1]), None);
            let n = encode_v1(&o, &mut buf).unwrap();
            let (len, h) = complete(&buf[..n]);
            let want = if o == Origin::Local { Origin::Unknown } else { o };
            assert_eq!((len, h.version, h.origin), (n, Version::V1, want));
            assert_eq!(encode_v1(&o, &mut buf[..n - 1]), None);
        }
        let mixed = tcp("192.0.2.7:1", "[::1]:2");
        assert_eq!(encode_v2(&mixed, &mut [0u8; 128]), None);
        assert_eq!(encode_v1(&mixed, &mut [0u8; 128]), None);
    }
}
