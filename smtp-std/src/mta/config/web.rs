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
            format!(
                "{:?} is not an https:// URL (Let's Encrypt: https://acme-v02.api.letsencrypt.org/directory)",
                acme.directory
            ),
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

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "data_dir = \"d\"\nhostname = \"mx.a.test\"\n";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "x.toml".as_ref())
    }

    fn domain(extra: &str) -> String {
        format!("[[domain]]\nname = \"a.test\"\n{extra}")
    }

    #[test]
    fn acme_and_mta_sts_keys() {
        let listen = "[listen]\nsmtp = [\"127.0.0.1:25\"]\nhttps = [\"127.0.0.1:443\"]\n";
        let acme = "[acme]\ndirectory = \"https://ca.test/dir\"\nemail = \"me@a.test\"\nca = \"ca.pem\"\n";
        let ok = parse(&format!("{BASE}{listen}{acme}{}", domain("mta_sts = \"enforce\"\n"))).unwrap();
        let a = ok.acme.as_ref().unwrap();
        assert_eq!((a.challenge, a.ca.as_deref()), (AcmeChallenge::TlsAlpn01, Some(Path::new("ca.pem"))));
        assert_eq!(ok.acme_names(), ["mx.a.test", "mta-sts.a.test"]);
        let (d, p) = &ok.mta_sts_policies()[0];
        assert_eq!((d.as_str(), p.mx.as_str(), p.max_age.as_secs()), ("a.test", "mx.a.test", 604_800));

        let e = |text: String| parse(&text).unwrap_err();
        let err = e(format!("{BASE}{listen}{acme}{}", domain("mta_sts = \"strict\"\n")));
        assert_eq!((err.key.as_deref(), err.line), (Some("domain[0].mta_sts"), Some(12)), "{err}");
        let err = e(format!("{BASE}{listen}{acme}{}", domain("mta_sts = \"testing\"\nmta_sts_max_age = \"400d\"\n")));
        assert_eq!(err.key.as_deref(), Some("domain[0].mta_sts_max_age"), "{err}");
        let err = e(format!("{BASE}{listen}{acme}{}", domain("mta_sts_max_age = \"7d\"\n")));
        assert!(err.message.contains("needs mta_sts"), "{err}");
        let err = e(format!("{BASE}{listen}{acme}challenge = \"dns-01\"\n{}", domain("")));
        assert_eq!(err.key.as_deref(), Some("acme.challenge"), "{err}");
        assert!(err.message.contains("http-01"), "{err}");
        let err = e(format!("{BASE}{listen}{acme}challenge = \"http-01\"\n{}", domain("")));
        assert!(err.message.contains("[listen] http"), "{err}");
        let err = e(format!("{BASE}{listen}{acme}colour = 1\n{}", domain("")));
        assert!(err.message.contains("colour"), "{err}");
        let err = e(format!("{BASE}{listen}[acme]\ndirectory = \"http://ca.test/\"\n{}", domain("")));
        assert_eq!((err.key.as_deref(), err.line), (Some("acme.directory"), Some(7)), "{err}");
        let tls = "[tls]\ncert = \"c\"\nkey = \"k\"\n";
        let err = e(format!("{BASE}{listen}{tls}{acme}{}", domain("")));
        assert!(err.message.contains("both [acme] and [tls]"), "{err}");
        let err = e(format!("{BASE}{listen}{}", domain("")));
        assert_eq!((err.key.as_deref(), err.line), (Some("listen.https"), Some(5)), "{err}");
        assert!(err.message.contains("[acme]"), "{err}");
        // Submission under an ACME certificate.
        let sub =
            "[listen]\nsmtp = [\"127.0.0.1:25\"]\nsubmissions = [\"127.0.0.1:465\"]\nhttps = [\"127.0.0.1:443\"]\n";
        assert!(parse(&format!("{BASE}{sub}{acme}{}", domain(""))).is_ok());
    }
}
