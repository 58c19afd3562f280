//! MAIL and RCPT parameters (RFC 5321 esmtp-param), typed. Unknown parameters stay raw.

use nom::bytes::complete::tag;
use nom::character::complete::{digit1, one_of};
use nom::combinator::{eof, opt};
use nom::{IResult, Parser};

use super::path::{byte_class, ATEXT};
use super::swar;
use super::xtext::{is_xtext, XText};

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

/// Which command a parameter list belongs to (decides which keywords are known).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) enum ParamKind {
    /// No keyword is known: everything is "unknown".
    #[default]
    None,
    /// MAIL FROM parameters.
    Mail,
    /// RCPT TO parameters.
    Rcpt,
}

/// Parameters the parser did not recognise, raw, in order: `KEYWORD[=value]`.
///
/// Zero-copy: holds the raw parameter text from the first unknown parameter on and skips the
/// known keywords while iterating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct UnknownParams<'a> {
    /// The raw parameters from the first unknown one to the end (`""` when there is none).
    pub(crate) raw: &'a str,
    /// The command, to know which keywords to skip.
    pub(crate) kind: ParamKind,
}

impl<'a> UnknownParams<'a> {
    /// No unknown parameter.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// `(keyword, value)` pairs of the unknown parameters.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, Option<&'a str>)> + 'a {
        let kind = self.kind;
        self.raw
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (p, None),
            })
            .filter(move |(k, _)| match kind {
                ParamKind::None => true,
                ParamKind::Mail => mail_keyword(k).is_none(),
                ParamKind::Rcpt => rcpt_keyword(k).is_none(),
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

/// First character of a parameter keyword:
///
/// ```text
/// esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")   ; RFC 5321 §4.1.2
/// ```
static KEYWORD_FIRST: [bool; 256] = byte_class(&[(b'A', b'Z'), (b'a', b'z'), (b'0', b'9')]);

/// One `keyword[=value]` and the offset where it starts.
struct RawParam<'a> {
    start: usize,
    keyword: &'a str,
    value: Option<&'a str>,
}

/// Splits `esmtp-param *(SP esmtp-param)` (leading, trailing and repeated spaces tolerated).
struct RawParams<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> RawParams<'a> {
    #[inline(always)]
    fn next_param(&mut self) -> Result<Option<RawParam<'a>>, ParamError> {
        let b = self.s.as_bytes();
        let mut i = self.i;
        while b.get(i) == Some(&b' ') {
            i += 1;
        }
        let start = i;
        match b.get(i) {
            None => return Ok(None),
            Some(&c) if KEYWORD_FIRST[c as usize] => i += 1,
            Some(_) => return Err(ParamError::Syntax),
        }
        // Later characters: ALPHA / DIGIT / "-", eight at a time.
        i = swar::keyword_end(b, i);
        let keyword = self.s.get(start..i).ok_or(ParamError::Syntax)?;
        let value = if b.get(i) == Some(&b'=') {
            i += 1;
            let v = i;
            // esmtp-value  = 1*(%d33-60 / %d62-126)   ; RFC 5321 §4.1.2
            // esmtp-value =/ UTF8-non-ascii           ; RFC 6531 §3.3
            i = swar::value_end(b, i);
            if i == v {
                return Err(ParamError::Syntax);
            }
            Some(self.s.get(v..i).ok_or(ParamError::Syntax)?)
        } else {
            None
        };
        match b.get(i) {
            None | Some(b' ') => {}
            Some(_) => return Err(ParamError::Syntax),
        }
        self.i = i;
        Ok(Some(RawParam { start, keyword, value }))
    }
}

/// The MAIL parameters this parser knows.
#[derive(Clone, Copy)]
enum MailKw {
    Size = 0,
    Body,
    SmtpUtf8,
    Ret,
    Envid,
    Auth,
    RequireTls,
    MtPriority,
    HoldFor,
    HoldUntil,
    By,
}

