//! Verdicts on received mail: SPF at `MAIL FROM`, DKIM and DMARC at the end of DATA, the
//! `Authentication-Results:` header (RFC 8601) and what to do with the message.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::net::IpAddr;
use std::time::Duration;

use mail_auth::common::crypto::{HashAlgorithm, HashContext, HashImpl, Sha1, Sha256};
use mail_auth::dkim::canonicalize::BodyHasher;

use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::dmarc::Policy;
use mail_auth::hickory_resolver::proto::op::ResponseCode;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimOutput, DkimResult, DmarcOutput, DmarcResult, Error,
    MessageAuthenticator, SpfOutput, SpfResult,
};

use super::dns::{Dns, DnsError};
use crate::handler::Session;
use crate::mta::stream::{read_header_block, MAX_HEADER_BLOCK};

/// Bound on all the lookups for one check (SPF at MAIL, or DKIM + DMARC at the end of DATA);
/// past it the check is a temporary failure.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// The SPF result of a transaction, computed at `MAIL FROM` and kept for the end of DATA.
#[derive(Debug, Clone)]
pub struct SpfCheck {
    output: SpfOutput,
    ip: IpAddr,
    helo: String,
    mail_from: String,
    temporary: Option<String>,
}

impl SpfCheck {
    /// The SPF result (`TempError` also when a "none" turned out to be a DNS failure).
    pub fn result(&self) -> SpfResult {
        if self.temporary.is_some() {
            SpfResult::TempError
        } else {
            self.output.result()
        }
    }

    /// Why the result is temporary, when it is.
    pub fn temporary(&self) -> Option<&str> {
        self.temporary.as_deref()
    }

    /// The domain whose policy was checked.
    pub fn domain(&self) -> &str {
        self.output.domain()
    }

    /// Whether SPF checked the HELO name (a null sender and a HELO domain) rather than the
    /// MAIL FROM address.
    pub fn helo_identity(&self) -> bool {
        !self.mail_from.contains('@') && is_domain(self.helo.trim_end_matches('.'))
    }
}

/// What to do with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Deliver into the inbox (`new/`).
    Inbox,
    /// Deliver into the junk folder (`.Junk/new/`): DMARC failed with `p=quarantine`.
    Junk,
    /// Refuse with `550 5.7.1`: DMARC failed with `p=reject`.
    Reject,
    /// A lookup failed: answer `451` and store nothing, the client should try again later.
    /// The enhanced status code names the check whose lookup failed (RFC 7372, RFC 3463):
    /// [`Lookup::Spf`] `4.7.24`, [`Lookup::DkimKey`] `4.7.5`, [`Lookup::Dmarc`] `4.7.0`
    /// (see [`Lookup::status`]).
    TempFail(Lookup),
}

/// The check whose DNS lookup failed (timeout, `SERVFAIL`, `REFUSED`), for the reply's
/// enhanced status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// SPF: the record of the MAIL FROM (or HELO) domain, its includes and mechanisms.
    Spf,
    /// DKIM: the public key record (`selector._domainkey.domain`) of a signature.
    DkimKey,
    /// DMARC: the From domain's policy record; also the DKIM and DMARC checks as a whole
    /// when together they exceeded [`CHECK_TIMEOUT`] (which lookup was slow is unknown).
    Dmarc,
}

