//! `smtp-std send`: one message through a smarthost, or directly to the recipients' MX hosts.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use smtp_proto::parse::params::{Notify, Ret};
use smtp_std::client::{self, Envelope, SendError, SendOptions, TlsMode};
use smtp_std::mta::deliver;
use smtp_std::mta::maildir::system_hostname;

pub(crate) const SEND_AFTER: &str = "\
EXAMPLES:
  Through your provider's submission server (STARTTLS required, AUTH PLAIN/LOGIN); the
  password comes from a file or from $SMTP_PASSWORD:
smtp-std send --server smtp.example.net:587 --auth-user me@example.org \\
     --auth-password-file ~/.smtp-password \\
     --from me@example.org --to you@example.net < message.eml

  Implicit TLS (port 465), two recipients, a delivery status notification on failure:
smtp-std send --server smtp.example.net:465 --tls implicit --auth-user me \\
     --from me@example.org --to a@example.net --to b@example.com \\
     --notify FAILURE,DELAY --ret hdrs --envid order-1234 --file message.eml

  Directly to each recipient domain's MX hosts (no --server), DKIM-signed:
smtp-std send --from me@example.org --to you@example.net --to them@example.com \\
     --dkim-key dkim.key --dkim-selector s1 < message.eml

  A local test server without TLS (e.g. `smtp-std serve`), and one with a test CA:
printf 'Subject: hi\\n\\nhello\\n' | smtp-std send --server 127.0.0.1:2525 --tls off \\
     --from a@example.org --to b@example.org
smtp-std send --server localhost:2525 --tls-ca test-ca.pem --from a@x --to b@y < m.eml

OUTPUT:
  One line per recipient on stdout (direct delivery adds the host that answered):
b@example.net: accepted 250 2.1.5 Ok
c@example.com: refused 550 5.1.1 user unknown
d@example.com: deferred 451 4.7.1 greylisted (mx2.example.com [192.0.2.2])
  Errors name the step that failed and the server's reply, on stderr:
smtp-std: MAIL FROM:<me@example.org> refused: 553 5.7.1 Sender address rejected

