//! EHLO capabilities: the set a server offers, written as an EHLO response (RFC 5321 §4.1.1.1).

use crate::reply::BufferTooSmall;

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
    /// `SIZE n` (RFC 1870): [`Capabilities::write_ehlo`] writes the `size_limit` it is given,
    /// or `SIZE` without a number when that is `None`. Default on.
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
    /// `FUTURERELEASE max-interval max-datetime` (RFC 4865), the interval in seconds. Written
    /// only by [`Capabilities::write_ehlo_at`], which knows the current time. Default off.
    pub future_release: Option<u64>,
    /// `DELIVERBY [min]` (RFC 2852): `Some(0)` writes `DELIVERBY` without a number. Default off.
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

impl AuthMechanisms {
    /// The set named by a space-separated mechanism list such as the parameters of an EHLO
    /// `AUTH` line (`"PLAIN LOGIN GSSAPI"`); unknown names are skipped.
    ///
    /// ```
    /// use smtp_proto::ehlo::AuthMechanisms;
    /// let set = AuthMechanisms::from_list("plain GSSAPI  LOGIN");
    /// assert_eq!(set, AuthMechanisms::none().with(AuthMechanisms::PLAIN).with(AuthMechanisms::LOGIN));
    /// ```
    pub fn from_list(list: &str) -> Self {
        list.split([' ', '\t']).filter_map(Self::from_name).fold(Self::none(), Self::with)
    }
}

/// An upper bound of the length of any response [`Capabilities::write_ehlo`] writes: a buffer
/// this long never gives [`BufferTooSmall`].
pub const MAX_EHLO_RESPONSE: usize = 1024;

/// Largest `max-future-release-interval` (RFC 4865 §3: `1*9DIGIT` seconds).
pub const FUTURERELEASE_MAX_INTERVAL: u64 = 999_999_999;

/// Unix time of 9999-12-31T23:59:59Z, the last instant an RFC 3339 date-time can name.
const LAST_RFC3339_SECOND: u64 = 253_402_300_799;

/// One keyword line of the response being written.
#[derive(Clone, Copy)]
enum Item {
    Word(&'static str),
    Size(Option<u64>),
    Auth(AuthMechanisms),
    /// Interval, and the Unix time it ends.
    FutureRelease(u64, u64),
    DeliverBy(u64),
}

/// A bounded writer into the caller's buffer.
struct Out<'o> {
    buf: &'o mut [u8],
    len: usize,
}

impl Out<'_> {
    fn bytes(&mut self, b: &[u8]) -> Result<(), BufferTooSmall> {
        let end = self.len.checked_add(b.len()).ok_or(BufferTooSmall)?;
        self.buf.get_mut(self.len..end).ok_or(BufferTooSmall)?.copy_from_slice(b);
        self.len = end;
        Ok(())
    }

    fn num(&mut self, mut n: u64) -> Result<(), BufferTooSmall> {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.bytes(&digits[i..])
    }

    /// Writes `n` with leading zeros to at least `width` digits.
    fn padded(&mut self, n: u64, width: usize) -> Result<(), BufferTooSmall> {
        let mut digits = 1;
        let mut m = n / 10;
        while m > 0 {
            digits += 1;
            m /= 10;
        }
        for _ in digits..width {
            self.bytes(b"0")?;
        }
        self.num(n)
    }

    /// Writes `s` with control characters replaced by spaces, at most `budget` bytes, cut at a
    /// character boundary.
    fn text(&mut self, s: &str, budget: &mut usize) -> Result<(), BufferTooSmall> {
        for c in s.chars() {
            let c = if c.is_control() { ' ' } else { c };
            let mut tmp = [0u8; 4];
            let enc = c.encode_utf8(&mut tmp).as_bytes();
            if enc.len() > *budget {
                *budget = 0;
                break;
            }
            *budget -= enc.len();
            self.bytes(enc)?;
        }
        Ok(())
    }

    /// RFC 3339 `date-time` in UTC (`YYYY-MM-DDTHH:MM:SSZ`) of a Unix time up to year 9999.
    fn date_time(&mut self, unix: u64) -> Result<(), BufferTooSmall> {
        let (days, secs) = (unix / 86_400, unix % 86_400);
        let (y, m, d) = civil_from_days(days);
        self.padded(y, 4)?;
        self.bytes(b"-")?;
        self.padded(m, 2)?;
        self.bytes(b"-")?;
        self.padded(d, 2)?;
        self.bytes(b"T")?;
        self.padded(secs / 3600, 2)?;
        self.bytes(b":")?;
        self.padded(secs / 60 % 60, 2)?;
        self.bytes(b":")?;
        self.padded(secs % 60, 2)?;
        self.bytes(b"Z")
    }
}

