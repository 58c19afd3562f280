//! DKIM signing keys and signatures (RFC 6376 with rsa-sha256, RFC 8463 ed25519-sha256), by
//! [`mail_auth`]: load or generate a key, publish its record, sign a message.

use std::fmt;
use std::io;
use std::path::Path;

use base64::Engine as _;
use mail_auth::common::crypto::{Algorithm, Ed25519Key, HashImpl, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::{HeaderWriter, Writable};
use mail_auth::dkim::generate::DkimKeyPair;
use mail_auth::dkim::{Canonicalization, DkimSigner};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::der::pem::LineEnding;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer};

/// The header fields we sign when present (RFC 6376 §5.4.1), `From` first.
pub const SIGNED_HEADERS: &[&str] = &[
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
];

/// A DKIM signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DkimAlgorithm {
    /// `rsa-sha256` (2048-bit keys when generated).
    Rsa,
    /// `ed25519-sha256` (RFC 8463).
    Ed25519,
}

impl DkimAlgorithm {
    /// The `k=` tag value of the key record.
    pub fn key_type(self) -> &'static str {
        match self {
            DkimAlgorithm::Rsa => "rsa",
            DkimAlgorithm::Ed25519 => "ed25519",
        }
    }
}

enum Secret {
    Rsa(RsaKey<Sha256>),
    Ed25519(Ed25519Key),
}

/// A private DKIM signing key and its public half as published in DNS.
pub struct DkimKey {
    secret: Secret,
    /// The `p=` bytes: SubjectPublicKeyInfo DER for RSA, the raw 32 bytes for Ed25519.
    public: Vec<u8>,
}

impl fmt::Debug for DkimKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DkimKey").field("algorithm", &self.algorithm()).finish_non_exhaustive()
    }
}

fn invalid(e: impl fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

fn rsa_public_spki(private: &rsa::RsaPrivateKey) -> io::Result<Vec<u8>> {
    Ok(private.to_public_key().to_public_key_der().map_err(invalid)?.as_bytes().to_vec())
}

impl DkimKey {
    /// Generates a key: RSA 2048 (PKCS#1 from mail-auth's generator) or Ed25519 (PKCS#8 from
    /// ring). Returns it with its PKCS#8 PEM encoding, the form [`DkimKey::load`] reads.
    pub fn generate(algorithm: DkimAlgorithm) -> io::Result<(Self, String)> {
        let der = match algorithm {
            DkimAlgorithm::Rsa => {
                let pair = DkimKeyPair::generate_rsa(2048).map_err(invalid)?;
                let key = rsa::RsaPrivateKey::from_pkcs1_der(pair.private_key()).map_err(invalid)?;
                key.to_pkcs8_der().map_err(invalid)?.as_bytes().to_vec()
            }
            DkimAlgorithm::Ed25519 => DkimKeyPair::generate_ed25519().map_err(invalid)?.private_key().to_vec(),
        };
        let pem = rsa::pkcs8::der::pem::encode_string("PRIVATE KEY", LineEnding::LF, &der).map_err(invalid)?;
        let key = Self::from_bytes(pem.as_bytes())?;
        Ok((key, pem))
    }

    /// Reads a private key file: PEM (`PRIVATE KEY` PKCS#8 RSA or Ed25519, `RSA PRIVATE KEY`
    /// PKCS#1) or the same in DER.
    pub fn load(path: &Path) -> io::Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Self::from_bytes(&bytes).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    }

    /// Parses a private key in PEM or DER (see [`DkimKey::load`]).
    pub fn from_bytes(bytes: &[u8]) -> io::Result<Self> {
        let der = match PrivateKeyDer::from_pem_slice(bytes) {
            Ok(der) => der,
            Err(_) if bytes.first() == Some(&0x30) => {
                // DER: PKCS#8 if it parses as such, PKCS#1 otherwise.
                if rsa::RsaPrivateKey::from_pkcs1_der(bytes).is_ok() {
                    PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(bytes.to_vec()))
                } else {
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(bytes.to_vec()))
                }
            }
            Err(e) => return Err(invalid(format!("not a PEM private key: {e}"))),
        };
        match der {
            PrivateKeyDer::Pkcs1(d) => {
                let private = rsa::RsaPrivateKey::from_pkcs1_der(d.secret_pkcs1_der()).map_err(invalid)?;
                let public = rsa_public_spki(&private)?;
                let secret = RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs1(d)).map_err(invalid)?;
                Ok(Self { secret: Secret::Rsa(secret), public })
            }
            PrivateKeyDer::Pkcs8(d) => {
                if let Ok(k) = Ed25519Key::from_pkcs8_maybe_unchecked_der(d.secret_pkcs8_der()) {
                    let public = k.public_key();
                    return Ok(Self { secret: Secret::Ed25519(k), public });
                }
                let private = rsa::RsaPrivateKey::from_pkcs8_der(d.secret_pkcs8_der())
                    .map_err(|e| invalid(format!("neither an Ed25519 nor an RSA key: {e}")))?;
                let public = rsa_public_spki(&private)?;
                let secret = RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(d)).map_err(invalid)?;
                Ok(Self { secret: Secret::Rsa(secret), public })
            }
            _ => Err(invalid("unsupported key format (need PKCS#8 or PKCS#1)")),
        }
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> DkimAlgorithm {
        match self.secret {
            Secret::Rsa(_) => DkimAlgorithm::Rsa,
            Secret::Ed25519(_) => DkimAlgorithm::Ed25519,
        }
    }

    /// The public key as published (`p=`), base64.
    pub fn public_key_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.public)
    }

    /// The text of the key record: `v=DKIM1; k=rsa; p=...`.
    pub fn record_value(&self) -> String {
        format!("v=DKIM1; k={}; p={}", self.algorithm().key_type(), self.public_key_base64())
    }

    /// The key record as a zone-file line, `<selector>._domainkey.<domain>. IN TXT "..." "..."`,
    /// split into strings of at most 255 characters (RFC 1035 §3.3.14, RFC 6376 §3.6.2.2).
    pub fn txt_record(&self, domain: &str, selector: &str) -> String {
        zone_txt(&format!("{selector}._domainkey.{}.", domain.trim_end_matches('.')), &self.record_value())
    }
}

