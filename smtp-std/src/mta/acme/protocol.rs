//! The ACME protocol (RFC 8555) as a client: JWS requests signed with the account's P-256 key
//! (ES256, *ring*), the directory, nonces (a `badNonce` is retried), the account, an order,
//! its authorisations and challenges (tls-alpn-01, RFC 8737; http-01), the finalisation with
//! a CSR (rcgen) and the certificate chain.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

use crate::mta::config::AcmeChallenge;
use crate::mta::web::client::{Client, Response};
use crate::mta::web::Challenges;

/// How long an authorisation or the order may take to become valid.
pub const VALIDATION_TIMEOUT: Duration = Duration::from_secs(120);

/// The account's key (ECDSA P-256) and its public JWK.
pub struct AccountKey {
    pair: EcdsaKeyPair,
    jwk: Value,
}

impl AccountKey {
    /// Reads the key of `path` (PKCS#8 PEM), or makes one and writes it there (`0600`).
    pub fn load_or_create(path: &Path) -> Result<Self, String> {
        let rng = SystemRandom::new();
        let named = |e: &dyn std::fmt::Display| format!("the ACME account key {}: {e}", path.display());
        let der = match std::fs::read_to_string(path) {
            Ok(text) => {
                let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
                STANDARD
                    .decode(b64.trim())
                    .map_err(|e| named(&format!("not a PEM key ({e}); remove it to make a new account")))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let doc =
                    EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).map_err(|e| named(&e))?;
                let b64 = STANDARD.encode(doc.as_ref());
                let pem = format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n");
                super::write_private(path, pem.as_bytes()).map_err(|e| named(&e))?;
                doc.as_ref().to_vec()
            }
            Err(e) => return Err(named(&e)),
        };
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
            .map_err(|e| named(&format!("not a P-256 key ({e}); remove it to make a new account")))?;
        let point = pair.public_key().as_ref();
        let (x, y) = (&point[1..33], &point[33..65]);
        let jwk = json!({"crv": "P-256", "kty": "EC", "x": B64.encode(x), "y": B64.encode(y)});
        Ok(Self { pair, jwk })
    }

    /// The JWK thumbprint (RFC 7638): the members in lexical order, no spaces.
    fn thumbprint(&self) -> String {
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":{},"y":{}}}"#, self.jwk["x"], self.jwk["y"]);
        B64.encode(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()))
    }
}

/// What an order needs: the CA and its client, the account, where challenges are answered.
pub struct Order<'a> {
    /// The directory URL (`[acme] directory`).
    pub directory: &'a str,
    /// The contact address.
    pub email: Option<&'a str>,
    /// The HTTPS client (trusting `[acme] ca` too).
    pub client: &'a Client,
    /// The account key.
    pub key: &'a AccountKey,
    /// The challenge type.
    pub challenge: AcmeChallenge,
    /// Where the challenge answers are put for the web listeners.
    pub challenges: &'a Arc<Challenges>,
}

/// A session with the CA: its URLs, the last nonce, the account URL.
struct Session<'a> {
    order: &'a Order<'a>,
    new_nonce: String,
    nonce: Option<String>,
    kid: Option<String>,
}

/// The text of an ACME problem document (RFC 8555 §6.7), or the body as it is.
fn problem(r: &Response) -> String {
    match serde_json::from_slice::<Value>(&r.body) {
        Ok(v) => {
            let mut text = format!(
                "{} {}",
                v["type"].as_str().unwrap_or("").trim_start_matches("urn:ietf:params:acme:error:"),
                v["detail"].as_str().unwrap_or("")
            );
            for sub in v["subproblems"].as_array().into_iter().flatten() {
                text.push_str(&format!("; {}: {}", sub["identifier"]["value"], sub["detail"].as_str().unwrap_or("")));
            }
            format!("HTTP {}: {}", r.status, text.trim())
        }
        Err(_) => {
            format!("HTTP {}: {}", r.status, String::from_utf8_lossy(&r.body).chars().take(300).collect::<String>())
        }
    }
}

fn json_of(r: &Response, what: &str) -> Result<Value, String> {
    serde_json::from_slice(&r.body).map_err(|e| format!("{what}: the CA's answer is not JSON: {e}"))
}