impl Lookup {
    /// The enhanced status code of the `451` reply, always `4.7.x` (RFC 3463 §3.8, security or
    /// policy status: the message waits on an authentication check, not on routing):
    ///
    /// - SPF: `4.7.24` "SPF validation error" (RFC 7372 §3.2), the code RFC 7372 gives for an
    ///   SPF evaluation that ended in an error rather than a verdict, here `temperror`;
    ///   RFC 7372 registers it in place of the `4.4.3` of RFC 7208 §8.6.
    /// - DKIM key: `4.7.5` "Cryptographic failure" (RFC 3463): the signature could not be
    ///   validated because the key was not available. RFC 7372's DKIM codes `X.7.20`-`X.7.22`
    ///   say that no signature passed, which a lookup failure has not shown.
    /// - DMARC (and a timeout of DKIM + DMARC): `4.7.0` "Other or undefined security status"
    ///   (RFC 3463): neither RFC 7489 nor RFC 7372 has a code for a DMARC evaluation error,
    ///   and `X.7.26` ("multiple authentication checks failed") would claim a failure.
    pub fn status(self) -> (u8, u16, u16) {
        match self {
            Lookup::Spf => (4, 7, 24),
            Lookup::DkimKey => (4, 7, 5),
            Lookup::Dmarc => (4, 7, 0),
        }
    }
}

/// The outcome of checking a message.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// What to do with it.
    pub action: Action,
    /// The `Authentication-Results:` header field to prepend, ending in CRLF.
    pub header: String,
    /// One line for logs and replies (why it was refused or junked, or the DNS failure).
    pub reason: String,
    /// The DMARC evaluation, for the aggregate report to the From domain
    /// ([`crate::mta::reports`]); `None` without a DMARC record or a verdict.
    pub evaluation: Option<crate::mta::reports::Evaluation>,
}

/// Where the checks apply: every client but the authenticated ones and those from the
/// trusted networks (which are submissions from this host or its network, like Postfix's
/// `mynetworks`).
#[derive(Debug, Clone)]
pub struct MailAuthPolicy {
    /// The checker.
    pub verifier: Verifier,
    /// Networks whose clients are not checked, as `(address, prefix length)`.
    pub trusted: Vec<(IpAddr, u8)>,
}

impl MailAuthPolicy {
    /// Whether the checks apply to this session.
    pub fn applies_to(&self, session: &Session) -> bool {
        let ip = session.peer.ip().to_canonical();
        session.user.is_none() && !self.trusted.iter().any(|&(net, len)| in_network(ip, net, len))
    }
}

/// Parses `192.0.2.0/24`, `2001:db8::/32` or a bare address (a /32 or /128).
pub fn parse_network(s: &str) -> Result<(IpAddr, u8), String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| format!("{s:?}: not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l.parse::<u8>().ok().filter(|&l| l <= max).ok_or_else(|| format!("{s:?}: bad prefix length"))?,
        None => max,
    };
    Ok((ip, len))
}

/// Whether `ip` is in the network `net/len`.
pub(crate) fn in_network(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    let (a, b, bits) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)) << 96, u128::from(u32::from(b)) << 96, len),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), len),
        _ => return false,
    };
    let mask = if bits == 0 { 0 } else { u128::MAX << (128 - u32::from(bits.min(128))) };
    a & mask == b & mask
}

/// Runs mail-auth's SPF, DKIM and DMARC checks on the shared [`Dns`].
#[derive(Clone)]
pub struct Verifier {
    dns: Dns,
    auth: MessageAuthenticator,
    hostname: String,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier").field("dns", &self.dns).field("hostname", &self.hostname).finish()
    }
}

/// A lookup error mail-auth took for "no record" although the answer is unknown (hickory
/// reports SERVFAIL/REFUSED as "no records found").
fn dns_failure(e: &Error) -> bool {
    match e {
        Error::Dns(mail_auth::DnsError::Resolver(_)) => true,
        Error::Dns(mail_auth::DnsError::RecordNotFound(code)) => {
            !matches!(*code, ResponseCode::NXDomain | ResponseCode::NoError)
        }
        _ => false,
    }
}

fn dkim_temporary(o: &DkimOutput<'_>) -> Option<String> {
    match o.result() {
        DkimResult::TempError(e) => Some(e.to_string()),
        DkimResult::PermError(e) | DkimResult::Fail(e) | DkimResult::Neutral(e) if dns_failure(e) => {
            Some(e.to_string())
        }
        _ => None,
    }
}

