//! `smtp-std quickstart`: everything a new domain needs, in one directory: the config file
//! (port 25, submission on 587 and 465, TLS, DKIM signing), the accounts file with a first
//! account (its password printed once), a DKIM key, a self-signed certificate, a Dovecot
//! config for the same accounts and Maildirs, the DNS records to publish and the command that
//! starts the server.

mod dovecot;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use clap::Args;
use smtp_std::lmtp::LmtpTarget;
use smtp_std::mta::accounts::{hash, passwd};
use smtp_std::mta::auth::{DkimAlgorithm, DkimKey};

pub(crate) const QUICKSTART_AFTER: &str = "\
EXAMPLE:
  smtp-std quickstart alice@example.org --hostname mail.example.org --ip 203.0.113.7 \\
       --ipv6 2001:db8::7 --user vmail --dir /etc/smtp-std --data-dir /var/lib/smtp-std
  Writes into /etc/smtp-std:
    smtp-std.toml   the server: port 25 for mail from the world, 587 (STARTTLS) and 465
                    (TLS) for your accounts, [tls], the DKIM key for the domain's mail
    passwd          the accounts (alice, with a generated password printed once)
    dkim-s1.key     the DKIM signing key (its public half is one of the DNS records)
    cert.pem, key.pem  a self-signed certificate for the host name, until you replace it
                    (certbot's files: see the README, \"Certificates\")
    dovecot.conf    Dovecot 2.3: IMAP (143 STARTTLS, 993) for the same accounts and Maildirs,
                    reading the mail as --user
  and prints the DNS records to publish and the command that starts the server:
    smtp-std serve --config /etc/smtp-std/smtp-std.toml

  --lmtp 127.0.0.1:24 (or a socket path) hands the mail to Dovecot's LMTP instead of
  writing the Maildirs; dovecot.conf then has the matching LMTP listener and runs each
  account's Sieve script (DATA_DIR/home/DOMAIN/LOCAL/.dovecot.sieve: fileinto, vacation),
  whose autoreplies go out through port 25 on loopback (relay_networks, no password).
  Needs Dovecot's LMTP and Pigeonhole (apt: dovecot-lmtpd dovecot-sieve).
  Nothing is overwritten: if any of these files exists in --dir, nothing is written.
  Add more people later with `smtp-std user add bob@example.org --config FILE --generate`.";

#[derive(Debug, Args)]
pub(crate) struct Quickstart {
    /// The first account, `local@domain`: the domain is the one mail is served for, and the
    /// account also receives postmaster@ and abuse@ it.
    #[arg(value_name = "ADDRESS")]
    address: String,
    /// The mail host's name (MX, greeting, Received:, the certificate).
    #[arg(long, value_name = "NAME")]
    hostname: String,
    /// The mail host's public IPv4 address (the A record, SPF, PTR).
    #[arg(long, value_name = "ADDR")]
    ip: Ipv4Addr,
    /// The mail host's public IPv6 address, if it has one: an AAAA record, `ip6:` in SPF, a
    /// PTR, and every listener on it too.
    #[arg(long, value_name = "ADDR")]
    ipv6: Option<Ipv6Addr>,
    /// Where to write the files (created if missing).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// The server's `data_dir`: the mailboxes, the queue (created by `serve`, owned by
    /// --user). Default: DIR/data.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Where the server listens for mail from the world (repeatable). Default: 0.0.0.0:25,
    /// and port 25 of --ipv6.
    #[arg(long, value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// Where the accounts submit mail with STARTTLS (repeatable). Default: port 587 of the
    /// same addresses.
    #[arg(long, value_name = "ADDR")]
    submission: Vec<SocketAddr>,
    /// Where the accounts submit mail over implicit TLS (repeatable). Default: port 465 of
    /// the same addresses.
    #[arg(long, value_name = "ADDR")]
    submissions: Vec<SocketAddr>,
    /// Run as this user after binding the ports: it owns the mailboxes, and Dovecot reads
    /// them as it. Needed when run as root (Dovecot never reads mail as root).
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// The DKIM selector.
    #[arg(long, value_name = "NAME", default_value = "s1")]
    selector: String,
    /// Hand accepted mail to Dovecot's LMTP at this loopback `ADDR:PORT` or Unix socket path
    /// instead of writing the Maildirs (`[delivery] lmtp`); dovecot.conf gets the listener,
    /// and Sieve filters and autoreplies (Pigeonhole), the replies sent through port 25 on
    /// loopback (`relay_networks`).
    #[arg(long, value_name = "ADDR|PATH")]
    lmtp: Option<String>,
}

fn io_err(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn invalid(m: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, m)
}

/// A TOML string literal.
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// A TOML array of addresses.
fn addresses(list: &[SocketAddr]) -> String {
    let items: Vec<String> = list.iter().map(|a| quoted(&a.to_string())).collect();
    format!("[{}]", items.join(", "))
}

/// The user the server runs as: `--user`, or the one running quickstart (who then starts
/// `serve`). Never root: Dovecot does not read mail as uid 0.
fn server_user(user: Option<&str>) -> std::io::Result<nix::unistd::User> {
    let found = match user {
        Some(name) => nix::unistd::User::from_name(name)
            .map_err(|e| std::io::Error::other(format!("--user {name}: {e}")))?
            .ok_or_else(|| invalid(format!("--user {name}: no such user on this system")))?,
        None => {
            let uid = nix::unistd::Uid::effective();
            let user = nix::unistd::User::from_uid(uid)
                .map_err(|e| std::io::Error::other(format!("uid {uid}: {e}")))?
                .ok_or_else(|| invalid(format!("uid {uid}: not in the user database; give --user NAME")))?;
            if uid.is_root() {
                return Err(invalid(
                    "run as root: give --user NAME, the ordinary user the server becomes after binding its \
                     ports (it owns the mail, and Dovecot reads it as that user; never as root), e.g. \
                     `useradd --system --home-dir /var/lib/smtp-std vmail` and --user vmail"
                        .into(),
                ));
            }
            user
        }
    };
    if found.uid.is_root() {
        return Err(invalid(format!(
            "--user {}: uid 0; Dovecot never reads mail as root: give an ordinary user",
            found.name
        )));
    }
    Ok(found)
}

/// The files quickstart writes, removed again if it cannot finish.
#[derive(Default)]
struct Written(Vec<PathBuf>);

impl Written {
    /// Writes a new file (never over an existing one) with `mode`, synced.
    fn write(&mut self, path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        let mut f = options.open(path).map_err(|e| io_err(path, e))?;
        self.0.push(path.to_owned());
        f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(|e| io_err(path, e))
    }

    fn undo(self) {
        for p in self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A self-signed certificate for `hostname` (ECDSA P-256), valid from the start of this
/// month for ten years: certificate and key, PEM.
fn self_signed(hostname: &str) -> std::io::Result<(String, String)> {
    let e = |e: rcgen::Error| std::io::Error::other(format!("a certificate for {hostname}: {e}"));
    let mut params = rcgen::CertificateParams::new(vec![hostname.to_owned()]).map_err(e)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, hostname);
    let days = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86_400);
    let (year, month) = year_month(days as i64);
    params.not_before = rcgen::date_time_ymd(year, month, 1);
    params.not_after = rcgen::date_time_ymd(year + 10, month, 1);
    let key = rcgen::KeyPair::generate().map_err(e)?;
    let cert = params.self_signed(&key).map_err(e)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The year and month (1-12) of a day counted from 1970-01-01 (the proleptic Gregorian
/// calendar; Howard Hinnant's `civil_from_days`).
fn year_month(days: i64) -> (i32, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (i32::try_from(year).unwrap_or(i32::MAX), month as u8)
}

pub(crate) fn run(args: Quickstart) -> std::io::Result<()> {
    let address = args.address.trim().to_ascii_lowercase();
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Err(invalid(format!("{:?}: expected an address, local@domain", args.address)));
    };
    if !smtp_std::mta::config::valid_local_part(local) || domain.is_empty() {
        return Err(invalid(format!("{:?}: expected an address, local@domain", args.address)));
    }
    if !host_name(&args.hostname) {
        return Err(invalid(format!("--hostname {:?}: expected a host name, such as mail.example.org", args.hostname)));
    }
    if args.selector.is_empty()
        || args.selector.starts_with('.')
        || !args.selector.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(invalid(format!("--selector {:?}: letters, digits, '-', '_' and '.' only", args.selector)));
    }
    let lmtp = match &args.lmtp {
        Some(s) => Some(lmtp_target(s)?),
        None => None,
    };
    let user = server_user(args.user.as_deref())?;

    let created = !args.dir.exists();
    std::fs::create_dir_all(&args.dir).map_err(|e| io_err(&args.dir, e))?;
    let dir = std::fs::canonicalize(&args.dir).map_err(|e| io_err(&args.dir, e))?;
    if created {
        // Dovecot's processes and the server after its privilege drop pass through it.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).map_err(|e| io_err(&dir, e))?;
    }
    dovecot::dovecot_safe(&dir).map_err(|e| invalid(format!("--dir {e}")))?;
    let config_path = dir.join("smtp-std.toml");
    let accounts = dir.join("passwd");
    let key_path = dir.join(format!("dkim-{}.key", args.selector));
    let (cert_pem, key_pem) = (dir.join("cert.pem"), dir.join("key.pem"));
    let dovecot_path = dir.join("dovecot.conf");
    let data_dir = match &args.data_dir {
        Some(d) if d.is_relative() => {
            return Err(invalid(format!("--data-dir {}: give an absolute path", d.display())))
        }
        Some(d) => d.clone(),
        None => dir.join("data"),
    };
    dovecot::dovecot_safe(&data_dir).map_err(|e| invalid(format!("--data-dir {e}")))?;
    // Nothing is overwritten: one existing file stops the command before anything is written.
    for p in [&config_path, &accounts, &key_path, &cert_pem, &key_pem, &dovecot_path] {
        if p.exists() {
            return Err(invalid(format!("{} exists: quickstart writes a new setup only", p.display())));
        }
    }

    let defaults = |port: u16| -> Vec<SocketAddr> {
        let mut v = vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)];
        v.extend(args.ipv6.map(|a| SocketAddr::new(IpAddr::V6(a), port)));
        v
    };
    let or = |given: &[SocketAddr], port| if given.is_empty() { defaults(port) } else { given.to_vec() };
    let (mut smtp, submission, submissions) =
        (or(&args.listen, 25), or(&args.submission, 587), or(&args.submissions, 465));
    // With LMTP, Dovecot's Sieve sends its autoreplies to port 25 on loopback, a relay for
    // relay_networks (loopback): one smtp listener must take loopback connections.
    let autoreplies = lmtp.is_some().then(|| loopback_listener(&mut smtp));
    let user_line = match &args.user {
        Some(u) => format!("# Runs as this user after binding the ports: it owns the mail.\nuser = {}\n", quoted(u)),
        None => "# Start as root and run as this user after binding the ports:\n# user = \"vmail\"\n".to_owned(),
    };
    let delivery = match &args.lmtp {
        Some(l) => format!(
            "\n# Dovecot's LMTP writes the mailboxes (dovecot.conf has the listener), running each\n\
             # account's Sieve filters.\n[delivery]\nlmtp = {}\n",
            quoted(l.trim())
        ),
        None => String::new(),
    };
    let relay_line = match autoreplies {
        Some(_) => "# Programs of this host (Dovecot's Sieve autoreplies, to port 25 on loopback) may send\n\
                    # mail to any domain without logging in: it is queued and signed like the accounts'.\n\
                    relay_networks = [\"127.0.0.1/32\", \"::1/128\"]\n"
            .to_owned(),
        None => String::new(),
    };
    let config = format!(
        "# smtp-std mail server for {domain} (written by `smtp-std quickstart`).\n\
         hostname = {hostname}\n\
         # mailboxes/<domain>/<user>/ (Maildirs), queue/, srs.key: back it up.\n\
         data_dir = {data}\n\
         # Dovecot passwd-file: smtp-std user add|passwd|del|list.\n\
         accounts = {accounts}\n\
         {user_line}\
         {relay_line}\
         \n[listen]\n\
         # Mail from the world for {domain} (STARTTLS offered).\n\
         smtp = {smtp}\n\
         # The accounts send here: STARTTLS (587) or implicit TLS (465), AUTH required.\n\
         submission = {submission}\n\
         submissions = {submissions}\n\
         \n# A self-signed certificate for {hostname_raw}, made by quickstart. Replace the files, or\n\
         # use certbot's (re-read when they change):\n\
         #   cert = \"/etc/letsencrypt/live/{hostname_raw}/fullchain.pem\"\n\
         #   key = \"/etc/letsencrypt/live/{hostname_raw}/privkey.pem\"\n\
         [tls]\n\
         cert = {cert}\n\
         key = {key}\n\
         {delivery}\
         \n# DMARC aggregate and TLS reports about {domain} arrive here (the rua of its DMARC and\n\
         # TLS-RPT records): `smtp-std reports --config FILE` sums them up. DMARC reports about\n\
         # the mail we receive go out daily to the domains that ask (send_dmarc = false: none).\n\
         [reports]\n\
         address = {reports_q}\n\
         \n[[domain]]\n\
         name = {domain_q}\n\
         # Mail from the domain's accounts to other domains is signed with this key; its public\n\
         # half is the {selector}._domainkey.{domain} record.\n\
         dkim_selector = {selector_q}\n\
         dkim_key = {dkim}\n\
         # catch_all = {local_q}\n\
         [domain.aliases]\n\
         postmaster = {local_q}\n\
         abuse = {local_q}\n\
         {dmarc_alias}",
        hostname = quoted(&args.hostname),
        hostname_raw = args.hostname,
        data = quoted(&data_dir.to_string_lossy()),
        accounts = quoted(&accounts.to_string_lossy()),
        smtp = addresses(&smtp),
        submission = addresses(&submission),
        submissions = addresses(&submissions),
        cert = quoted(&cert_pem.to_string_lossy()),
        key = quoted(&key_pem.to_string_lossy()),
        domain_q = quoted(domain),
        reports_q = quoted(&format!("dmarc@{domain}")),
        // (An account named dmarc is the report address itself.)
        dmarc_alias = if local.eq_ignore_ascii_case("dmarc") {
            String::new()
        } else {
            format!("# Mail to the report address that is no report.\ndmarc = {}\n", quoted(local))
        },
        local_q = quoted(local),
        selector = args.selector,
        selector_q = quoted(&args.selector),
        dkim = quoted(&key_path.to_string_lossy()),
    );
    // The config must be one `serve` accepts: check it before writing anything.
    if let Err(e) = smtp_std::mta::config::Config::parse(&config, &config_path) {
        return Err(invalid(format!("quickstart would write a bad config: {e}")));
    }
    let dovecot_conf = dovecot::DovecotConf {
        domain,
        config: &config_path,
        accounts: &accounts,
        data_dir: &data_dir,
        user: &user.name,
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        cert: &cert_pem,
        key: &key_pem,
        lmtp: lmtp.as_ref(),
        submission_host: autoreplies,
    }
    .text();

    let (dkim, dkim_pem) = DkimKey::generate(DkimAlgorithm::Rsa)?;
    let (cert, cert_key) = self_signed(&args.hostname)?;
    let password = hash::generate_password();
    let mut written = Written::default();
    let result = (|| {
        written.write(&key_path, &dkim_pem, 0o600)?;
        written.write(&cert_pem, &cert, 0o644)?;
        written.write(&key_pem, &cert_key, 0o600)?;
        written.0.push(accounts.clone());
        passwd::add_user(&accounts, &address, &hash::hash_password(&password))
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        written.write(&dovecot_path, &dovecot_conf, 0o644)?;
        if args.user.is_some() {
            give_to_server(&accounts, &[&key_path, &key_pem], &user)?;
        }
        written.write(&config_path, &config, 0o644)
    })();
    if let Err(e) = result {
        written.undo();
        return Err(e);
    }

    let records = smtp_std::mta::auth::records::Records {
        domain: domain.to_owned(),
        host: args.hostname.clone(),
        ipv4: vec![args.ip],
        ipv6: args.ipv6.into_iter().collect(),
        dkim: Some((args.selector.clone(), dkim.record_value())),
        dmarc_policy: "quarantine".to_owned(),
        rua: Some(format!("mailto:dmarc@{domain}")),
    };
    println!("Wrote into {}:", dir.display());
    println!("  smtp-std.toml   the server (ports {}, {}, {})", ports(&smtp), ports(&submission), ports(&submissions));
    println!("  passwd          the accounts");
    println!("  dkim-{}.key     the DKIM key that signs {domain}'s mail", args.selector);
    println!(
        "  cert.pem, key.pem  a self-signed certificate for {} (replace it: README, \"Certificates\")",
        args.hostname
    );
    println!("  dovecot.conf    IMAP for the same accounts and mail, read as {}", user.name);
    println!();
    println!("Account {address}, password (shown once, keep it): {password}");
    println!();
    println!("Publish these DNS records (DMARC quarantines what neither SPF nor the DKIM signature");
    println!("vouches for; dmarc@{domain} receives the reports, `smtp-std reports` shows them):");
    print!("{}", records.zone());
    println!("; TLS-RPT (RFC 8460): senders report failed TLS sessions to the same address.");
    println!("_smtp._tls.{domain}. 3600 IN TXT \"v=TLSRPTv1; rua=mailto:dmarc@{domain}\"");
    println!();
    println!("Start the server:");
    println!("  smtp-std serve --config {}", config_path.display());
    println!("Read the mail over IMAP (143 with STARTTLS, 993) with Dovecot:");
    println!("  doveconf -c {} -n    # check it", dovecot_path.display());
    println!("  then make /etc/dovecot/dovecot.conf the one line `!include {}`", dovecot_path.display());
    println!("  and restart Dovecot (systemctl restart dovecot).");
    println!("Then check the records: smtp-std check --domain {domain} --selector {}", args.selector);
    Ok(())
}