EXIT STATUS (sysexits.h):
  0   every recipient accepted
  75  EX_TEMPFAIL: try again later: a 4xx reply (to the message or to any recipient),
  connection failure, timeout, TLS required but unavailable or failed
  69  EX_UNAVAILABLE: refused for good (5xx) - the message, or some recipient while
  none was deferred (the others got the message: see stdout)
  65  EX_DATAERR: the message or envelope cannot be sent as is (a control character in
  an address, larger than the server's SIZE, a header block over 1 MiB)
  64  EX_USAGE: bad arguments (no password, an unreadable DKIM key)
  74  EX_IOERR: the message file cannot be read
  2   invalid command line (clap)

NOTES:
  Without Date: or Message-ID: in the header block, both are added on top (Date in UTC,
  Message-ID <unique@EHLO-name>). The message is streamed: bare LF becomes CRLF, lines
  starting with '.' are dot-stuffed, a missing final CRLF is added. PIPELINING is used when
  offered, SIZE is declared for files and checked against the server's limit before MAIL.
  DSN options are sent only when the server offers DSN. With --tls required (the default)
  nothing but EHLO and STARTTLS is sent before TLS, and the certificate is verified against
  Mozilla's roots (--tls-ca to trust your own CA; --insecure for self-signed test servers).
  AUTH is never sent without TLS unless --allow-cleartext-auth.

DIRECT DELIVERY (no --server):
  Recipients are grouped by domain, one transaction per domain. Each domain's MX hosts are
  tried in preference order (equal ones shuffled), every address of a host in turn; no MX
  means the domain's own A/AAAA (RFC 5321 5.1); a null MX (RFC 7505) fails at once (69).
  The next host is tried after a connection failure or a 4xx (greeting, EHLO, MAIL, end of
  data, or recipients deferred); a 5xx is final. If every host defers: 75 and the last reply.
  TLS is opportunistic by default: STARTTLS when offered, the certificate NOT verified (as
  MTAs do without DANE or MTA-STS: it protects against eavesdropping, not against an active
  attacker); --tls required verifies it. --dns ADDR:PORT and --port (default 25) point the
  lookups and the connections elsewhere (tests). The message is read once into memory (up to
  4 MiB) or an unlinked temporary file and sent from there to every domain.

DKIM (--dkim-key FILE --dkim-selector S [--dkim-domain D]):
  The final message (after Date/Message-ID were added, line ends made CRLF) is read into
  memory and a DKIM-Signature (rsa-sha256 or ed25519-sha256, per the key) is put on top;
  d= is --dkim-domain, else the From: header's domain, else --from's. With --server too.";

const EX_USAGE: u8 = 64;
const EX_DATAERR: u8 = 65;
const EX_UNAVAILABLE: u8 = 69;
const EX_IOERR: u8 = 74;
const EX_TEMPFAIL: u8 = 75;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum TlsArg {
    /// STARTTLS must succeed (certificate verified) before anything else is sent.
    Required,
    /// STARTTLS if offered, else plain text.
    Opportunistic,
    /// No TLS.
    Off,
    /// TLS from the first byte (port 465).
    Implicit,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum RetArg {
    /// Return the whole message in a DSN.
    Full,
    /// Return only the headers.
    Hdrs,
}

#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// Envelope sender (MAIL FROM); "" for the null sender <>.
    #[arg(long, value_name = "ADDR")]
    from: String,
    /// Recipient (RCPT TO). Repeatable.
    #[arg(long, value_name = "ADDR", required = true)]
    to: Vec<String>,
    /// The SMTP server (smarthost) as HOST:PORT. Without it: direct delivery to each
    /// recipient domain's MX hosts.
    #[arg(long, value_name = "HOST:PORT")]
    server: Option<String>,
    /// Direct delivery: the MX hosts' SMTP port.
    #[arg(long, value_name = "PORT", default_value_t = 25, conflicts_with = "server")]
    port: u16,
    /// Direct delivery: ask this DNS server (ADDR:PORT) instead of the system's resolvers.
    #[arg(long, value_name = "ADDR", conflicts_with = "server")]
    dns: Option<std::net::SocketAddr>,
    /// TLS policy. Default: required with --server; opportunistic (certificate not
    /// verified) for direct delivery.
    #[arg(long, value_enum, value_name = "MODE")]
    tls: Option<TlsArg>,
    /// Trust only the CA certificates in this PEM file (instead of Mozilla's roots).
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    tls_ca: Option<PathBuf>,
    /// Do not verify the server's certificate (self-signed test servers only).
    #[arg(long)]
    insecure: bool,
    /// AUTH user name (PLAIN if offered, else LOGIN). The password comes from
    /// --auth-password-file or $SMTP_PASSWORD.
    #[arg(long, visible_alias = "auth", value_name = "USER")]
    auth_user: Option<String>,
    /// File whose first line is the AUTH password.
    #[arg(long, value_name = "FILE", requires = "auth_user")]
    auth_password_file: Option<PathBuf>,
    /// Allow AUTH without TLS (the password in clear text).
    #[arg(long)]
    allow_cleartext_auth: bool,
    /// Our name in EHLO and in the Message-ID. Default: this machine's name.
    #[arg(long, value_name = "NAME")]
    ehlo: Option<String>,
    /// Read the message from FILE instead of stdin.
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// DSN NOTIFY for every recipient: NEVER, or a comma list of SUCCESS, FAILURE, DELAY.
    #[arg(long, value_name = "LIST", value_parser = parse_notify)]
    notify: Option<Notify>,
    /// DSN RET: what a bounce returns.
    #[arg(long, value_enum)]
    ret: Option<RetArg>,
    /// DSN ENVID: an identifier returned in DSNs.
    #[arg(long, value_name = "ID")]
    envid: Option<String>,
    /// Timeout in seconds for connecting and for each reply. Default: RFC 5321's
    /// (5 minutes for commands, 10 after the message; 30 s to connect).
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
    /// Sign the message with this DKIM private key (PEM, from dkim-keygen): rsa-sha256 or
    /// ed25519-sha256 per the key.
    #[arg(long, value_name = "FILE", requires = "dkim_selector")]
    dkim_key: Option<PathBuf>,
    /// The DKIM selector (s=) of --dkim-key.
    #[arg(long, value_name = "NAME", requires = "dkim_key")]
    dkim_selector: Option<String>,
    /// The DKIM signing domain (d=). Default: the From: header's domain, else --from's.
    #[arg(long, value_name = "DOMAIN", requires = "dkim_key")]
    dkim_domain: Option<String>,
}

fn parse_notify(s: &str) -> Result<Notify, String> {
    if s.eq_ignore_ascii_case("never") {
        return Ok(Notify::NEVER);
    }
    let mut bits = 0;
    for word in s.split(',') {
        bits |= match word.trim().to_ascii_uppercase().as_str() {
            "SUCCESS" => Notify::SUCCESS,
            "FAILURE" => Notify::FAILURE,
            "DELAY" => Notify::DELAY,
            _ => return Err(format!("{word:?}: NEVER, or a list of SUCCESS, FAILURE, DELAY")),
        };
    }
    Ok(Notify(bits))
}

fn fail(code: u8, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("smtp-std: {msg}");
    ExitCode::from(code)
}

pub(crate) fn run(args: SendArgs) -> ExitCode {
    let ehlo = args.ehlo.clone().unwrap_or_else(system_hostname);
    let mut envelope = Envelope::new(&args.from, args.to.iter().map(String::as_str));
    for r in &mut envelope.to {
        r.notify = args.notify;
    }
    envelope.ret = args.ret.map(|r| match r {
        RetArg::Full => Ret::Full,
        RetArg::Hdrs => Ret::Hdrs,
    });
    envelope.envid = args.envid.clone();
    // Refused before anything is read or written.
    if let Err(e) = envelope.validate() {
        return fail(EX_DATAERR, e);
    }
    let direct = args.server.is_none();
    let server = args.server.clone().unwrap_or_default();
    let mut options = SendOptions::new(&server, &ehlo);
    options.tls = match args.tls {
        Some(TlsArg::Required) => TlsMode::Required,
        Some(TlsArg::Opportunistic) => TlsMode::Opportunistic,
        Some(TlsArg::Off) => TlsMode::Off,
        Some(TlsArg::Implicit) => TlsMode::Implicit,
        None if direct => TlsMode::Opportunistic,
        None => TlsMode::Required,
    };
    if let Some(t) = args.timeout {
        if !(t.is_finite() && t > 0.0) {
            return fail(EX_USAGE, "--timeout must be > 0");
        }
        options = options.timeout(Duration::from_secs_f64(t));
    }
    if let Some(ca) = &args.tls_ca {
        match client::tls_config_from_ca_file(ca) {
            Ok(c) => options.tls_config = Some(c),
            Err(e) => return fail(EX_USAGE, format!("--tls-ca: {e}")),
        }
    } else if args.insecure || (direct && options.tls == TlsMode::Opportunistic) {
        // Opportunistic MX delivery encrypts but cannot authenticate (no DANE/MTA-STS).
        options.tls_config = Some(client::insecure_tls_config());
    }
    options.allow_cleartext_auth = args.allow_cleartext_auth;
    if direct && args.auth_user.is_some() {
        return fail(EX_USAGE, "--auth-user needs --server (MX hosts take mail without AUTH)");
    }
    if let Some(user) = &args.auth_user {
        let password = match &args.auth_password_file {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(s) => s.lines().next().unwrap_or_default().to_owned(),
                Err(e) => return fail(EX_USAGE, format!("{}: {e}", path.display())),
            },
            None => match std::env::var("SMTP_PASSWORD") {
                Ok(p) => p,
                Err(_) => return fail(EX_USAGE, "--auth-user needs --auth-password-file or $SMTP_PASSWORD"),
            },
        };
        options.auth = Some(client::Auth { user: user.clone(), password });
    }

    // The message: a file (its size declared with SIZE) or stdin.
    let (input, size): (Box<dyn Read>, Option<u64>) = match &args.file {
        Some(path) => match std::fs::File::open(path) {
            Ok(f) => {
                let size = f.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
                (Box::new(f), size)
            }
            Err(e) => return fail(EX_IOERR, format!("{}: {e}", path.display())),
        },
        None => (Box::new(std::io::stdin().lock()), stdin_size()),
    };
    let (mut message, added): (Box<dyn Read>, u64) = match client::add_missing_headers(input, &ehlo) {
        Ok((m, added)) => (Box::new(m), added),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => return fail(EX_DATAERR, e),
        Err(e) => return fail(EX_IOERR, format!("reading the message: {e}")),
    };
    envelope.size = size.map(|s| s + added);
    // The final message (Date/Message-ID added) is signed: it must be read whole first.
    let message: Box<dyn Read> = match sign(&args, &envelope.from, &mut message) {
        Ok(Some(signed)) => {
            envelope.size = Some(signed.len() as u64);
            Box::new(std::io::Cursor::new(signed))
        }
        Ok(None) => message,
        Err(code) => return code,
    };
    if direct {
        return direct_mx(&args, options, &envelope, message);
    }

    match client::send(&options, &envelope, message) {
        Ok(delivery) => {
            for r in &delivery.recipients {
                println!("{r}");
            }
            eprintln!("smtp-std: message accepted by {server}: {}", delivery.reply);
            if delivery.all_accepted() {
                ExitCode::SUCCESS
            } else if delivery.refused().any(|r| r.is_transient()) {
                ExitCode::from(EX_TEMPFAIL)
            } else {
                ExitCode::from(EX_UNAVAILABLE)
            }
        }
        Err(e) => {
            match &e {
                SendError::NoValidRecipients(rs) => {
                    for r in rs {
                        println!("{r}");
                    }
                }
                e => {
                    let word = if e.is_transient() { "deferred" } else { "failed" };
                    for r in &envelope.to {
                        println!("{}: {word}: {e}", r.address);
                    }
                }
            }
            let code = match &e {
                SendError::Invalid(_) | SendError::Request(_) => EX_DATAERR,
                SendError::Input(_) => EX_IOERR,
                e if e.is_transient() => EX_TEMPFAIL,
                _ => EX_UNAVAILABLE,
            };
            fail(code, e)
        }
    }
}