/// The DMARC record lookup (the tree walk of RFC 9989) failed: mail-auth then reports its
/// error as both the SPF and the DKIM alignment result, and no record.
fn dmarc_walk_failed(dmarc: &DmarcOutput) -> Option<String> {
    if dmarc.dmarc_record().is_some() || dmarc.domain().is_empty() {
        return None;
    }
    match (dmarc.spf_result(), dmarc.dkim_result()) {
        (DmarcResult::TempError(e), DmarcResult::TempError(_)) => {
            Some(format!("DMARC lookup for {}: {e}", dmarc.domain()))
        }
        _ => None,
    }
}

fn dmarc_temporary(r: &DmarcResult) -> Option<String> {
    match r {
        DmarcResult::TempError(e) => Some(e.to_string()),
        DmarcResult::PermError(e) | DmarcResult::Fail(e) if dns_failure(e) => Some(e.to_string()),
        _ => None,
    }
}

/// A DKIM result as the aggregate report writes it (RFC 7489 appendix C `DKIMResultType`).
fn dkim_word(r: &DkimResult) -> &'static str {
    match r {
        DkimResult::Pass => "pass",
        DkimResult::Neutral(_) => "neutral",
        DkimResult::Fail(_) => "fail",
        DkimResult::PermError(_) => "permerror",
        DkimResult::TempError(_) => "temperror",
        DkimResult::None => "none",
    }
}

fn is_domain(s: &str) -> bool {
    !s.is_empty() && !s.starts_with('[') && s.parse::<IpAddr>().is_err() && s.contains('.')
}

impl Verifier {
    /// A verifier on `dns`; `hostname` is the authserv-id of the `Authentication-Results:`
    /// header and SPF's receiving host.
    pub fn new(dns: Dns, hostname: impl Into<String>) -> Self {
        let auth = MessageAuthenticator(dns.resolver().clone());
        Self { dns, auth, hostname: hostname.into() }
    }

    /// The DNS it uses.
    pub fn dns(&self) -> &Dns {
        &self.dns
    }

    /// SPF (RFC 7208) for a client at `ip` that said `helo` and `MAIL FROM:<mail_from>`
    /// (`""` for `<>`: then the HELO identity is checked).
    pub fn check_spf(&self, ip: IpAddr, helo: &str, mail_from: &str) -> SpfCheck {
        let ip = ip.to_canonical();
        let helo_domain = helo.trim_end_matches('.');
        let mut check = SpfCheck {
            output: SpfOutput::new(String::new()),
            ip,
            helo: helo.to_owned(),
            mail_from: mail_from.to_owned(),
            temporary: None,
        };
        let params = if mail_from.contains('@') {
            SpfParameters::verify_mail_from(ip, helo_domain, &self.hostname, mail_from)
        } else if check.helo_identity() {
            SpfParameters::verify_ehlo(ip, helo_domain, &self.hostname)
        } else {
            // No domain to check (null sender and an address literal): SPF none.
            return check;
        };
        let output =
            self.dns.block_on(async { tokio::time::timeout(CHECK_TIMEOUT, self.auth.verify_spf(params)).await });
        match output {
            Ok(o) => check.output = o,
            Err(_) => check.temporary = Some("SPF check timed out".into()),
        }
        if check.output.result() == SpfResult::TempError && check.temporary.is_none() {
            check.temporary = Some(format!("SPF lookup for {} failed", check.output.domain()));
        }
        if check.output.result() == SpfResult::None && !check.output.domain().is_empty() {
            if let Err(DnsError::Temporary(e)) = self.dns.txt(check.output.domain()) {
                check.temporary = Some(format!("SPF lookup for {}: {e}", check.output.domain()));
            }
        }
        check
    }