/// The listener of `smtp` that Dovecot's Sieve reaches on loopback for its autoreplies, as
/// its `submission_host`: the first one on a loopback or the unspecified address with a port
/// (`0.0.0.0:25` is reached at `127.0.0.1:25`); if there is none, `127.0.0.1` on the port of
/// the first listener (25 if it has none) is added to `smtp`.
fn loopback_listener(smtp: &mut Vec<SocketAddr>) -> SocketAddr {
    let loopback = |a: &SocketAddr| match a.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => Some(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), a.port())),
        IpAddr::V6(ip) if ip.is_unspecified() => Some(SocketAddr::new(Ipv6Addr::LOCALHOST.into(), a.port())),
        ip if ip.is_loopback() => Some(*a),
        _ => None,
    };
    if let Some(a) = smtp.iter().filter(|a| a.port() != 0).find_map(loopback) {
        return a;
    }
    let port = smtp.iter().map(|a| a.port()).find(|&p| p != 0).unwrap_or(25);
    let added = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port);
    smtp.push(added);
    added
}

/// `25`, `25/2525`: the ports of `list`, each once.
fn ports(list: &[SocketAddr]) -> String {
    let mut v: Vec<String> = Vec::new();
    for a in list {
        let p = a.port().to_string();
        if !v.contains(&p) {
            v.push(p);
        }
    }
    v.join("/")
}