/// The size of stdin when it is a regular file (`< message.eml`).
fn stdin_size() -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        let fd = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
        let meta = std::fs::File::from(fd).metadata().ok()?;
        meta.is_file().then_some(meta.len())
    }
    #[cfg(not(unix))]
    None
}

/// `--dkim-key`: the message read whole, its line ends made CRLF and a DKIM-Signature
/// prepended; `None` without the flag.
fn sign(args: &SendArgs, mail_from: &str, message: &mut dyn Read) -> Result<Option<Vec<u8>>, ExitCode> {
    let (Some(path), Some(selector)) = (&args.dkim_key, &args.dkim_selector) else {
        return Ok(None);
    };
    let key = smtp_std::mta::auth::DkimKey::load(path)
        .map_err(|e| fail(EX_USAGE, format!("--dkim-key {}: {e}", path.display())))?;
    let mut bytes = Vec::new();
    if let Err(e) = message.read_to_end(&mut bytes) {
        return Err(fail(EX_IOERR, format!("reading the message: {e}")));
    }
    let domain = match &args.dkim_domain {
        Some(d) => d.clone(),
        None => match deliver::from_header_domain(&bytes).or_else(|| deliver::domain_of(mail_from)) {
            Some(d) => d,
            None => return Err(fail(EX_USAGE, "no From: domain to sign for: give --dkim-domain")),
        },
    };
    match deliver::dkim_sign(&bytes, &key, &domain, selector) {
        Ok(signed) => Ok(Some(signed)),
        Err(e) => Err(fail(EX_DATAERR, format!("DKIM signing failed: {e}"))),
    }
}