    /// DKIM (RFC 6376) and DMARC (RFC 7489, with SPF and DKIM alignment) for a whole message
    /// received in the transaction of `spf`; the verdict applies the From domain's policy.
    ///
    /// Alignment in relaxed mode compares domains exactly (no public suffix list): a
    /// subdomain's signature does not align with its parent domain (stricter, never laxer).
    pub fn verify(&self, spf: &SpfCheck, message: &[u8]) -> Verdict {
        let mut reader = message;
        self.verify_spooled(spf, &mut reader).unwrap_or_else(|e| Verdict {
            action: Action::Junk,
            header: String::new(),
            reason: format!("message not readable: {e}"),
            evaluation: None,
        })
    }

    /// [`Verifier::verify`] of the message `content` reads (a spooled file), without holding
    /// it: the header block is read into memory (at most [`MAX_HEADER_BLOCK`]), the body is
    /// streamed through the hashes its DKIM (and ARC) signatures need. A header block past the
    /// limit is checked as far as it was read, and its signatures' body hashes are not
    /// computed (they fail). Errors: reading `content` failed.
    pub fn verify_spooled(&self, spf: &SpfCheck, content: &mut dyn Read) -> io::Result<Verdict> {
        let mut reader = BufReader::with_capacity(64 * 1024, content);
        let block = read_header_block(&mut reader, MAX_HEADER_BLOCK)?;
        let mut msg = AuthenticatedMessage::parse(&block.bytes);
        if let Some(msg) = msg.as_mut() {
            if block.cut {
                tracing::warn!(limit = MAX_HEADER_BLOCK, "header block too long: its DKIM signatures cannot pass");
                for (_, _, _, bh) in &mut msg.body_hashes {
                    bh.clear();
                }
            } else {
                body_hashes(msg, &mut reader)?;
            }
        }
        Ok(self.verify_parsed(spf, msg))
    }

