//! TLSA records (RFC 6698) matched against certificates, and the rustls verifier of a DANE
//! session (RFC 7672 §3): DANE-EE(3) matches the server's own certificate, ignoring its names
//! and dates; DANE-TA(2) matches a certificate of the chain the server sent, which then
//! anchors an ordinary validation of the chain (dates included) for the MX host's name.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Certificate usage DANE-TA: a trust anchor of the chain.
pub const DANE_TA: u8 = 2;
/// Certificate usage DANE-EE: the server's own certificate.
pub const DANE_EE: u8 = 3;

/// One TLSA record: usage, selector, matching type and the association data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlsa {
    /// 0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, 3 DANE-EE.
    pub usage: u8,
    /// 0 the full certificate, 1 its SubjectPublicKeyInfo.
    pub selector: u8,
    /// 0 the data itself, 1 SHA-256, 2 SHA-512.
    pub matching: u8,
    /// The certificate association data.
    pub data: Vec<u8>,
}

impl Tlsa {
    /// Whether an SMTP client can use it (RFC 7672 §3.1): DANE-TA or DANE-EE, a known selector
    /// and matching type, and data of the length the matching type makes. PKIX usages are
    /// unusable for SMTP (no CA list is agreed on).
    pub fn is_usable(&self) -> bool {
        matches!(self.usage, DANE_TA | DANE_EE)
            && self.selector <= 1
            && match self.matching {
                0 => !self.data.is_empty(),
                1 => self.data.len() == 32,
                2 => self.data.len() == 64,
                _ => false,
            }
    }

    /// The record of `usage`, `selector` and `matching` for the certificate `der` (what to
    /// publish for it); `None` for an unknown selector or matching type, or a certificate
    /// whose key cannot be found.
    pub fn of_certificate(usage: u8, selector: u8, matching: u8, der: &[u8]) -> Option<Self> {
        let selected = match selector {
            0 => der,
            1 => spki_of(der)?,
            _ => return None,
        };
        let data = match matching {
            0 => selected.to_vec(),
            1 => ring::digest::digest(&ring::digest::SHA256, selected).as_ref().to_vec(),
            2 => ring::digest::digest(&ring::digest::SHA512, selected).as_ref().to_vec(),
            _ => return None,
        };
        Some(Self { usage, selector, matching, data })
    }

    /// Whether the certificate `der` matches this record's selector, matching type and data.
    pub fn matches(&self, der: &[u8]) -> bool {
        Self::of_certificate(self.usage, self.selector, self.matching, der).is_some_and(|t| t.data == self.data)
    }

    /// The association data in hex (as in a zone file).
    pub fn data_hex(&self) -> String {
        self.data.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// `3 1 1 ab12…` (the data in hex, shortened past 16 octets).
impl fmt::Display for Tlsa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {} ", self.usage, self.selector, self.matching)?;
        for b in self.data.iter().take(16) {
            write!(f, "{b:02x}")?;
        }
        if self.data.len() > 16 {
            f.write_str("…")?;
        }
        Ok(())
    }
}

/// One DER element at the start of `der`: (tag, the whole element, its contents).
fn der_element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *der.first()?;
    let first = *der.get(1)?;
    let (header, len) = if first < 0x80 {
        (2, first as usize)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = der.get(2..2 + n)?;
        (2 + n, bytes.iter().fold(0usize, |a, &b| (a << 8) | b as usize))
    };
    let end = header.checked_add(len)?;
    Some((tag, der.get(..end)?, der.get(header..end)?))
}

/// The SubjectPublicKeyInfo (whole DER element) of an X.509 certificate: the seventh field
/// of tbsCertificate, or the sixth without the optional `[0]` version.
pub fn spki_of(cert: &[u8]) -> Option<&[u8]> {
    let (0x30, _, cert) = der_element(cert)? else { return None };
    let (0x30, _, mut tbs) = der_element(cert)? else { return None };
    let mut index = 0;
    while !tbs.is_empty() {
        let (tag, whole, _) = der_element(tbs)?;
        tbs = &tbs[whole.len()..];
        if index == 0 && tag == 0xa0 {
            continue;
        }
        // serial, signature, issuer, validity, subject, subjectPublicKeyInfo
        if index == 5 {
            return (tag == 0x30).then_some(whole);
        }
        index += 1;
    }
    None
}

/// The rustls verifier of a session to an MX host with usable TLSA records.
#[derive(Debug)]
pub struct DaneVerifier {
    host: String,
    records: Vec<Tlsa>,
    provider: Arc<CryptoProvider>,
}

impl DaneVerifier {
    /// A verifier for `host` (the MX host name, the reference identifier of DANE-TA) with its
    /// usable `records`.
    pub fn new(host: &str, records: Vec<Tlsa>, provider: Arc<CryptoProvider>) -> Self {
        Self { host: host.to_owned(), records, provider }
    }