/// Folds a word of 1 to 8 bytes (`| 0x20` each) into a `u64`, zero-padded; 0 for any other
/// length: one compare per candidate word, and words of different lengths never collide (a
/// folded byte is never 0). Sound for the bytes the keyword and value grammars let through
/// (33..=126 and non-ASCII): against a target of lower-case letters, digits and `-`,
/// `c | 0x20 == t` only when `c` is `t` or its upper case (the other pre-images of digits and
/// `-` are control characters).
#[inline(always)]
fn fold(b: &[u8]) -> u64 {
    let n = b.len();
    let raw = match (b.get(..4), b.get(n.saturating_sub(4)..)) {
        // 4 to 8 bytes: two overlapping 4-byte loads; the overlap ORs each byte with itself.
        (Some(lo), Some(hi)) if n <= 8 => {
            let lo = <[u8; 4]>::try_from(lo).map_or(0, u32::from_le_bytes);
            let hi = <[u8; 4]>::try_from(hi).map_or(0, u32::from_le_bytes);
            u64::from(lo) | (u64::from(hi) << (8 * (n - 4)))
        }
        (None, _) => b.iter().rev().fold(0u64, |w, &c| (w << 8) | u64::from(c)),
        _ => return 0,
    };
    if n == 0 {
        return 0;
    }
    raw | (0x2020_2020_2020_2020 >> (8 * (8 - n)))
}

/// The folded form of a lower-case target word of 1 to 8 bytes (see [`fold`]).
const fn word(w: &[u8]) -> u64 {
    let mut v = 0u64;
    let mut i = w.len();
    while i > 0 {
        i -= 1;
        v = (v << 8) | w[i] as u64;
    }
    v
}

const K_SIZE: u64 = word(b"size");
const K_BODY: u64 = word(b"body");
const K_AUTH: u64 = word(b"auth");
const K_RET: u64 = word(b"ret");
const K_ENVID: u64 = word(b"envid");
const K_SMTPUTF8: u64 = word(b"smtputf8");
const K_BY: u64 = word(b"by");
const K_HOLDFOR: u64 = word(b"holdfor");
const K_NOTIFY: u64 = word(b"notify");
const K_ORCPT: u64 = word(b"orcpt");
const V_7BIT: u64 = word(b"7bit");
const V_8BITMIME: u64 = word(b"8bitmime");
const V_FULL: u64 = word(b"full");
const V_HDRS: u64 = word(b"hdrs");
const V_NEVER: u64 = word(b"never");
const V_SUCCESS: u64 = word(b"success");
const V_FAILURE: u64 = word(b"failure");
const V_DELAY: u64 = word(b"delay");

/// The known MAIL keyword `k` (case-insensitive).
#[inline]
fn mail_keyword(k: &str) -> Option<MailKw> {
    let b = k.as_bytes();
    let kw = match fold(b) {
        K_SIZE => MailKw::Size,
        K_BODY => MailKw::Body,
        K_AUTH => MailKw::Auth,
        K_RET => MailKw::Ret,
        K_ENVID => MailKw::Envid,
        K_SMTPUTF8 => MailKw::SmtpUtf8,
        K_BY => MailKw::By,
        K_HOLDFOR => MailKw::HoldFor,
        0 if b.eq_ignore_ascii_case(b"HOLDUNTIL") => MailKw::HoldUntil,
        0 if b.eq_ignore_ascii_case(b"REQUIRETLS") => MailKw::RequireTls,
        0 if b.eq_ignore_ascii_case(b"MT-PRIORITY") => MailKw::MtPriority,
        _ => return None,
    };
    Some(kw)
}

/// The known RCPT keyword `k` (case-insensitive).
#[derive(Clone, Copy)]
enum RcptKw {
    Notify = 0,
    Orcpt,
}

#[inline]
fn rcpt_keyword(k: &str) -> Option<RcptKw> {
    match fold(k.as_bytes()) {
        K_NOTIFY => Some(RcptKw::Notify),
        K_ORCPT => Some(RcptKw::Orcpt),
        _ => None,
    }
}

/// Maximum length of `ENVID=` (RFC 3461 §4.4).
pub(crate) const MAX_ENVID: usize = 100;
/// Maximum length of the `ORCPT=` value (RFC 3461 §4.2).
pub(crate) const MAX_ORCPT: usize = 500;

/// A decimal `u64` of 1 to 20 digits, overflow checked.
#[inline]
fn parse_u64(v: &str) -> Option<u64> {
    let b = v.as_bytes();
    if b.is_empty() || b.len() > 20 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Up to 19 digits cannot overflow (10^19 - 1 < 2^64); only the 20th needs checking.
    let (head, tail) = b.split_at_checked(b.len().min(19))?;
    let n = head.iter().fold(0u64, |n, &c| n * 10 + u64::from(c - b'0'));
    match tail.first() {
        None => Some(n),
        Some(&c) => n.checked_mul(10)?.checked_add(u64::from(c - b'0')),
    }
}