    /// The checks on a parsed message (`None`: its header could not be parsed).
    fn verify_parsed(&self, spf: &SpfCheck, msg: Option<AuthenticatedMessage<'_>>) -> Verdict {
        let helo_domain = spf.helo.trim_end_matches('.');
        let results = AuthenticationResults::new(&self.hostname);
        // RFC 8601 §2.7.2: the property names the identity SPF checked, the HELO name for a
        // null sender (RFC 7208 §2.4) and otherwise the MAIL FROM address.
        let results = if spf.helo_identity() {
            results.with_spf_ehlo_result(&spf.output, spf.ip, helo_domain)
        } else {
            results.with_spf_mailfrom_result(&spf.output, spf.ip, &spf.mail_from, &spf.helo)
        };
        let mut head = results.to_string();
        if let Some(t) = &spf.temporary {
            return Verdict {
                action: Action::TempFail(Lookup::Spf),
                header: String::new(),
                reason: t.clone(),
                evaluation: None,
            };
        }
        let Some(msg) = msg else {
            head.push_str(";\r\n\tdkim=none;\r\n\tdmarc=permerror (message header not parsable)");
            return Verdict {
                action: Action::Junk,
                header: format!("Authentication-Results: {head}\r\n"),
                reason: "message header not parsable".into(),
                evaluation: None,
            };
        };
        let spf_domain = if spf.mail_from.contains('@') { spf.output.domain() } else { helo_domain };
        let checked = self.dns.block_on(async {
            tokio::time::timeout(CHECK_TIMEOUT, async {
                let dkim = self.auth.verify_dkim(&msg).await;
                let dmarc = self.auth.verify_dmarc(DmarcParameters::new(&msg, &dkim, spf_domain, &spf.output)).await;
                (dkim, dmarc)
            })
            .await
        });
        let Ok((dkim, dmarc)) = checked else {
            return Verdict {
                action: Action::TempFail(Lookup::Dmarc),
                header: String::new(),
                reason: "DKIM/DMARC check timed out".into(),
                evaluation: None,
            };
        };
        let temporary = dkim
            .iter()
            .find_map(|o| dkim_temporary(o).map(|t| (Lookup::DkimKey, t)))
            .or_else(|| dmarc_walk_failed(&dmarc).map(|t| (Lookup::Dmarc, t)))
            .or_else(|| dmarc_temporary(dmarc.spf_result()).map(|t| (Lookup::Spf, t)))
            .or_else(|| dmarc_temporary(dmarc.dkim_result()).map(|t| (Lookup::DkimKey, t)))
            .or_else(|| self.dmarc_record_unknown(&dmarc).map(|t| (Lookup::Dmarc, t)));
        if let Some((lookup, t)) = temporary {
            return Verdict { action: Action::TempFail(lookup), header: String::new(), reason: t, evaluation: None };
        }

        if dkim.is_empty() {
            head.push_str(";\r\n\tdkim=none");
        } else {
            head.push_str(&AuthenticationResults::new("").with_dkim_results(&dkim, msg.from()).to_string());
        }
        let failed = dmarc.dmarc_record().is_some()
            && *dmarc.spf_result() != DmarcResult::Pass
            && *dmarc.dkim_result() != DmarcResult::Pass;
        if dmarc.domain().is_empty() {
            head.push_str(";\r\n\tdmarc=none");
        } else if failed && *dmarc.spf_result() == DmarcResult::None && *dmarc.dkim_result() == DmarcResult::None {
            // mail-auth evaluates alignment only when SPF or DKIM passed, and then reports
            // "none"; with a record and nothing that passed, DMARC failed (RFC 7489 §6.6.2).
            head.push_str(&format!(
                ";\r\n\tdmarc=fail (no SPF or DKIM pass) header.from={} policy.dmarc={}",
                dmarc.domain(),
                dmarc.policy()
            ));
        } else {
            head.push_str(&AuthenticationResults::new("").with_dmarc_result(&dmarc).to_string());
        }
        let header = format!("Authentication-Results: {head}\r\n");
        let (action, reason) = match (failed, dmarc.policy()) {
            (true, Policy::Reject) => {
                (Action::Reject, format!("DMARC policy of {} is to reject failing mail", dmarc.domain()))
            }
            (true, Policy::Quarantine) => (Action::Junk, format!("DMARC failed for {} (p=quarantine)", dmarc.domain())),
            (true, _) => (Action::Inbox, format!("DMARC failed for {} (p=none)", dmarc.domain())),
            (false, _) => (Action::Inbox, "ok".to_owned()),
        };
        let evaluation = dmarc.dmarc_record().map(|_| {
            let disposition = match action {
                Action::Reject => "reject",
                Action::Junk => "quarantine",
                _ => "none",
            };
            let spf_result = spf.output.result().to_string().to_ascii_lowercase();
            crate::mta::reports::evaluation(crate::mta::reports::Observed {
                ip: spf.ip,
                spf_domain,
                spf_scope: if spf.helo_identity() { "helo" } else { "mfrom" },
                spf: &spf_result,
                dkim: dkim
                    .iter()
                    .filter_map(|o| Some((o.signature()?.d.clone(), o.signature()?.s.clone(), dkim_word(o.result()))))
                    .collect(),
                header_from: dmarc.domain(),
                dkim_aligned: *dmarc.dkim_result() == DmarcResult::Pass,
                spf_aligned: *dmarc.spf_result() == DmarcResult::Pass,
                disposition,
                // RFC 9989 has no `ri` (mail-auth 0.13 reads none): the sender looks it up.
                ri: None,
            })
        });
        Verdict { action, header, reason, evaluation }
    }

    /// mail-auth found no DMARC record for the From domain: was that a DNS failure?
    fn dmarc_record_unknown(&self, dmarc: &DmarcOutput) -> Option<String> {
        if dmarc.dmarc_record().is_some() || dmarc.domain().is_empty() {
            return None;
        }
        match self.dns.txt(&format!("_dmarc.{}", dmarc.domain())) {
            Err(DnsError::Temporary(e)) => Some(format!("DMARC lookup for {}: {e}", dmarc.domain())),
            _ => None,
        }
    }
}