/// A zone-file TXT line for `owner` (`owner IN TXT "..." "..."`), the value split into
/// quoted strings of at most 255 characters.
pub fn zone_txt(owner: &str, value: &str) -> String {
    let strings: Vec<String> = value
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c).replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{owner} 3600 IN TXT {}", strings.join(" "))
}

/// A borrowed key for mail-auth's signer (which takes its key by value).
struct Borrowed<'a, K>(&'a K);

impl<K: SigningKey> SigningKey for Borrowed<'_, K> {
    type Hasher = K::Hasher;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        self.0.sign(input)
    }

    fn algorithm(&self) -> Algorithm {
        self.0.algorithm()
    }
}

fn sign_with<K: SigningKey>(key: &K, message: &[u8], domain: &str, selector: &str) -> mail_auth::Result<Vec<u8>>
where
    K::Hasher: HashImpl,
{
    let signature = DkimSigner::from_key(Borrowed(key))
        .domain(domain.trim_end_matches('.'))
        .selector(selector)
        .headers(SIGNED_HEADERS.iter().copied())
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
        .sign(message)?;
    Ok(signature.to_header().into_bytes())
}

fn sign_stream_with<K: SigningKey>(
    key: &K,
    header_block: &[u8],
    body: &mut dyn io::BufRead,
    domain: &str,
    selector: &str,
) -> io::Result<Vec<u8>>
where
    <K::Hasher as HashImpl>::Context: mail_auth::common::crypto::HashContext,
{
    let signer = DkimSigner::from_key(Borrowed(key))
        .domain(domain.trim_end_matches('.'))
        .selector(selector)
        .headers(SIGNED_HEADERS.iter().copied())
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed);
    let mut stream = signer.sign_streaming();
    stream.write(header_block);
    loop {
        let chunk = body.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        stream.write(chunk);
        let n = chunk.len();
        body.consume(n);
    }
    let signature = stream.finish().map_err(|e| io::Error::other(format!("DKIM signing: {e}")))?;
    Ok(signature.to_header().into_bytes())
}

/// [`sign`] of a message that streams: `header_block` (its header lines with CRLF ends and the
/// empty line after them, as [`crate::mta::stream::read_header_block`] gives it from a
/// [`crate::mta::stream::CrlfReader`]), then the body from `body` (CRLF line ends too). Only
/// the header block is held in memory. Errors: reading `body`, or signing.
pub fn sign_stream(
    header_block: &[u8],
    body: &mut dyn io::BufRead,
    key: &DkimKey,
    domain: &str,
    selector: &str,
) -> io::Result<Vec<u8>> {
    match &key.secret {
        Secret::Rsa(k) => sign_stream_with(k, header_block, body, domain, selector),
        Secret::Ed25519(k) => sign_stream_with(k, header_block, body, domain, selector),
    }
}

/// Signs `message` (a whole RFC 5322 message, CRLF line ends) for `domain` with the key
/// published at `<selector>._domainkey.<domain>`: returns the `DKIM-Signature:` header field
/// (ending in CRLF) to prepend. Relaxed/relaxed canonicalization; the fields of
/// [`SIGNED_HEADERS`] that the message has are signed.
pub fn sign(message: &[u8], key: &DkimKey, domain: &str, selector: &str) -> Result<Vec<u8>, mail_auth::Error> {
    match &key.secret {
        Secret::Rsa(k) => sign_with(k, message, domain, selector),
        Secret::Ed25519(k) => sign_with(k, message, domain, selector),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mta::stream::{read_header_block, CrlfReader, MAX_HEADER_BLOCK};

    /// A `DKIM-Signature:` field without its `t=` and `b=` (time and signature bytes).
    fn stable(header: &[u8]) -> String {
        let text = String::from_utf8_lossy(header).replace("\r\n\t", " ").replace("\r\n", "");
        text.split(';')
            .map(str::trim)
            .filter(|t| !t.starts_with("t=") && !t.starts_with("b="))
            .collect::<Vec<_>>()
            .join(";")
    }

    #[test]
    fn streamed_signature_is_the_whole_message_signature() {
        for algorithm in [DkimAlgorithm::Rsa, DkimAlgorithm::Ed25519] {
            let (key, _) = DkimKey::generate(algorithm).unwrap();
            let body: Vec<u8> =
                (0..100_000u32).map(|i| if i % 70 == 69 { b'\n' } else { b"x  y"[(i % 4) as usize] }).collect();
            let message = [&b"From: a@a.test\nTo: b@b.test\nSubject: big\n\n"[..], &body].concat();
            let whole = sign(&crate::client::to_crlf(&message), &key, "a.test", "s1").unwrap();
            let mut reader = std::io::BufReader::with_capacity(1000, CrlfReader::new(&message[..]));
            let block = read_header_block(&mut reader, MAX_HEADER_BLOCK).unwrap();
            let streamed = sign_stream(&block.bytes, &mut reader, &key, "a.test", "s1").unwrap();
            assert_eq!(stable(&whole), stable(&streamed));
            assert!(stable(&streamed).contains("bh="), "{}", stable(&streamed));
        }
    }
}