impl<'a> Session<'a> {
    /// Reads the directory and registers (or finds) the account.
    fn open(order: &'a Order<'a>) -> Result<(Self, Value), String> {
        let hint = "check [acme] directory (and [acme] ca for a private CA)";
        let r = order.client.get(order.directory).map_err(|e| format!("the ACME directory: {e}; {hint}"))?;
        if r.status != 200 {
            return Err(format!("the ACME directory {}: {}; {hint}", order.directory, problem(&r)));
        }
        let dir = json_of(&r, &format!("the ACME directory {}", order.directory))?;
        let url = |k: &str| {
            dir[k]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("the ACME directory {} has no {k}; {hint}", order.directory))
        };
        let mut s = Session { order, new_nonce: url("newNonce")?, nonce: None, kid: None };
        let mut payload = json!({"termsOfServiceAgreed": true});
        if let Some(email) = order.email {
            payload["contact"] = json!([format!("mailto:{email}")]);
        }
        let r = s.post(&url("newAccount")?, Some(&payload)).map_err(|e| format!("the ACME account: {e}"))?;
        let kid = r.header("location").ok_or("the ACME account: the CA gave no account URL (Location)")?;
        s.kid = Some(kid.to_owned());
        Ok((s, dir))
    }

    fn fresh_nonce(&self) -> Result<String, String> {
        let r = self.order.client.head(&self.new_nonce)?;
        r.header("replay-nonce").map(str::to_owned).ok_or_else(|| format!("{}: no Replay-Nonce", self.new_nonce))
    }

    /// A JWS POST to `url` (`None`: POST-as-GET); a `badNonce` is retried with a new nonce.
    fn post(&mut self, url: &str, payload: Option<&Value>) -> Result<Response, String> {
        let rng = SystemRandom::new();
        for attempt in 0..4 {
            let nonce = match self.nonce.take() {
                Some(n) => n,
                None => self.fresh_nonce()?,
            };
            let mut protected = json!({"alg": "ES256", "nonce": nonce, "url": url});
            match &self.kid {
                Some(kid) => protected["kid"] = json!(kid),
                None => protected["jwk"] = self.order.key.jwk.clone(),
            }
            let protected = B64.encode(protected.to_string());
            let payload = payload.map(|p| B64.encode(p.to_string())).unwrap_or_default();
            let signature = self
                .order
                .key
                .pair
                .sign(&rng, format!("{protected}.{payload}").as_bytes())
                .map_err(|e| format!("signing: {e}"))?;
            let body = json!({"protected": protected, "payload": payload, "signature": B64.encode(signature)});
            let r = self.order.client.post(url, "application/jose+json", body.to_string().as_bytes())?;
            self.nonce = r.header("replay-nonce").map(str::to_owned);
            if r.status < 400 {
                return Ok(r);
            }
            let text = problem(&r);
            if !(text.contains("badNonce") && attempt < 3) {
                return Err(format!("{url}: {text}"));
            }
        }
        unreachable!("the last attempt returns")
    }

    fn get(&mut self, url: &str, what: &str) -> Result<Value, String> {
        let r = self.post(url, None).map_err(|e| format!("{what}: {e}"))?;
        json_of(&r, what)
    }

    /// Polls `url` (an authorisation or the order) until its status is one of `done`.
    fn wait(&mut self, url: &str, what: &str, done: &[&str]) -> Result<Value, String> {
        let end = Instant::now() + VALIDATION_TIMEOUT;
        loop {
            let v = self.get(url, what)?;
            let status = v["status"].as_str().unwrap_or("");
            if done.contains(&status) {
                return Ok(v);
            }
            if status == "invalid" {
                return Err(invalid_text(what, &v));
            }
            if Instant::now() > end {
                return Err(format!("{what}: still {status:?} after {}s", VALIDATION_TIMEOUT.as_secs()));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Why an authorisation or order is invalid, from its failed challenge's error.
fn invalid_text(what: &str, v: &Value) -> String {
    let mut why = String::new();
    for c in v["challenges"].as_array().into_iter().flatten() {
        if let Some(d) = c["error"]["detail"].as_str() {
            why = format!(": the {} challenge failed: {d}", c["type"].as_str().unwrap_or("?"));
        }
    }
    if why.is_empty() {
        if let Some(d) = v["error"]["detail"].as_str() {
            why = format!(": {d}");
        }
    }
    format!("{what} is invalid{why}")
}

/// The challenge certificate of tls-alpn-01 for `name` (RFC 8737 §3): self-signed, with the
/// critical acmeIdentifier extension holding SHA-256 of the key authorisation.
fn alpn_certificate(name: &str, key_authorization: &str) -> Result<Arc<rustls::sign::CertifiedKey>, String> {
    let digest = ring::digest::digest(&ring::digest::SHA256, key_authorization.as_bytes());
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(|e| e.to_string())?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest.as_ref())];
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    // Not through the usual consistency check: webpki refuses the critical extension.
    let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signing = rustls::crypto::ring::sign::any_supported_type(&der).map_err(|e| e.to_string())?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(vec![cert.der().clone()], signing)))
}