/// The body hash of one DKIM or ARC signature, computed as the body streams.
enum Hasher {
    Sha1(BodyHasher<<Sha1 as HashImpl>::Context>),
    Sha256(BodyHasher<<Sha256 as HashImpl>::Context>),
}

/// Computes the body hashes `msg` (parsed from the header block alone) asks for over the
/// body `reader` gives, one read of it for all of them.
fn body_hashes(msg: &mut AuthenticatedMessage<'_>, reader: &mut impl BufRead) -> io::Result<()> {
    if msg.body_hashes.is_empty() {
        return Ok(());
    }
    let mut hashers: Vec<Hasher> = msg
        .body_hashes
        .iter()
        .map(|(cb, ha, l, _)| match ha {
            HashAlgorithm::Sha1 => Hasher::Sha1(BodyHasher::new(Sha1::hasher(), *cb, *l)),
            HashAlgorithm::Sha256 => Hasher::Sha256(BodyHasher::new(Sha256::hasher(), *cb, *l)),
        })
        .collect();
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        for h in &mut hashers {
            match h {
                Hasher::Sha1(h) => h.write(chunk),
                Hasher::Sha256(h) => h.write(chunk),
            }
        }
        let n = chunk.len();
        reader.consume(n);
    }
    for ((_, _, _, bh), h) in msg.body_hashes.iter_mut().zip(hashers) {
        *bh = match h {
            Hasher::Sha1(h) => h.finish().0.complete().as_ref().to_vec(),
            Hasher::Sha256(h) => h.finish().0.complete().as_ref().to_vec(),
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body hashes of `message` as mail-auth computes them over the whole message, and as
    /// [`verify_spooled`](Verifier::verify_spooled) computes them from the header block and
    /// the streamed body.
    fn both(message: &[u8]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let whole = AuthenticatedMessage::parse(message).unwrap();
        let mut reader = BufReader::with_capacity(7, message);
        let block = read_header_block(&mut reader, MAX_HEADER_BLOCK).unwrap();
        let mut streamed = AuthenticatedMessage::parse(&block.bytes).unwrap();
        body_hashes(&mut streamed, &mut reader).unwrap();
        let hashes = |m: &AuthenticatedMessage<'_>| m.body_hashes.iter().map(|h| h.3.clone()).collect();
        (hashes(&whole), hashes(&streamed))
    }

    #[test]
    fn streamed_body_hashes_are_mail_auths() {
        let signatures =
            "DKIM-Signature: v=1; a=rsa-sha256; c=simple/simple; d=a.test; s=s; h=from; bh=AAAA; b=AAAA\r\n\
             DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=a.test; s=s; h=from; bh=AAAA; b=AAAA\r\n\
             DKIM-Signature: v=1; a=rsa-sha1; c=relaxed/simple; d=a.test; s=s; h=from; bh=AAAA; b=AAAA\r\n\
             DKIM-Signature: v=1; a=rsa-sha1; c=simple/relaxed; d=a.test; s=s; h=from; bh=AAAA; b=AAAA\r\n";
        let bodies: [&[u8]; 7] = [
            b"",
            b"\r\n",
            b"hello\r\n",
            b"a  b \t\r\n\r\n\r\n",
            b" lead\r\ntrail \r\n\r\nx\r\n\r\n",
            b"no final line end",
            b"bare\nlf\r\n",
        ];
        for body in bodies {
            let message = [signatures.as_bytes(), b"From: a@a.test\r\n\r\n", body].concat();
            let (whole, streamed) = both(&message);
            assert_eq!(whole.len(), 4);
            assert_eq!(whole, streamed, "{:?}", String::from_utf8_lossy(body));
        }
        // A long body, in many reads.
        let body: Vec<u8> =
            (0..200_000u32).map(|i| if i % 77 == 76 { b'\n' } else { b"a \t"[(i % 3) as usize] }).collect();
        let message = [signatures.as_bytes(), b"From: a@a.test\r\n\r\n", &body].concat();
        let (whole, streamed) = both(&message);
        assert_eq!(whole, streamed);
    }
}