/// `MT-PRIORITY` value: `priority-value = [ "-" / "+" ] DIGIT` (RFC 6710 §5), -9..=9.
fn parse_priority(v: &str) -> Option<i8> {
    let (neg, digit) = match v.as_bytes() {
        [d] => (false, *d),
        [b'+', d] => (false, *d),
        [b'-', d] => (true, *d),
        _ => return None,
    };
    if !digit.is_ascii_digit() {
        return None;
    }
    let n = (digit - b'0') as i8;
    Some(if neg { -n } else { n })
}

/// The pieces of a `BY=` value: sign, digits, mode, trace.
type ByParts<'a> = (Option<char>, &'a str, char, Option<char>);

/// `BY=` value (RFC 2852 §4):
///
/// ```text
/// by-value = by-time ";" by-mode [by-trace]
/// by-time  = ["-" / "+"] 1*9DIGIT
/// by-mode  = "N" / "R"
/// by-trace = "T"
/// ```
fn by_value(i: &str) -> IResult<&str, ByParts<'_>, ()> {
    (opt(one_of("+-")), digit1, tag(";"), one_of("NnRr"), opt(one_of("Tt")), eof)
        .map(|(sign, digits, _, mode, trace, _)| (sign, digits, mode, trace))
        .parse(i)
}

fn parse_by(v: &str) -> Option<By> {
    let (_, (sign, digits, mode, trace)) = by_value(v).ok()?;
    if digits.len() > 9 {
        return None;
    }
    let n = i64::try_from(parse_u64(digits)?).ok()?;
    let time = if sign == Some('-') { -n } else { n };
    let mode = if mode.eq_ignore_ascii_case(&'R') { ByMode::Return } else { ByMode::Notify };
    // RFC 2852 §4: with R the by-time must be positive.
    if mode == ByMode::Return && time <= 0 {
        return None;
    }
    Some(By { time, mode, trace: trace.is_some() })
}

/// `NOTIFY` value (RFC 3461 §4.1): `"NEVER" / 1#( "SUCCESS" / "FAILURE" / "DELAY" )`.
fn parse_notify(v: &str) -> Option<Notify> {
    let v = v.as_bytes();
    if fold(v) == V_NEVER {
        return Some(Notify::NEVER);
    }
    let mut flags = 0;
    for item in v.split(|&c| c == b',') {
        flags |= match fold(item) {
            V_SUCCESS => Notify::SUCCESS,
            V_FAILURE => Notify::FAILURE,
            V_DELAY => Notify::DELAY,
            _ => return None, // includes NEVER mixed with others and empty items
        };
    }
    Some(Notify(flags))
}

fn parse_orcpt(v: &str) -> Option<Orcpt<'_>> {
    if v.len() > MAX_ORCPT {
        return None;
    }
    let semi = v.bytes().position(|c| c == b';')?;
    let (addr_type, addr) = (v.get(..semi)?, v.get(semi + 1..)?);
    if addr_type.is_empty() || !addr_type.bytes().all(|c| c < 0x80 && ATEXT[c as usize]) {
        return None;
    }
    if addr.is_empty() || !is_xtext(addr, addr_type.eq_ignore_ascii_case("utf-8")) {
        return None;
    }
    Some(Orcpt { addr_type, addr: XText(addr) })
}

/// Whether the bit for `kw` was already set; sets it.
#[inline]
fn seen_before(seen: &mut u16, bit: u8) -> bool {
    let mask = 1u16 << bit;
    let before = *seen & mask != 0;
    *seen |= mask;
    before
}

/// A non-empty xtext value.
fn xtext_value(v: &str) -> Option<XText<'_>> {
    if v.is_empty() {
        None
    } else {
        XText::new(v)
    }
}