/// Orders a certificate for `names` and answers its challenges: the chain (PEM) and its new
/// private key (PEM). The error names the object (directory, account, name, challenge) and
/// what to check.
pub fn obtain(order: &Order<'_>, names: &[String]) -> Result<(String, String), String> {
    let result = obtain_inner(order, names);
    order.challenges.clear();
    result
}

fn obtain_inner(order: &Order<'_>, names: &[String]) -> Result<(String, String), String> {
    let (mut s, dir) = Session::open(order)?;
    let new_order = dir["newOrder"].as_str().ok_or("the ACME directory has no newOrder")?.to_owned();
    let identifiers: Vec<Value> = names.iter().map(|n| json!({"type": "dns", "value": n})).collect();
    let r = s
        .post(&new_order, Some(&json!({"identifiers": identifiers})))
        .map_err(|e| format!("the ACME order for {}: {e}", names.join(", ")))?;
    let order_url = r.header("location").ok_or("the ACME order: no order URL (Location)")?.to_owned();
    let created = json_of(&r, "the ACME order")?;
    let thumbprint = order.key.thumbprint();
    let (kind, port) = match order.challenge {
        AcmeChallenge::TlsAlpn01 => ("tls-alpn-01", "443 ([listen] https)"),
        AcmeChallenge::Http01 => ("http-01", "80 ([listen] http)"),
    };
    let mut pending = Vec::new();
    for authz_url in created["authorizations"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        let authz = s.get(authz_url, "an ACME authorisation")?;
        let name = authz["identifier"]["value"].as_str().unwrap_or("?").to_owned();
        if authz["status"] == "valid" {
            continue;
        }
        let challenge = authz["challenges"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == kind)
            .ok_or_else(|| format!("{name}: the CA offers no {kind} challenge; set [acme] challenge to another"))?;
        let token = challenge["token"].as_str().ok_or_else(|| format!("{name}: {kind} challenge without token"))?;
        let url = challenge["url"].as_str().ok_or_else(|| format!("{name}: {kind} challenge without URL"))?.to_owned();
        let key_authorization = format!("{token}.{thumbprint}");
        match order.challenge {
            AcmeChallenge::TlsAlpn01 => order.challenges.set_alpn(&name, alpn_certificate(&name, &key_authorization)?),
            AcmeChallenge::Http01 => order.challenges.set_http(token, &key_authorization),
        }
        pending.push((name, url, authz_url.to_owned()));
    }
    for (name, url, _) in &pending {
        s.post(url, Some(&json!({}))).map_err(|e| format!("{name}: starting the {kind} challenge: {e}"))?;
    }
    for (name, _, authz_url) in &pending {
        s.wait(authz_url, &format!("the authorisation of {name}"), &["valid"]).map_err(|e| {
            format!("{e}; check that {name} resolves (A/AAAA) to this server and that port {port} is reachable from the Internet")
        })?;
    }
    s.wait(&order_url, "the ACME order", &["ready", "processing", "valid"])?;
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(|e| format!("the CSR: {e}"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, names[0].clone());
    let csr = params.serialize_request(&key).map_err(|e| format!("the CSR: {e}"))?;
    let finalize = created["finalize"].as_str().ok_or("the ACME order has no finalize URL")?.to_owned();
    s.post(&finalize, Some(&json!({"csr": B64.encode(csr.der())})))
        .map_err(|e| format!("finalizing the order: {e}"))?;
    let done = s.wait(&order_url, "the ACME order", &["valid"])?;
    let cert_url = done["certificate"].as_str().ok_or("the valid ACME order has no certificate URL")?.to_owned();
    let r = s.post(&cert_url, None).map_err(|e| format!("downloading the certificate: {e}"))?;
    let chain = String::from_utf8(r.body).map_err(|_| format!("{cert_url}: the certificate is not PEM text"))?;
    Ok((chain, key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_key_is_kept_and_thumbprint_is_canonical() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("account.key");
        let a = AccountKey::load_or_create(&path).unwrap();
        let b = AccountKey::load_or_create(&path).unwrap();
        assert_eq!(a.jwk, b.jwk, "the same account after a restart");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(a.thumbprint().len(), 43);
        std::fs::write(&path, "junk").unwrap();
        let e = AccountKey::load_or_create(&path).err().unwrap();
        assert!(e.contains("account.key") && e.contains("remove it"), "{e}");
        let c = alpn_certificate("a.test", "token.thumb").unwrap();
        assert_eq!(c.cert.len(), 1);
    }
}
