//! The checks and derived values of `[acme]`, `[listen] https`/`http` and `[[domain]]
//! mta_sts`.

use super::*;
use crate::mta::web::mtasts::Policy;

/// `[acme]` against the rest: one certificate source, an https directory, the listener its
/// challenge needs. The error names the key and what to do.
pub(super) fn acme_checks(acme: &AcmeConfig, tls: &Option<TlsFiles>, listen: &Listen) -> Result<(), (String, String)> {
    if tls.is_some() {
        return Err((
            "acme".into(),
            "both [acme] and [tls] are set: the certificate comes from one of them; remove one".into(),
        ));
    }
    if !acme.directory.starts_with("https://") {
        return Err((
            "acme.directory".into(),
            format!("{:?} is not an https:// URL (Let's Encrypt: https://acme-v02.api.letsencrypt.org/directory)", acme.directory),
        ));
    }
    if let Some(email) = &acme.email {
        if !email.contains('@') || email.contains(char::is_whitespace) {
            return Err(("acme.email".into(), format!("{email:?} is not an address")));
        }
    }
    match acme.challenge {
        AcmeChallenge::TlsAlpn01 if listen.https.is_empty() => Err((
            "acme.challenge".into(),
            "tls-alpn-01 is answered on [listen] https (port 443, reachable from the Internet): \
             add https = [\"0.0.0.0:443\"] to [listen], or use challenge = \"http-01\" with [listen] http"
                .into(),
        )),
        AcmeChallenge::Http01 if listen.http.is_empty() => Err((
            "acme.challenge".into(),
            "http-01 is answered on [listen] http (port 80, reachable from the Internet): \
             add http = [\"0.0.0.0:80\"] to [listen], or use challenge = \"tls-alpn-01\" with [listen] https"
                .into(),
        )),
        _ => Ok(()),
    }
}

impl Config {
    /// The MTA-STS policy of each domain with `mta_sts` set: our `hostname` as the MX.
    pub fn mta_sts_policies(&self) -> Vec<(String, Policy)> {
        let policy = |&(mode, max_age): &(crate::mta::web::mtasts::Mode, Duration)| Policy {
            mode,
            mx: self.hostname.clone(),
            max_age,
        };
        self.mta_sts.iter().map(|(d, p)| (d.clone(), policy(p))).collect()
    }

    /// The names of the ACME certificate: `hostname`, and `mta-sts.<domain>` of every domain
    /// whose MTA-STS policy we serve.
    pub fn acme_names(&self) -> Vec<String> {
        let mut names = vec![self.hostname.to_ascii_lowercase()];
        for d in self.mta_sts.keys() {
            let name = format!("mta-sts.{d}");
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }
}