/// Parses the parameters after the MAIL FROM path (`input` is what follows the `>`, without CRLF).
///
/// Known keywords (case-insensitive): `SIZE`, `BODY`, `SMTPUTF8`, `RET`, `ENVID`, `AUTH`,
/// `REQUIRETLS`, `MT-PRIORITY`, `HOLDFOR`, `HOLDUNTIL`, `BY`; everything else lands in
/// [`MailParams::unknown`].
pub fn parse_mail_params(input: &str) -> Result<MailParams<'_>, ParamError> {
    let mut p = MailParams::default();
    let mut raw = RawParams { s: input, i: 0 };
    let mut seen = 0u16;
    let mut first_unknown = None;
    while let Some(param) = raw.next_param()? {
        let Some(kw) = mail_keyword(param.keyword) else {
            first_unknown.get_or_insert(param.start);
            continue;
        };
        if seen_before(&mut seen, kw as u8) {
            return Err(ParamError::Duplicate);
        }
        let v = param.value;
        let ok = match kw {
            MailKw::Size => v.and_then(parse_u64).map(|n| p.size = Some(n)),
            MailKw::Body => v
                .and_then(|v| {
                    let v = v.as_bytes();
                    match fold(v) {
                        V_8BITMIME => Some(Body::EightBitMime),
                        V_7BIT => Some(Body::SevenBit),
                        0 if v.eq_ignore_ascii_case(b"BINARYMIME") => Some(Body::BinaryMime),
                        _ => None,
                    }
                })
                .map(|b| p.body = Some(b)),
            MailKw::SmtpUtf8 => v.is_none().then(|| p.smtputf8 = true),
            MailKw::RequireTls => v.is_none().then(|| p.requiretls = true),
            MailKw::Ret => v
                .and_then(|v| match fold(v.as_bytes()) {
                    V_HDRS => Some(Ret::Hdrs),
                    V_FULL => Some(Ret::Full),
                    _ => None,
                })
                .map(|r| p.ret = Some(r)),
            MailKw::Envid => v.filter(|v| v.len() <= MAX_ENVID).and_then(xtext_value).map(|x| p.envid = Some(x)),
            MailKw::Auth => v
                .and_then(|v| if v == "<>" { Some(MailAuth::Empty) } else { xtext_value(v).map(MailAuth::Identity) })
                .map(|a| p.auth = Some(a)),
            MailKw::MtPriority => v.and_then(parse_priority).map(|n| p.mt_priority = Some(n)),
            MailKw::HoldFor => v.and_then(parse_u64).map(|n| p.hold_for = Some(n)),
            MailKw::HoldUntil => v.map(|v| p.hold_until = Some(v)),
            MailKw::By => v.and_then(parse_by).map(|b| p.by = Some(b)),
        };
        if ok.is_none() {
            return Err(ParamError::BadValue);
        }
    }
    if let Some(start) = first_unknown {
        p.unknown = UnknownParams { raw: input.get(start..).unwrap_or(""), kind: ParamKind::Mail };
    }
    Ok(p)
}