/// Without a smarthost: each recipient domain's MX hosts (`smtp_std::mta::deliver`), the
/// message spooled first since it goes out once per domain.
fn direct_mx(args: &SendArgs, session: SendOptions, envelope: &Envelope, message: Box<dyn Read>) -> ExitCode {
    use smtp_std::mta::deliver::{MxOptions, Spool, Status, SPOOL_MEMORY};
    let dns = match smtp_std::mta::auth::Dns::new(args.dns) {
        Ok(d) => d,
        Err(e) => return fail(EX_UNAVAILABLE, format!("DNS: {e}")),
    };
    let mut spool = match Spool::new(message, SPOOL_MEMORY) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => return fail(EX_DATAERR, e),
        Err(e) => return fail(EX_IOERR, format!("reading the message: {e}")),
    };
    let mut options = MxOptions::new(&session.ehlo);
    options.session = session;
    options.port = args.port;
    let results = deliver::deliver(&dns, &options, envelope, &mut spool);
    for r in &results {
        println!("{r}");
    }
    let count = |s| results.iter().filter(|r| r.status == s).count();
    let (ok, deferred, failed) = (count(Status::Accepted), count(Status::Deferred), count(Status::Failed));
    eprintln!("smtp-std: {ok} accepted, {deferred} deferred, {failed} failed");
    if deferred > 0 {
        if let Some(last) = results.iter().rev().find(|r| r.status == Status::Deferred) {
            eprintln!("smtp-std: try again later; last: {last}");
        }
        ExitCode::from(EX_TEMPFAIL)
    } else if failed == 0 {
        ExitCode::SUCCESS
    } else if results.iter().filter(|r| r.status == Status::Failed).all(|r| r.unsendable) {
        ExitCode::from(EX_DATAERR)
    } else {
        ExitCode::from(EX_UNAVAILABLE)
    }
}
