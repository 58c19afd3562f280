//! DNS answers with their DNSSEC status: from a local validating resolver's AD bit
//! ([`Validation::TrustAd`]: our own small stub that asks with AD and DO set, RFC 6840 §5.7,
//! since hickory's resolver sets neither without validating itself), or from hickory's own
//! validation ([`Validation::Hickory`]: each record's proof).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::proto::dnssec::Proof;
use hickory_resolver::proto::op::{Edns, Message, Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

use crate::mta::auth::Dns;

/// A lookup's records with their DNSSEC status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Records of a validated (secure) answer; empty for a secure "no such name / no data".
    Secure(Vec<RData>),
    /// An answer from an unsigned zone (or a resolver that does not say): records, possibly
    /// none.
    Insecure(Vec<RData>),
    /// No usable answer: a validation failure (a validating resolver's `SERVFAIL`, hickory's
    /// "bogus"), a timeout, a network error. Says what.
    Failed(String),
}

/// Where DNSSEC status comes from.
#[derive(Debug, Clone)]
pub enum Validation {
    /// The AD bit of these resolvers' answers (each tried in turn), waiting this long for each.
    TrustAd {
        /// The resolvers (`[dns] server`, else `/etc/resolv.conf`'s).
        servers: Vec<SocketAddr>,
        /// The wait for one answer.
        timeout: Duration,
    },
    /// hickory's validation (a [`Dns`] made with a trust anchor).
    Hickory(Box<Dns>),
}

/// Largest answer over UDP we ask for (the DNS flag day 2020 size).
const UDP_PAYLOAD: u16 = 1232;

impl Validation {
    /// The records of type `rtype` at `name`, with their DNSSEC status.
    pub fn lookup(&self, name: &str, rtype: RecordType) -> Answer {
        let name = match Name::from_str_relaxed(format!("{}.", name.trim_end_matches('.'))) {
            Ok(n) => n,
            Err(e) => return Answer::Failed(format!("bad name {name:?}: {e}")),
        };
        match self {
            Validation::TrustAd { servers, timeout } => {
                let mut last = "no DNS server".to_owned();
                for server in servers {
                    match ask(*server, *timeout, &name, rtype) {
                        Ok(m) => return classify_ad(&m, rtype),
                        Err(e) => last = format!("{server}: {e}"),
                    }
                }
                Answer::Failed(last)
            }
            Validation::Hickory(dns) => match dns.block_on(dns.resolver().lookup(name.clone(), rtype)) {
                Ok(l) => {
                    let records: Vec<&Record> = l.answers().iter().filter(|r| r.record_type() == rtype).collect();
                    if records.iter().any(|r| r.proof == Proof::Bogus) {
                        return Answer::Failed(format!("{name} {rtype}: DNSSEC validation failed (bogus)"));
                    }
                    let data = records.iter().map(|r| r.data.clone()).collect();
                    if !records.is_empty() && records.iter().all(|r| r.proof == Proof::Secure) {
                        Answer::Secure(data)
                    } else {
                        Answer::Insecure(data)
                    }
                }
                Err(NetError::Dns(HickoryDnsError::NoRecordsFound(nr)))
                    if matches!(nr.response_code, ResponseCode::NXDomain | ResponseCode::NoError) =>
                {
                    // A denial: secure when its authority records (SOA, NSEC/NSEC3) were.
                    let secure = nr
                        .authorities
                        .as_ref()
                        .is_some_and(|a| !a.is_empty() && a.iter().all(|r| r.proof == Proof::Secure));
                    if secure {
                        Answer::Secure(Vec::new())
                    } else {
                        Answer::Insecure(Vec::new())
                    }
                }
                Err(e) => Answer::Failed(format!("{name} {rtype}: {e}")),
            },
        }
    }
}

/// The status of a stub resolver's answer from its AD bit.
fn classify_ad(m: &Message, rtype: RecordType) -> Answer {
    match m.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => {
            let data: Vec<RData> =
                m.answers.iter().filter(|r| r.record_type() == rtype).map(|r| r.data.clone()).collect();
            if m.metadata.authentic_data {
                Answer::Secure(data)
            } else {
                Answer::Insecure(data)
            }
        }
        ResponseCode::ServFail => Answer::Failed(
            "the resolver answered SERVFAIL (a DNSSEC validation failure, or the zone's servers failed)".into(),
        ),
        code => Answer::Failed(format!("the resolver answered {code}")),
    }
}

/// One query to `server`: UDP, then TCP when the answer was truncated.
fn ask(server: SocketAddr, timeout: Duration, name: &Name, rtype: RecordType) -> Result<Message, String> {
    let mut q = Message::query();
    q.add_query(Query::query(name.clone(), rtype));
    q.metadata.recursion_desired = true;
    q.metadata.authentic_data = true;
    let mut edns = Edns::new();
    edns.set_max_payload(UDP_PAYLOAD).set_dnssec_ok(true);
    q.edns = Some(edns);
    let wire = q.to_vec().map_err(|e| format!("cannot encode the query: {e}"))?;
    let bind: SocketAddr = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
    let socket = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
    socket.connect(server).map_err(|e| e.to_string())?;
    socket.send(&wire).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65535];
    let answer = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no answer within {timeout:?}"));
        }
        socket.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(format!("no answer within {timeout:?}"))
            }
            Err(e) => return Err(e.to_string()),
        };
        // Anything that is not the answer to our query (another id, garbage) is skipped.
        match Message::from_vec(&buf[..n]) {
            Ok(m) if m.metadata.id == q.metadata.id && m.queries.first().map(Query::name) == Some(name) => break m,
            _ => continue,
        }
    };
    if !answer.metadata.truncation {
        return Ok(answer);
    }
    let mut tcp = TcpStream::connect_timeout(&server, timeout).map_err(|e| format!("TCP: {e}"))?;
    tcp.set_read_timeout(Some(timeout))
        .and_then(|()| tcp.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let len = u16::try_from(wire.len()).map_err(|_| "query too long".to_owned())?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(&wire);
    tcp.write_all(&framed).map_err(|e| format!("TCP: {e}"))?;
    let mut len = [0u8; 2];
    tcp.read_exact(&mut len).map_err(|e| format!("TCP: {e}"))?;
    let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
    tcp.read_exact(&mut body).map_err(|e| format!("TCP: {e}"))?;
    let m = Message::from_vec(&body).map_err(|e| format!("TCP: a malformed answer: {e}"))?;
    if m.metadata.id != q.metadata.id {
        return Err("TCP: the answer is not for our query".into());
    }
    Ok(m)
}