/// Parses the parameters after the RCPT TO path.
///
/// Known keywords (case-insensitive): `NOTIFY`, `ORCPT`; everything else lands in
/// [`RcptParams::unknown`].
pub fn parse_rcpt_params(input: &str) -> Result<RcptParams<'_>, ParamError> {
    let mut p = RcptParams::default();
    let mut raw = RawParams { s: input, i: 0 };
    let mut seen = 0u16;
    let mut first_unknown = None;
    while let Some(param) = raw.next_param()? {
        let Some(kw) = rcpt_keyword(param.keyword) else {
            first_unknown.get_or_insert(param.start);
            continue;
        };
        if seen_before(&mut seen, kw as u8) {
            return Err(ParamError::Duplicate);
        }
        let ok = match kw {
            RcptKw::Notify => param.value.and_then(parse_notify).map(|n| p.notify = Some(n)),
            RcptKw::Orcpt => param.value.and_then(parse_orcpt).map(|o| p.orcpt = Some(o)),
        };
        if ok.is_none() {
            return Err(ParamError::BadValue);
        }
    }
    if let Some(start) = first_unknown {
        p.unknown = UnknownParams { raw: input.get(start..).unwrap_or(""), kind: ParamKind::Rcpt };
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn unknown<'a>(u: &UnknownParams<'a>) -> Vec<(&'a str, Option<&'a str>)> {
        u.iter().collect()
    }

    #[test]
    fn fold_matches_exactly_the_case_insensitive_word() {
        let targets: [&[u8]; 18] = [
            b"size",
            b"body",
            b"auth",
            b"ret",
            b"envid",
            b"smtputf8",
            b"by",
            b"holdfor",
            b"notify",
            b"orcpt",
            b"7bit",
            b"8bitmime",
            b"full",
            b"hdrs",
            b"never",
            b"success",
            b"failure",
            b"delay",
        ];
        // Every target with one byte replaced by each byte the grammars let through, plus the
        // target cut short and made longer: fold agrees with eq_ignore_ascii_case on all.
        let allowed = (33u8..=126).chain([0x80, 0xC3, 0xFF]);
        for t in targets {
            for at in 0..t.len() {
                for c in allowed.clone() {
                    let mut x = t.to_vec();
                    x[at] = c;
                    for cand in [&x[..], &x[..at], &[&x[..], b"s"].concat()[..]] {
                        for u in targets {
                            assert_eq!(fold(cand) == word(u), cand.eq_ignore_ascii_case(u), "{cand:?} vs {u:?}");
                        }
                    }
                }
            }
        }
        assert_eq!(fold(b""), 0);
        assert_eq!(fold(b"ABCDEFGHI"), 0);
    }

    #[test]
    fn mail_all_known() {
        let p = parse_mail_params(
            " SIZE=12345 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=x+2By AUTH=<> REQUIRETLS \
             MT-PRIORITY=-3 HOLDFOR=60 HOLDUNTIL=2030-01-01T00:00:00Z BY=120;RT",
        )
        .unwrap();
        assert_eq!(p.size, Some(12345));
        assert_eq!(p.body, Some(Body::EightBitMime));
        assert!(p.smtputf8);
        assert_eq!(p.ret, Some(Ret::Hdrs));
        assert_eq!(p.envid.unwrap().as_encoded(), "x+2By");
        assert_eq!(p.auth, Some(MailAuth::Empty));
        assert!(p.requiretls);
        assert_eq!(p.mt_priority, Some(-3));
        assert_eq!(p.hold_for, Some(60));
        assert_eq!(p.hold_until, Some("2030-01-01T00:00:00Z"));
        assert_eq!(p.by, Some(By { time: 120, mode: ByMode::Return, trace: true }));
        assert!(p.unknown.is_empty());
    }

    #[test]
    fn case_insensitive() {
        let p = parse_mail_params("size=1 body=7bit ret=full smtputf8 by=-5;n").unwrap();
        assert_eq!(p.size, Some(1));
        assert_eq!(p.body, Some(Body::SevenBit));
        assert_eq!(p.ret, Some(Ret::Full));
        assert!(p.smtputf8);
        assert_eq!(p.by, Some(By { time: -5, mode: ByMode::Notify, trace: false }));
        let r = parse_rcpt_params("notify=success,delay orcpt=RFC822;a@b").unwrap();
        assert_eq!(r.notify, Some(Notify(Notify::SUCCESS | Notify::DELAY)));
    }

    #[test]
    fn unknown_only_yields_unknown() {
        let p = parse_mail_params(" SIZE=1 X-A=1 BODY=7BIT FOO X-B=é  ").unwrap();
        assert_eq!(unknown(&p.unknown), [("X-A", Some("1")), ("FOO", None), ("X-B", Some("é"))]);
        assert!(!p.unknown.is_empty());
        let r = parse_rcpt_params("NOTIFY=NEVER XRCPT=1 ORCPT=rfc822;x").unwrap();
        assert_eq!(unknown(&r.unknown), [("XRCPT", Some("1"))]);
        // MAIL keywords are unknown on RCPT and vice versa
        let r = parse_rcpt_params("SIZE=1").unwrap();
        assert_eq!(unknown(&r.unknown), [("SIZE", Some("1"))]);
        let p = parse_mail_params("NOTIFY=NEVER").unwrap();
        assert_eq!(unknown(&p.unknown), [("NOTIFY", Some("NEVER"))]);
        assert!(parse_mail_params("").unwrap().unknown.is_empty());
        assert!(UnknownParams::default().is_empty());
    }

    #[test]
    fn errors() {
        use ParamError::*;
        let cases: &[(&str, ParamError)] = &[
            ("SIZE=1 SIZE=2", Duplicate),
            ("SIZE=1 size=x", Duplicate),
            ("SIZE", BadValue),
            ("SIZE=", Syntax),
            ("SIZE=-1", BadValue),
        ];
        for (input, want) in cases {
            assert_eq!(parse_mail_params(input).unwrap_err(), *want, "{input}");
        }
        assert_eq!(parse_mail_params("SIZE=18446744073709551615").unwrap().size, Some(u64::MAX));
        for bad in [
            "SIZE=18446744073709551616",
            "SIZE=000000000000000000001",
            "SIZE=1,",
            "BODY=8BIT",
            "BODY",
            "SMTPUTF8=yes",
            "REQUIRETLS=1",
            "RET=ALL",
            "ENVID=a+2b",
            "ENVID=é",
            "AUTH=a+",
            "MT-PRIORITY=10",
            "MT-PRIORITY=x",
            "MT-PRIORITY=--1",
            "HOLDFOR=1h",
            "HOLDUNTIL",
            "BY=10",
            "BY=10;X",
            "BY=10;RTT",
            "BY=0;R",
            "BY=-10;R",
            "BY=1234567890;N",
            "BY=;N",
        ] {
            assert_eq!(parse_mail_params(bad).unwrap_err(), BadValue, "{bad}");
        }
        let envid100 = std::format!("ENVID={}", "e".repeat(100));
        assert_eq!(parse_mail_params(&envid100).unwrap().envid.unwrap().as_encoded().len(), 100);
        let envid101 = std::format!("ENVID={}", "e".repeat(101));
        assert_eq!(parse_mail_params(&envid101).unwrap_err(), BadValue);
        for junk in ["-X=1", "X==1", "X=a=b", "X=\t", "X\t", "=1", "X=1\u{0}", "_X"] {
            assert_eq!(parse_mail_params(junk).unwrap_err(), Syntax, "{junk:?}");
        }
    }

    #[test]
    fn mt_priority_range() {
        for n in -9..=9i8 {
            let s = std::format!("MT-PRIORITY={n}");
            assert_eq!(parse_mail_params(&s).unwrap().mt_priority, Some(n));
        }
        assert_eq!(parse_mail_params("MT-PRIORITY=+4").unwrap().mt_priority, Some(4));
    }

    #[test]
    fn rcpt() {
        use ParamError::*;
        let r = parse_rcpt_params(" NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x+2By@y.example").unwrap();
        let n = r.notify.unwrap();
        assert!(n.has(Notify::SUCCESS) && n.has(Notify::FAILURE) && !n.has(Notify::DELAY));
        assert!(!n.is_never());
        let o = r.orcpt.unwrap();
        assert_eq!(o.addr_type, "rfc822");
        assert_eq!(o.addr.decoded().collect::<Vec<u8>>(), b"x+y@y.example");
        assert!(parse_rcpt_params("NOTIFY=NEVER").unwrap().notify.unwrap().is_never());
        let utf = parse_rcpt_params("ORCPT=utf-8;jöe@x").unwrap().orcpt.unwrap();
        assert_eq!(utf.addr.as_encoded(), "jöe@x");
        for bad in [
            "NOTIFY=NEVER,SUCCESS",
            "NOTIFY=SUCCESS,NEVER",
            "NOTIFY=SUCCESS,",
            "NOTIFY=",
            "NOTIFY",
            "NOTIFY=ALWAYS",
            "ORCPT=rfc822",
            "ORCPT=;a@b",
            "ORCPT=rfc822;",
            "ORCPT=rfc822;jöe@x",
            "ORCPT=rf(c;a",
            "ORCPT=rfc822;a+zz",
        ] {
            let want = if bad == "NOTIFY=" { Syntax } else { BadValue };
            assert_eq!(parse_rcpt_params(bad).unwrap_err(), want, "{bad}");
        }
        assert_eq!(parse_rcpt_params("NOTIFY=NEVER notify=DELAY").unwrap_err(), Duplicate);
        assert_eq!(parse_rcpt_params("ORCPT=a;b ORCPT=a;b").unwrap_err(), Duplicate);
        let long = std::format!("ORCPT=rfc822;{}", "a".repeat(494));
        assert_eq!(long.len() - 6, 501);
        assert_eq!(parse_rcpt_params(&long).unwrap_err(), BadValue);
        let ok = std::format!("ORCPT=rfc822;{}", "a".repeat(493));
        assert!(parse_rcpt_params(&ok).is_ok());
    }
}