/// Whether `s` is a host name: dot-separated labels of letters, digits and `-`.
fn host_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `--lmtp`: a loopback `ADDR:PORT` or an absolute socket path Dovecot can listen on.
fn lmtp_target(s: &str) -> std::io::Result<LmtpTarget> {
    let target = LmtpTarget::parse(s).map_err(|e| invalid(format!("--lmtp {e}")))?;
    match &target {
        LmtpTarget::Tcp(addr) => match addr.parse::<SocketAddr>() {
            Ok(a) if a.ip().is_loopback() => {}
            Ok(_) => {
                return Err(invalid(format!(
                    "--lmtp {addr}: LMTP takes mail for any account without a password: give a loopback \
                     address (127.0.0.1:24) or a socket path"
                )))
            }
            Err(_) => return Err(invalid(format!("--lmtp {addr}: give an IP address and port, e.g. 127.0.0.1:24"))),
        },
        LmtpTarget::Unix(path) => dovecot::dovecot_safe(path).map_err(|e| invalid(format!("--lmtp {e}")))?,
    }
    Ok(target)
}

/// The files the server re-reads after its privilege drop, for `user` when we are root: the
/// accounts file `user:dovecot` 0640 (Dovecot's auth reads it as `dovecot`, when that group
/// exists), the private keys `user` 0600.
fn give_to_server(accounts: &Path, keys: &[&Path], user: &nix::unistd::User) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(());
    }
    let group = nix::unistd::Group::from_name("dovecot").ok().flatten().map_or(user.gid, |g| g.gid);
    let chown = |path: &Path, gid| {
        nix::unistd::chown(path, Some(user.uid), Some(gid))
            .map_err(|e| std::io::Error::other(format!("chown {} {}: {e}", user.name, path.display())))
    };
    chown(accounts, group)?;
    std::fs::set_permissions(accounts, std::fs::Permissions::from_mode(0o640)).map_err(|e| io_err(accounts, e))?;
    for key in keys {
        chown(key, user.gid)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn year_and_month_of_a_day() {
        assert_eq!(year_month(0), (1970, 1));
        assert_eq!(year_month(31), (1970, 2));
        assert_eq!(year_month(-1), (1969, 12));
        // 2024-02-29 and 2024-03-01.
        assert_eq!(year_month(19_782), (2024, 2));
        assert_eq!(year_month(19_783), (2024, 3));
        assert_eq!(year_month(20_454), (2026, 1)); // 2026-01-01
    }

    #[test]
    fn autoreplies_reach_port_25_on_loopback() {
        let addrs = |list: &[&str]| list.iter().map(|a| a.parse().unwrap()).collect::<Vec<SocketAddr>>();
        let mut smtp = addrs(&["0.0.0.0:25", "[2001:db8::7]:25"]);
        assert_eq!(loopback_listener(&mut smtp), "127.0.0.1:25".parse().unwrap());
        assert_eq!(smtp.len(), 2);
        let mut smtp = addrs(&["127.0.0.1:0", "127.0.0.1:2525"]);
        assert_eq!(loopback_listener(&mut smtp), "127.0.0.1:2525".parse().unwrap());
        // Only a public address: loopback is added, on its port.
        let mut smtp = addrs(&["203.0.113.7:25"]);
        assert_eq!(loopback_listener(&mut smtp), "127.0.0.1:25".parse().unwrap());
        assert_eq!(smtp, addrs(&["203.0.113.7:25", "127.0.0.1:25"]));
    }

    #[test]
    fn a_certificate_for_the_host_name() {
        let (cert, key) = self_signed("mail.example.org").unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
        let body: String = cert.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, body).unwrap();
        assert!(der.windows(16).any(|w| w == b"mail.example.org"));
    }
}