/// Proleptic Gregorian (year, month, day) of a count of days since 1970-01-01, by shifting the
/// year to start on March 1st so that the leap day is the last day of the year.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Days since 0000-03-01; 400-year eras of 146097 days.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097; // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of the March-based year, 0..=365
    let mp = (5 * doy + 2) / 153; // month since March, 0..=11
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = era * 400 + yoe + u64::from(month <= 2);
    (year, month, day)
}

impl Capabilities {
    /// Nothing offered at all (unlike [`Default`]); the starting point of
    /// [`Capabilities::from_ehlo_lines`].
    pub const fn none() -> Self {
        Self {
            pipelining: false,
            size: false,
            eightbitmime: false,
            smtputf8: false,
            chunking: false,
            binarymime: false,
            dsn: false,
            enhanced_status_codes: false,
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

    fn items(&self, size_limit: Option<u64>, tls_active: bool, now: Option<u64>) -> ([Item; 16], usize) {
        let mut items = [Item::Word(""); 16];
        let mut n = 0;
        let mut push = |on: bool, item: Item| {
            if on {
                if let Some(slot) = items.get_mut(n) {
                    *slot = item;
                    n += 1;
                }
            }
        };
        push(self.pipelining, Item::Word("PIPELINING"));
        push(self.size, Item::Size(size_limit));
        push(self.eightbitmime, Item::Word("8BITMIME"));
        push(self.smtputf8, Item::Word("SMTPUTF8"));
        push(self.chunking, Item::Word("CHUNKING"));
        push(self.chunking && self.binarymime, Item::Word("BINARYMIME"));
        push(self.dsn, Item::Word("DSN"));
        push(self.enhanced_status_codes, Item::Word("ENHANCEDSTATUSCODES"));
        push(self.starttls && !tls_active, Item::Word("STARTTLS"));
        push(!self.auth.is_empty(), Item::Auth(self.auth));
        push(self.requiretls && tls_active, Item::Word("REQUIRETLS"));
        push(self.mt_priority, Item::Word("MT-PRIORITY"));
        if let (Some(interval), Some(now)) = (self.future_release, now) {
            let interval = interval.min(FUTURERELEASE_MAX_INTERVAL);
            let until = now.saturating_add(interval);
            push(until <= LAST_RFC3339_SECOND, Item::FutureRelease(interval, until));
        }
        if let Some(min) = self.deliver_by {
            push(true, Item::DeliverBy(min));
        }
        push(self.vrfy, Item::Word("VRFY"));
        push(self.help, Item::Word("HELP"));
        (items, n)
    }

    /// Writes the whole EHLO (or LHLO) response for these capabilities into `out`; returns the
    /// number of bytes written.
    ///
    /// The first line is `250-host greeting` (`250 host greeting` when no keyword follows; the
    /// space and greeting are left out when `greeting` is empty). Control characters in `host`
    /// and `greeting` are written as spaces, and the line is cut at a character boundary to
    /// [`MAX_REPLY_LINE`](crate::reply::MAX_REPLY_LINE) octets. Then one keyword per line, in
    /// this order, the last with `250 `:
    ///
    /// `PIPELINING`, `SIZE <size_limit>` (`SIZE` alone when `size_limit` is `None`), `8BITMIME`,
    /// `SMTPUTF8`, `CHUNKING`, `BINARYMIME` (only with CHUNKING), `DSN`, `ENHANCEDSTATUSCODES`,
    /// `STARTTLS` (only while `!tls_active`), `AUTH <mechanisms>` (if any), `REQUIRETLS` (only
    /// while `tls_active`), `MT-PRIORITY`, `DELIVERBY [min]` (`DELIVERBY` alone for `Some(0)`),
    /// `VRFY`, `HELP`.
    ///
    /// `FUTURERELEASE` is **not** written by this method: RFC 4865 §3 requires both a
    /// `max-future-release-interval` and a `max-future-release-date-time` (the interval added
    /// to the current time, as an RFC 3339 date-time), and the core has no clock. Use
    /// [`Capabilities::write_ehlo_at`] with the current time to offer it.
    ///
    /// No enhanced status codes are written on EHLO lines. A buffer of [`MAX_EHLO_RESPONSE`]
    /// bytes is always enough.
    ///
    /// # Errors
    /// [`BufferTooSmall`] if `out` is too short; its contents are then unspecified.
    ///
    /// ```
    /// use smtp_proto::ehlo::{AuthMechanisms, Capabilities};
    ///
    /// let caps = Capabilities {
    ///     starttls: true,
    ///     auth: AuthMechanisms::none().with(AuthMechanisms::PLAIN).with(AuthMechanisms::LOGIN),
    ///     ..Capabilities::default()
    /// };
    /// let mut out = [0u8; 1024];
    /// let n = caps.write_ehlo("mx.example.org", "greets client.example", Some(35_882_577), false, &mut out).unwrap();
    /// assert_eq!(
    ///     &out[..n],
    ///     b"250-mx.example.org greets client.example\r\n\
    ///       250-PIPELINING\r\n\
    ///       250-SIZE 35882577\r\n\
    ///       250-8BITMIME\r\n\
    ///       250-SMTPUTF8\r\n\
    ///       250-CHUNKING\r\n\
    ///       250-DSN\r\n\
    ///       250-ENHANCEDSTATUSCODES\r\n\
    ///       250-STARTTLS\r\n\
    ///       250 AUTH PLAIN LOGIN\r\n"
    /// );
    /// ```
    pub fn write_ehlo(
        &self,
        host: &str,
        greeting: &str,
        size_limit: Option<u64>,
        tls_active: bool,
        out: &mut [u8],
    ) -> Result<usize, BufferTooSmall> {
        self.write_ehlo_at(host, greeting, size_limit, tls_active, None, out)
    }

    /// Like [`Capabilities::write_ehlo`], with the current time (`now`, seconds since the Unix
    /// epoch, from the caller's clock) so that `FUTURERELEASE` can be offered.
    ///
    /// When [`Capabilities::future_release`] is `Some(interval)` and `now` is given, writes
    /// `FUTURERELEASE <interval> <now + interval>` (RFC 4865 §3), the date-time in UTC as
    /// `YYYY-MM-DDTHH:MM:SSZ`, after `MT-PRIORITY`. The interval is capped at
    /// [`FUTURERELEASE_MAX_INTERVAL`] (the ABNF allows nine digits). It is left out when `now` is
    /// `None` or the date would be after year 9999.
    ///
    /// # Errors
    /// [`BufferTooSmall`] if `out` is too short.
    ///
    /// ```
    /// use smtp_proto::ehlo::Capabilities;
    ///
    /// let caps = Capabilities { future_release: Some(604_800), ..Capabilities::none() };
    /// let mut out = [0u8; 128];
    /// let n = caps.write_ehlo_at("mx.example.org", "", None, true, Some(1_700_000_000), &mut out).unwrap();
    /// assert_eq!(&out[..n], b"250-mx.example.org\r\n250 FUTURERELEASE 604800 2023-11-21T22:13:20Z\r\n");
    /// ```
    pub fn write_ehlo_at(
        &self,
        host: &str,
        greeting: &str,
        size_limit: Option<u64>,
        tls_active: bool,
        now: Option<u64>,
        out: &mut [u8],
    ) -> Result<usize, BufferTooSmall> {
        let (items, count) = self.items(size_limit, tls_active, now);
        let mut w = Out { buf: out, len: 0 };
        w.bytes(if count == 0 { b"250 " } else { b"250-" })?;
        // "250-" and CRLF take six of the line's octets.
        let mut budget = crate::reply::MAX_REPLY_LINE - 6;
        w.text(host, &mut budget)?;
        if !greeting.is_empty() && budget > 0 {
            if !host.is_empty() {
                w.text(" ", &mut budget)?;
            }
            w.text(greeting, &mut budget)?;
        }
        w.bytes(b"\r\n")?;
        for (i, item) in items.iter().take(count).enumerate() {
            w.bytes(if i + 1 == count { b"250 " } else { b"250-" })?;
            match *item {
                Item::Word(word) => w.bytes(word.as_bytes())?,
                Item::Size(limit) => {
                    w.bytes(b"SIZE")?;
                    if let Some(limit) = limit {
                        w.bytes(b" ")?;
                        w.num(limit)?;
                    }
                }
                Item::Auth(set) => {
                    w.bytes(b"AUTH")?;
                    for (bit, name) in AuthMechanisms::ALL {
                        if set.contains(bit) {
                            w.bytes(b" ")?;
                            w.bytes(name.as_bytes())?;
                        }
                    }
                }
                Item::FutureRelease(interval, until) => {
                    w.bytes(b"FUTURERELEASE ")?;
                    w.num(interval)?;
                    w.bytes(b" ")?;
                    w.date_time(until)?;
                }
                Item::DeliverBy(min) => {
                    w.bytes(b"DELIVERBY")?;
                    if min > 0 {
                        w.bytes(b" ")?;
                        w.num(min)?;
                    }
                }
            }
            w.bytes(b"\r\n")?;
        }
        Ok(w.len)
    }

    /// Reads the capabilities a server offers from the lines of its EHLO response, and the
    /// `SIZE` limit it announced (`None` when it gave no number).
    ///
    /// `lines` are the response's lines *including the first* (`250-host greeting`), which is
    /// skipped; each may keep its `250-`/`250 ` prefix and line ending (see
    /// [`parse_ehlo_line`]). Unknown keywords and unknown AUTH mechanisms are ignored; every
    /// `AUTH` line counts, including the legacy `AUTH=LOGIN PLAIN` form. `SIZE` sets
    /// [`Capabilities::size`]; a bare `DELIVERBY` gives `deliver_by: Some(0)`.
    ///
    /// ```
    /// use smtp_proto::ehlo::{AuthMechanisms, Capabilities};
    ///
    /// let response = "250-mx.example.org hello\r\n250-SIZE 1000\r\n250-AUTH=LOGIN\r\n250 AUTH PLAIN\r\n";
    /// let (caps, size) = Capabilities::from_ehlo_lines(response.lines());
    /// assert_eq!(size, Some(1000));
    /// assert!(caps.size && !caps.pipelining);
    /// assert_eq!(caps.auth, AuthMechanisms::from_list("PLAIN LOGIN"));
    /// ```
    pub fn from_ehlo_lines<'a>(lines: impl Iterator<Item = &'a str>) -> (Capabilities, Option<u64>) {
        let mut caps = Capabilities::none();
        let mut size = None;
        for line in lines.skip(1) {
            let Some(keyword) = parse_ehlo_line(line) else {
                continue;
            };
            match keyword {
                Keyword::Pipelining => caps.pipelining = true,
                Keyword::Size(limit) => {
                    caps.size = true;
                    size = limit;
                }
                Keyword::EightBitMime => caps.eightbitmime = true,
                Keyword::SmtpUtf8 => caps.smtputf8 = true,
                Keyword::Chunking => caps.chunking = true,
                Keyword::BinaryMime => caps.binarymime = true,
                Keyword::Dsn => caps.dsn = true,
                Keyword::EnhancedStatusCodes => caps.enhanced_status_codes = true,
                Keyword::StartTls => caps.starttls = true,
                Keyword::Auth(list) => caps.auth.0 |= AuthMechanisms::from_list(list).0,
                Keyword::RequireTls => caps.requiretls = true,
                Keyword::MtPriority(_) => caps.mt_priority = true,
                Keyword::FutureRelease { max_interval, .. } => caps.future_release = Some(max_interval),
                Keyword::DeliverBy(min) => caps.deliver_by = Some(min.unwrap_or(0)),
                Keyword::Vrfy => caps.vrfy = true,
                Keyword::Help => caps.help = true,
                Keyword::Unknown { .. } => {}
            }
        }
        (caps, size)
    }
}

/// One keyword line of an EHLO response, as parsed by [`parse_ehlo_line`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Keyword<'a> {
    /// `PIPELINING` (RFC 2920).
    Pipelining,
    /// `SIZE [limit]` (RFC 1870); `Some(0)` means no fixed limit.
    Size(Option<u64>),
    /// `8BITMIME` (RFC 6152).
    EightBitMime,
    /// `SMTPUTF8` (RFC 6531).
    SmtpUtf8,
    /// `CHUNKING` (RFC 3030).
    Chunking,
    /// `BINARYMIME` (RFC 3030).
    BinaryMime,
    /// `DSN` (RFC 3461).
    Dsn,
    /// `ENHANCEDSTATUSCODES` (RFC 2034).
    EnhancedStatusCodes,
    /// `STARTTLS` (RFC 3207).
    StartTls,
    /// `AUTH mech...` or the legacy `AUTH=mech...` (RFC 4954): the mechanism list as written;
    /// see [`AuthMechanisms::from_list`].
    Auth(&'a str),
    /// `REQUIRETLS` (RFC 8689).
    RequireTls,
    /// `MT-PRIORITY [policy]` (RFC 6710).
    MtPriority(Option<&'a str>),
    /// `FUTURERELEASE max-interval max-date-time` (RFC 4865).
    FutureRelease {
        /// Longest hold, in seconds.
        max_interval: u64,
        /// Latest release time, an RFC 3339 date-time as written (not validated further).
        max_datetime: &'a str,
    },
    /// `DELIVERBY [min-by-time]` (RFC 2852).
    DeliverBy(Option<u64>),
    /// `VRFY`.
    Vrfy,
    /// `HELP`.
    Help,
    /// Any other keyword, or a known one whose parameters do not parse (e.g. `SIZE abc`).
    Unknown {
        /// The keyword as written.
        keyword: &'a str,
        /// Everything after the keyword and its separating spaces (may be empty).
        params: &'a str,
    },
}

/// Decimal digits only (no sign, no spaces), without overflow.
fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.bytes().try_fold(0u64, |acc, c| {
        let d = c.checked_sub(b'0').filter(|d| *d < 10)?;
        acc.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// Parses one keyword line of an EHLO response (RFC 5321 §4.1.1.1):
///
/// ```text
/// ehlo-line    = ehlo-keyword *( SP ehlo-param )
/// ehlo-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
/// ```
///
/// The line may carry its reply prefix (`250-` or `250 `) and its line ending; keywords match
/// case-insensitively. Known keywords with unparsable parameters come back as
/// [`Keyword::Unknown`]. Returns `None` for an empty line or one that does not start with a
/// keyword.
///
/// Do not pass the first line of the response (the server's name and greeting); it would be
/// read as a keyword.
///
/// ```
/// use smtp_proto::ehlo::{parse_ehlo_line, Keyword};
/// assert_eq!(parse_ehlo_line("250-SIZE 35882577\r\n"), Some(Keyword::Size(Some(35_882_577))));
/// assert_eq!(parse_ehlo_line("250 auth=LOGIN PLAIN"), Some(Keyword::Auth("LOGIN PLAIN")));
/// assert_eq!(
///     parse_ehlo_line("X-EXPS GSSAPI NTLM"),
///     Some(Keyword::Unknown { keyword: "X-EXPS", params: "GSSAPI NTLM" })
/// );
/// ```
pub fn parse_ehlo_line(line: &str) -> Option<Keyword<'_>> {
    let mut line = line.trim_end_matches(['\r', '\n']);
    let b = line.as_bytes();
    if b.len() >= 4 && b[..3].iter().all(u8::is_ascii_digit) && matches!(b[3], b'-' | b' ') {
        line = &line[4..];
    }
    let line = line.trim_matches([' ', '\t']);
    if line.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("AUTH=")) {
        return Some(Keyword::Auth(line[5..].trim_start_matches([' ', '\t'])));
    }
    let (keyword, params) = match line.find([' ', '\t']) {
        Some(i) => (&line[..i], line[i..].trim_start_matches([' ', '\t'])),
        None => (line, ""),
    };
    let kb = keyword.as_bytes();
    if !kb.first().is_some_and(u8::is_ascii_alphanumeric) || !kb.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
    {
        return None;
    }
    let is = |name: &str| keyword.eq_ignore_ascii_case(name);
    let unknown = Keyword::Unknown { keyword, params };
    let optional_number = |params: &str| match params {
        "" => Some(None),
        p => parse_u64(p).map(Some),
    };
    Some(if is("PIPELINING") {
        Keyword::Pipelining
    } else if is("SIZE") {
        optional_number(params).map_or(unknown, Keyword::Size)
    } else if is("8BITMIME") {
        Keyword::EightBitMime
    } else if is("SMTPUTF8") {
        Keyword::SmtpUtf8
    } else if is("CHUNKING") {
        Keyword::Chunking
    } else if is("BINARYMIME") {
        Keyword::BinaryMime
    } else if is("DSN") {
        Keyword::Dsn
    } else if is("ENHANCEDSTATUSCODES") {
        Keyword::EnhancedStatusCodes
    } else if is("STARTTLS") {
        Keyword::StartTls
    } else if is("AUTH") {
        Keyword::Auth(params)
    } else if is("REQUIRETLS") {
        Keyword::RequireTls
    } else if is("MT-PRIORITY") {
        Keyword::MtPriority(Some(params).filter(|p| !p.is_empty()))
    } else if is("FUTURERELEASE") {
        let mut parts = params.split([' ', '\t']).filter(|p| !p.is_empty());
        match (parts.next().and_then(parse_u64), parts.next(), parts.next()) {
            (Some(max_interval), Some(max_datetime), None) => Keyword::FutureRelease { max_interval, max_datetime },
            _ => unknown,
        }
    } else if is("DELIVERBY") {
        optional_number(params).map_or(unknown, Keyword::DeliverBy)
    } else if is("VRFY") {
        Keyword::Vrfy
    } else if is("HELP") {
        Keyword::Help
    } else {
        unknown
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::string::String;
    use std::vec::Vec;

    fn ehlo(caps: &Capabilities, host: &str, greeting: &str, size: Option<u64>, tls: bool) -> String {
        let mut out = [0u8; MAX_EHLO_RESPONSE];
        let n = caps.write_ehlo(host, greeting, size, tls, &mut out).unwrap();
        String::from_utf8(out[..n].to_vec()).unwrap()
    }

    fn everything() -> Capabilities {
        Capabilities {
            pipelining: true,
            size: true,
            eightbitmime: true,
            smtputf8: true,
            chunking: true,
            binarymime: true,
            dsn: true,
            enhanced_status_codes: true,
            starttls: true,
            auth: AuthMechanisms(0x7F),
            requiretls: true,
            mt_priority: true,
            future_release: Some(FUTURERELEASE_MAX_INTERVAL),
            deliver_by: Some(u64::MAX),
            vrfy: true,
            help: true,
        }
    }

    #[test]
    fn default_caps_exact_bytes() {
        assert_eq!(
            ehlo(&Capabilities::default(), "mx.example.org", "Hello", Some(10_485_760), false),
            "250-mx.example.org Hello\r\n250-PIPELINING\r\n250-SIZE 10485760\r\n250-8BITMIME\r\n\
             250-SMTPUTF8\r\n250-CHUNKING\r\n250-DSN\r\n250 ENHANCEDSTATUSCODES\r\n"
        );
    }

    #[test]
    fn no_keywords_single_line() {
        let none = Capabilities::none();
        assert_eq!(ehlo(&none, "mx.example.org", "hi there", None, false), "250 mx.example.org hi there\r\n");
        assert_eq!(ehlo(&none, "mx.example.org", "", None, false), "250 mx.example.org\r\n");
        // STARTTLS under TLS and REQUIRETLS without it vanish; so does a lone BINARYMIME.
        let hidden = Capabilities { starttls: true, binarymime: true, ..Capabilities::none() };
        assert_eq!(ehlo(&hidden, "h", "", None, true), "250 h\r\n");
        let hidden = Capabilities { requiretls: true, ..Capabilities::none() };
        assert_eq!(ehlo(&hidden, "h", "", None, false), "250 h\r\n");
    }

    #[test]
    fn everything_exact_bytes() {
        let caps = everything();
        assert_eq!(
            ehlo(&caps, "mx", "", None, false),
            "250-mx\r\n250-PIPELINING\r\n250-SIZE\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n\
             250-CHUNKING\r\n250-BINARYMIME\r\n250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n\
             250-STARTTLS\r\n\
             250-AUTH PLAIN LOGIN XOAUTH2 OAUTHBEARER SCRAM-SHA-256 EXTERNAL CRAM-MD5\r\n\
             250-MT-PRIORITY\r\n250-DELIVERBY 18446744073709551615\r\n250-VRFY\r\n250 HELP\r\n"
        );
        let mut out = [0u8; MAX_EHLO_RESPONSE];
        let n = caps.write_ehlo_at("mx", "", Some(0), true, Some(0), &mut out).unwrap();
        assert_eq!(
            core::str::from_utf8(&out[..n]).unwrap(),
            "250-mx\r\n250-PIPELINING\r\n250-SIZE 0\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n\
             250-CHUNKING\r\n250-BINARYMIME\r\n250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n\
             250-AUTH PLAIN LOGIN XOAUTH2 OAUTHBEARER SCRAM-SHA-256 EXTERNAL CRAM-MD5\r\n\
             250-REQUIRETLS\r\n250-MT-PRIORITY\r\n250-FUTURERELEASE 999999999 2001-09-09T01:46:39Z\r\n\
             250-DELIVERBY 18446744073709551615\r\n250-VRFY\r\n250 HELP\r\n"
        );
    }

    #[test]
    fn deliverby_and_futurerelease() {
        let caps = Capabilities { deliver_by: Some(0), ..Capabilities::none() };
        assert_eq!(ehlo(&caps, "h", "", None, false), "250-h\r\n250 DELIVERBY\r\n");
        let caps = Capabilities { deliver_by: Some(240), ..Capabilities::none() };
        assert_eq!(ehlo(&caps, "h", "", None, false), "250-h\r\n250 DELIVERBY 240\r\n");
        let caps = Capabilities { future_release: Some(86_400), ..Capabilities::none() };
        // Without a clock it cannot be written.
        assert_eq!(ehlo(&caps, "h", "", None, false), "250 h\r\n");
        let at = |now| {
            let mut out = [0u8; 128];
            let n = caps.write_ehlo_at("h", "", None, false, Some(now), &mut out).unwrap();
            String::from_utf8(out[..n].to_vec()).unwrap()
        };
        // 2000-02-28 + 1 day: the leap day of a year divisible by 400.
        assert_eq!(at(951_696_000), "250-h\r\n250 FUTURERELEASE 86400 2000-02-29T00:00:00Z\r\n");
        assert_eq!(at(1_709_164_799), "250-h\r\n250 FUTURERELEASE 86400 2024-02-29T23:59:59Z\r\n");
        assert_eq!(at(4_107_456_000), "250-h\r\n250 FUTURERELEASE 86400 2100-03-01T00:00:00Z\r\n");
        assert_eq!(at(LAST_RFC3339_SECOND - 86_400), "250-h\r\n250 FUTURERELEASE 86400 9999-12-31T23:59:59Z\r\n");
        assert_eq!(at(LAST_RFC3339_SECOND), "250 h\r\n");
        assert_eq!(at(u64::MAX), "250 h\r\n");
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(2_932_896), (9999, 12, 31));
    }

    #[test]
    fn host_and_greeting_sanitised_and_capped() {
        let none = Capabilities::none();
        assert_eq!(
            ehlo(&none, "mx\r\n250 x", "hi\0\t\u{7f}\u{85}\u{e9}", None, false),
            "250 mx  250 x hi    \u{e9}\r\n"
        );
        let long = "\u{e9}".repeat(400); // 800 bytes
        let out = ehlo(&Capabilities::default(), "mx.example.org", &long, None, false);
        let first = out.split("\r\n").next().unwrap();
        assert!(first.len() + 2 <= crate::reply::MAX_REPLY_LINE);
        assert_eq!(first.len(), 4 + 14 + 1 + 490); // whole characters only
        assert!(out.ends_with("250 ENHANCEDSTATUSCODES\r\n"));
        let long_host = "h".repeat(600);
        let out = ehlo(&none, &long_host, "greeting", None, false);
        assert_eq!(out.len(), crate::reply::MAX_REPLY_LINE);
    }

    #[test]
    fn buffer_too_small_everywhere() {
        let caps = everything();
        let mut full = [0u8; MAX_EHLO_RESPONSE];
        let host = "h".repeat(600);
        let len = caps.write_ehlo_at(&host, "g", Some(u64::MAX), false, Some(0), &mut full).unwrap();
        assert!(len <= MAX_EHLO_RESPONSE);
        for short in 0..len {
            let mut out = std::vec![0u8; short];
            assert_eq!(caps.write_ehlo_at(&host, "g", Some(u64::MAX), false, Some(0), &mut out), Err(BufferTooSmall));
        }
    }

    #[test]
    fn parse_lines() {
        use Keyword as K;
        let cases: [(&str, Option<Keyword<'_>>); 22] = [
            ("250-PIPELINING\r\n", Some(K::Pipelining)),
            ("pipelining", Some(K::Pipelining)),
            ("250 SIZE", Some(K::Size(None))),
            ("SIZE 0", Some(K::Size(Some(0)))),
            ("SIZE  52428800 ", Some(K::Size(Some(52_428_800)))),
            ("SIZE +5", Some(K::Unknown { keyword: "SIZE", params: "+5" })),
            ("SIZE 99999999999999999999", Some(K::Unknown { keyword: "SIZE", params: "99999999999999999999" })),
            ("250-8bitmime", Some(K::EightBitMime)),
            ("250-AUTH PLAIN LOGIN", Some(K::Auth("PLAIN LOGIN"))),
            ("250-AUTH=PLAIN LOGIN", Some(K::Auth("PLAIN LOGIN"))),
            ("250-AUTH", Some(K::Auth(""))),
            ("MT-PRIORITY MIXER", Some(K::MtPriority(Some("MIXER")))),
            ("MT-PRIORITY", Some(K::MtPriority(None))),
            (
                "FUTURERELEASE 604800 2008-01-01T00:00:00Z",
                Some(K::FutureRelease { max_interval: 604_800, max_datetime: "2008-01-01T00:00:00Z" }),
            ),
            ("FUTURERELEASE 604800", Some(K::Unknown { keyword: "FUTURERELEASE", params: "604800" })),
            ("DELIVERBY", Some(K::DeliverBy(None))),
            ("DELIVERBY 240", Some(K::DeliverBy(Some(240)))),
            ("X-LINK2STATE", Some(K::Unknown { keyword: "X-LINK2STATE", params: "" })),
            ("250-", None),
            ("", None),
            ("-FOO", None),
            ("250-ST@RTTLS", None),
        ];
        for (line, want) in cases {
            assert_eq!(parse_ehlo_line(line), want, "{line:?}");
        }
    }

    #[test]
    fn from_lines_real_world() {
        // The shape of a Postfix submission service's answer.
        let response = "250-smtp.example.com\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n\
                        250-ETRN\r\n250-AUTH PLAIN LOGIN\r\n250-AUTH=PLAIN LOGIN\r\n\
                        250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250 CHUNKING\r\n";
        let (caps, size) = Capabilities::from_ehlo_lines(response.split("\r\n"));
        assert_eq!(size, Some(10_240_000));
        assert_eq!(
            caps,
            Capabilities {
                smtputf8: false,
                vrfy: true,
                auth: AuthMechanisms::from_list("LOGIN PLAIN"),
                ..Capabilities::default()
            }
        );
        // The greeting line is never read as a keyword.
        let (caps, size) = Capabilities::from_ehlo_lines(["250 STARTTLS"].into_iter());
        assert_eq!((caps, size), (Capabilities::none(), None));
    }

    #[test]
    fn auth_from_list() {
        assert_eq!(AuthMechanisms::from_list(""), AuthMechanisms::none());
        assert_eq!(
            AuthMechanisms::from_list("scram-sha-256\tXOAUTH2 GSSAPI"),
            AuthMechanisms::none().with(AuthMechanisms::SCRAM_SHA_256).with(AuthMechanisms::XOAUTH2)
        );
    }

    fn arb_caps() -> impl Strategy<Value = Capabilities> {
        (
            any::<[bool; 13]>(),
            0u16..0x80,
            proptest::option::of(0u64..=FUTURERELEASE_MAX_INTERVAL),
            proptest::option::of(any::<u64>()),
        )
            .prop_map(|(b, auth, future_release, deliver_by)| Capabilities {
                pipelining: b[0],
                size: b[1],
                eightbitmime: b[2],
                smtputf8: b[3],
                chunking: b[4],
                binarymime: b[5],
                dsn: b[6],
                enhanced_status_codes: b[7],
                starttls: b[8],
                auth: AuthMechanisms(auth),
                requiretls: b[9],
                mt_priority: b[10],
                future_release,
                deliver_by,
                vrfy: b[11],
                help: b[12],
            })
    }

    proptest! {
        #[test]
        fn write_then_parse_roundtrip(
            caps in arb_caps(),
            size_limit in proptest::option::of(any::<u64>()),
            tls in any::<bool>(),
            now in 0u64..200_000_000_000,
            host in "[a-z0-9.-]{1,40}",
            greeting in "[ -~]{0,40}",
        ) {
            let mut out = [0u8; MAX_EHLO_RESPONSE];
            let n = caps.write_ehlo_at(&host, &greeting, size_limit, tls, Some(now), &mut out).unwrap();
            let text = core::str::from_utf8(&out[..n]).unwrap();
            prop_assert!(text.ends_with("\r\n"));
            let lines: Vec<&str> = text.strip_suffix("\r\n").unwrap().split("\r\n").collect();
            for (i, line) in lines.iter().enumerate() {
                let sep = if i + 1 == lines.len() { "250 " } else { "250-" };
                prop_assert!(line.starts_with(sep), "{:?}", line);
                prop_assert!(line.len() + 2 <= crate::reply::MAX_REPLY_LINE);
            }
            let (parsed, parsed_size) = Capabilities::from_ehlo_lines(lines.iter().copied());
            let expected = Capabilities {
                binarymime: caps.binarymime && caps.chunking,
                starttls: caps.starttls && !tls,
                requiretls: caps.requiretls && tls,
                ..caps
            };
            prop_assert_eq!(parsed, expected);
            prop_assert_eq!(parsed_size, if caps.size { size_limit } else { None });
        }

        #[test]
        fn write_never_panics(
            caps in arb_caps(),
            host in any::<String>(),
            greeting in any::<String>(),
            cap in 0usize..700,
            now in proptest::option::of(any::<u64>()),
        ) {
            let mut out = std::vec![0u8; cap];
            if let Ok(n) = caps.write_ehlo_at(&host, &greeting, Some(1), false, now, &mut out) {
                let text = core::str::from_utf8(&out[..n]).unwrap();
                let first = text.split("\r\n").next().unwrap();
                prop_assert!(first.len() + 2 <= crate::reply::MAX_REPLY_LINE);
                prop_assert!(!first.chars().any(char::is_control));
            }
        }

        #[test]
        fn parse_never_panics(line in any::<String>()) {
            let _ = parse_ehlo_line(&line);
        }
    }
}
