//! Reports that arrive at `[reports] address`: a DMARC aggregate report (XML, plain, gzip or
//! zip) or a TLS report (JSON, plain or gzip) in any part of the message is read and kept as
//! one JSON file in `<data_dir>/reports/received/`; a message with none is no report.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use mail_parser::MessageParser;
use serde::{Deserialize, Serialize};

use super::aggregate::Feedback;
use super::tlsrpt::TlsReport;
use crate::mta::private;

/// A report received, as kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    /// When it arrived, seconds since the epoch.
    pub received: u64,
    /// The envelope sender.
    pub from: String,
    /// The message's subject.
    pub subject: String,
    /// The DMARC aggregate report, when it is one.
    pub dmarc: Option<Feedback>,
    /// The TLS report, when it is one.
    pub tls: Option<TlsReport>,
}

/// The report in `message` (parsed whole: the caller bounds its size) as mail-auth reads it
/// ([`mail_auth::report::Report::parse_rfc5322`], [`mail_auth::report::tlsrpt::TlsReport::parse_rfc5322`]),
/// each attachment inflated to at most `max` bytes; `None`: none found.
pub fn parse(message: &[u8], from: &str, max: u64, now: SystemTime) -> Option<Received> {
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    let dmarc = mail_auth::report::Report::parse_rfc5322(message, max);
    let tls = match &dmarc {
        Ok(_) => None,
        // The TLS report as mail-auth read it, in its JSON form (RFC 8460's names), into ours.
        Err(_) => mail_auth::report::tlsrpt::TlsReport::parse_rfc5322(message, max)
            .ok()
            .and_then(|t| serde_json::to_vec(&t).ok())
            .and_then(|json| TlsReport::parse_json(&json).ok()),
    };
    if dmarc.is_err() && tls.is_none() {
        return None;
    }
    let subject = MessageParser::default().parse_headers(message).and_then(|m| m.subject().map(str::to_owned));
    Some(Received {
        received: now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        from: from.to_owned(),
        subject: subject.unwrap_or_default(),
        dmarc: dmarc.ok().map(|r| Feedback::from_report(&r)),
        tls,
    })
}

/// Keeps `r` in `dir` (a private file named after its arrival and a counter); its path.
pub fn store(dir: &Path, r: &Received) -> io::Result<PathBuf> {
    let json = serde_json::to_vec_pretty(r).map_err(io::Error::other)?;
    for n in 0..1000u32 {
        let path = dir.join(format!("{}-{n:03}.json", r.received));
        match private::create_new(&path) {
            Ok(mut f) => {
                f.write_all(&json)?;
                f.sync_all()?;
                fs::File::open(dir)?.sync_all()?;
                return Ok(path);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        }
    }
    Err(io::Error::other(format!("{}: 1000 reports in one second", dir.display())))
}

/// Deletes the reports in `dir` that arrived before `before` (seconds since the epoch, as
/// their file names begin); how many.
pub fn prune(dir: &Path, before: u64) -> io::Result<usize> {
    let mut n = 0;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let at = name.split('-').next().and_then(|t| t.parse::<u64>().ok());
        if name.ends_with(".json") && at.is_some_and(|t| t < before) {
            fs::remove_file(&path)?;
            n += 1;
        }
    }
    Ok(n)
}

/// The reports kept in `dir`, oldest first: each file's path and its report, or why it
/// cannot be read.
pub fn list(dir: &Path) -> io::Result<Vec<(PathBuf, Result<Received, String>)>> {
    let mut paths: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(rd) => {
            rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "json")).collect()
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
    };
    paths.sort();
    Ok(paths
        .into_iter()
        .map(|p| {
            let r = fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()));
            (p, r)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gz(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    fn mime(ctype: &str, name: &str, content: &[u8]) -> Vec<u8> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(content);
        format!(
            "From: r@x.test\r\nSubject: Report Domain: a.test\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n\
             --b\r\nContent-Type: {ctype}\r\nContent-Transfer-Encoding: base64\r\n\
             Content-Disposition: attachment; filename=\"{name}\"\r\n\r\n{b64}\r\n--b--\r\n"
        )
        .into_bytes()
    }

    const XML: &str = "<feedback><report_metadata><org_name>x.test</org_name></report_metadata>\
        <policy_published><domain>a.test</domain></policy_published>\
        <record><row><source_ip>192.0.2.9</source_ip><count>2</count></row></record></feedback>";

    #[test]
    fn gzip_plain_and_tls_reports_and_no_report() {
        let now = UNIX_EPOCH + std::time::Duration::from_secs(1000);
        let r = parse(&mime("application/gzip", "x!a.test!1!2.xml.gz", &gz(XML.as_bytes())), "r@x.test", 1 << 20, now)
            .unwrap();
        let f = r.dmarc.unwrap();
        assert_eq!((f.org_name.as_str(), f.records[0].count, r.received), ("x.test", 2, 1000));
        assert!(parse(&mime("text/xml", "r.xml", XML.as_bytes()), "", 1 << 20, now).unwrap().dmarc.is_some());
        let json = br#"{"organization-name":"o","date-range":{"start-datetime":"2026-12-01T00:00:00Z",
            "end-datetime":"2026-12-01T23:59:59Z"},"contact-info":"c","report-id":"i","policies":[]}"#;
        let t = parse(&mime("application/tlsrpt+gzip", "t.json.gz", &gz(json)), "", 1 << 20, now).unwrap();
        assert_eq!(t.tls.unwrap().organization_name, "o");
        assert!(parse(b"From: a@b.test\r\nSubject: hello\r\n\r\n<p>not a report</p>\r\n", "", 1 << 20, now).is_none());
        assert!(parse(&mime("application/gzip", "x.xml.gz", &gz(XML.as_bytes())), "", 10, now).is_none(), "limit");
        assert_eq!(r.subject, "Report Domain: a.test");
    }

    #[test]
    fn stored_private_and_listed() {
        let dir = tempfile::tempdir().unwrap();
        let r = Received { received: 5, from: "a".into(), ..Default::default() };
        let p1 = store(dir.path(), &r).unwrap();
        let p2 = store(dir.path(), &r).unwrap();
        assert_ne!(p1, p2);
        std::fs::write(dir.path().join("9-bad.json"), "{").unwrap();
        let l = list(dir.path()).unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].1.as_ref().unwrap(), &r);
        assert!(l[2].1.is_err());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p1).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(prune(dir.path(), 6).unwrap(), 2, "the two from second 5");
        assert_eq!(list(dir.path()).unwrap().len(), 1);
    }
}