    /// Why `end_entity` with `intermediates` matches none of the records, or `Ok`.
    pub fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), String> {
        if self.records.iter().any(|r| r.usage == DANE_EE && r.matches(end_entity)) {
            return Ok(());
        }
        let mut why = Vec::new();
        for r in self.records.iter().filter(|r| r.usage == DANE_TA) {
            for ta in intermediates.iter().chain(std::iter::once(end_entity)).filter(|c| r.matches(c)) {
                let mut roots = RootCertStore::empty();
                if let Err(e) = roots.add(ta.clone()) {
                    why.push(format!("the trust anchor matching {r} is not a usable certificate: {e}"));
                    continue;
                }
                let name = match ServerName::try_from(self.host.clone()) {
                    Ok(n) => n,
                    Err(e) => return Err(format!("{} is not a host name: {e}", self.host)),
                };
                let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                    .build()
                    .map_err(|e| format!("cannot verify against the trust anchor of {r}: {e}"))?;
                match verifier.verify_server_cert(end_entity, intermediates, &name, &[], now) {
                    Ok(_) => return Ok(()),
                    Err(e) => why.push(format!("the chain up to the trust anchor of {r} does not verify: {e}")),
                }
            }
        }
        let list: Vec<String> = self.records.iter().map(ToString::to_string).collect();
        let mut text =
            format!("DANE: the certificate of {} matches none of its TLSA records ({})", self.host, list.join(", "));
        if !why.is_empty() {
            text.push_str(": ");
            text.push_str(&why.join("; "));
        }
        Err(text)
    }
}

impl ServerCertVerifier for DaneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, intermediates, now)
            .map(|()| ServerCertVerified::assertion())
            .map_err(rustls::Error::General)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A client configuration that accepts only a certificate matching `records` for `host`.
pub fn dane_tls_config(host: &str, records: Vec<Tlsa>) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(DaneVerifier::new(host, records, provider.clone()));
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports TLS 1.2 and 1.3")
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256(b: &[u8]) -> Vec<u8> {
        ring::digest::digest(&ring::digest::SHA256, b).as_ref().to_vec()
    }

    fn ca_and_leaf(name: &str) -> (rcgen::Certificate, rcgen::KeyPair, CertificateDer<'static>) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, "Test TA");
        let ca = p.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf =
            rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap().signed_by(&leaf_key, &ca, &ca_key).unwrap();
        (ca, leaf_key, leaf.der().clone())
    }

    #[test]
    fn spki_is_the_key_rcgen_put_in() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["mx.test".to_owned()]).unwrap().self_signed(&key).unwrap();
        assert_eq!(spki_of(cert.der()), Some(key.public_key_der().as_slice()));
        assert_eq!(spki_of(b"\x30\x03\x30\x01"), None);
        assert_eq!(spki_of(b""), None);
        assert_eq!(spki_of(b"\x30\x84\xff\xff\xff\xff"), None);
    }

    #[test]
    fn usable_and_matching() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["mx.test".to_owned()]).unwrap().self_signed(&key).unwrap();
        let der = cert.der().to_vec();
        let spki = key.public_key_der();
        let t = |u, s, m, data: Vec<u8>| Tlsa { usage: u, selector: s, matching: m, data };
        assert!(t(3, 1, 1, sha256(&spki)).matches(&der));
        assert!(t(3, 0, 1, sha256(&der)).matches(&der));
        assert!(t(3, 0, 0, der.clone()).matches(&der));
        assert!(t(3, 1, 0, spki.clone()).matches(&der));
        let sha512 = ring::digest::digest(&ring::digest::SHA512, &spki).as_ref().to_vec();
        assert!(t(3, 1, 2, sha512).matches(&der));
        assert!(!t(3, 1, 1, sha256(b"other")).matches(&der));
        assert!(t(3, 1, 1, vec![0; 32]).is_usable());
        assert!(!t(1, 1, 1, vec![0; 32]).is_usable(), "PKIX-EE is not for SMTP");
        assert!(!t(3, 1, 1, vec![0; 31]).is_usable());
        assert!(!t(3, 2, 1, vec![0; 32]).is_usable());
        assert!(!t(3, 1, 3, vec![0; 32]).is_usable());
    }

    #[test]
    fn verifier_ee_and_ta() {
        let now = UnixTime::now();
        let (ca, _, leaf) = ca_and_leaf("mx.dane.test");
        let ee = vec![Tlsa { usage: 3, selector: 1, matching: 1, data: sha256(spki_of(&leaf).unwrap()) }];
        let p = Arc::new(rustls::crypto::ring::default_provider());
        // DANE-EE: the name does not matter.
        assert!(DaneVerifier::new("elsewhere.test", ee, p.clone()).check(&leaf, &[], now).is_ok());
        let ta = vec![Tlsa { usage: 2, selector: 0, matching: 1, data: sha256(ca.der()) }];
        let v = DaneVerifier::new("mx.dane.test", ta.clone(), p.clone());
        assert!(v.check(&leaf, std::slice::from_ref(ca.der()), now).is_ok());
        // DANE-TA checks the name, and needs the anchor in the chain.
        let e = DaneVerifier::new("other.test", ta, p.clone()).check(&leaf, std::slice::from_ref(ca.der()), now);
        assert!(e.unwrap_err().contains("does not verify"));
        assert!(v.check(&leaf, &[], now).unwrap_err().contains("matches none of its TLSA records (2 0 1 "));
        let wrong = vec![Tlsa { usage: 3, selector: 1, matching: 1, data: vec![7; 32] }];
        let e = DaneVerifier::new("mx.dane.test", wrong, p).check(&leaf, &[], now).unwrap_err();
        assert!(e.contains("mx.dane.test") && e.contains("3 1 1 0707"), "{e}");
    }
}
