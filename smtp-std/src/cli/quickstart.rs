//! `smtp-std quickstart`: everything a new domain needs, in one directory: the config file,
//! the accounts file with a first account (its password printed once), a DKIM key, the DNS
//! records to publish and the command that starts the server.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use clap::Args;
use smtp_std::mta::accounts::{hash, passwd};
use smtp_std::mta::auth::{DkimAlgorithm, DkimKey};

pub(crate) const QUICKSTART_AFTER: &str = "\
EXAMPLE:
  smtp-std quickstart alice@example.org --hostname mail.example.org --ip 203.0.113.7 \\
       --dir /etc/smtp-std
  Writes /etc/smtp-std/smtp-std.toml, /etc/smtp-std/passwd (alice, with a generated
  password printed once), /etc/smtp-std/dkim-s1.key; prints the DNS records to publish and
  the command that starts the server:
    smtp-std serve --config /etc/smtp-std/smtp-std.toml

  Nothing is overwritten: an existing config file in --dir stops the command.
  Add more people later with `smtp-std user add bob@example.org --config FILE`.";

#[derive(Debug, Args)]
pub(crate) struct Quickstart {
    /// The first account, `local@domain`: the domain is the one mail is served for, and the
    /// account also receives postmaster@ it.
    #[arg(value_name = "ADDRESS")]
    address: String,
    /// The mail host's name (MX, greeting, Received:).
    #[arg(long, value_name = "NAME")]
    hostname: String,
    /// The mail host's public IPv4 address (for the DNS records).
    #[arg(long, value_name = "ADDR")]
    ip: Ipv4Addr,
    /// Where to write the files (created if missing).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Where the server listens for mail from the world.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:25")]
    listen: SocketAddr,
    /// Run as this user after binding the ports (it then owns the mailboxes).
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// The DKIM selector.
    #[arg(long, value_name = "NAME", default_value = "s1")]
    selector: String,
}

fn io_err(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Writes a new file (never over an existing one) with `mode`, synced.
fn write_new(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    let mut f = options.open(path).map_err(|e| io_err(path, e))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// A TOML string literal.
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

pub(crate) fn run(args: Quickstart) -> std::io::Result<()> {
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
    let address = args.address.trim().to_ascii_lowercase();
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Err(invalid(format!("{:?}: expected an address, local@domain", args.address)));
    };
    if !smtp_std::mta::config::valid_local_part(local) || domain.is_empty() {
        return Err(invalid(format!("{:?}: expected an address, local@domain", args.address)));
    }
    std::fs::create_dir_all(&args.dir).map_err(|e| io_err(&args.dir, e))?;
    let dir = std::fs::canonicalize(&args.dir).map_err(|e| io_err(&args.dir, e))?;
    let config_path = dir.join("smtp-std.toml");
    if config_path.exists() {
        return Err(invalid(format!("{} exists: quickstart writes a new setup only", config_path.display())));
    }
    let accounts = dir.join("passwd");
    let key_path = dir.join(format!("dkim-{}.key", args.selector));
    let data_dir = dir.join("data");
    let user_line = match &args.user {
        Some(u) => format!("user = {}                         # runs as this user after binding\n", quoted(u)),
        None => "# user = \"vmail\"                     # run as this user after binding (start as root)\n".to_owned(),
    };
    let config = format!(
        "# smtp-std mail server for {domain} (written by `smtp-std quickstart`).\n\
         hostname = {hostname}\n\
         data_dir = {data}                # mailboxes/<domain>/<user>/ (Maildir)\n\
         accounts = {accounts}            # Dovecot passwd-file: smtp-std user add|passwd|del|list\n\
         {user_line}\
         \n[listen]\n\
         smtp = [{listen}]\n\
         \n# STARTTLS: a certificate for {hostname_raw} (e.g. from Let's Encrypt):\n\
         # [tls]\n\
         # cert = \"/etc/letsencrypt/live/{hostname_raw}/fullchain.pem\"\n\
         # key = \"/etc/letsencrypt/live/{hostname_raw}/privkey.pem\"\n\
         \n[[domain]]\n\
         name = {domain_q}\n\
         # The DKIM key for the mail this domain sends (published below): {key}\n\
         # catch_all = {local_q}\n\
         [domain.aliases]\n\
         postmaster = {local_q}\n\
         abuse = {local_q}\n",
        hostname = quoted(&args.hostname),
        hostname_raw = args.hostname,
        data = quoted(&data_dir.to_string_lossy()),
        accounts = quoted(&accounts.to_string_lossy()),
        listen = quoted(&args.listen.to_string()),
        domain_q = quoted(domain),
        local_q = quoted(local),
        key = key_path.display(),
    );
    // The config must be one `serve` accepts: check it before writing anything.
    if let Err(e) = smtp_std::mta::config::Config::parse(&config, &config_path) {
        return Err(invalid(format!("quickstart would write a bad config: {e}")));
    }

    let (key, pem) = DkimKey::generate(DkimAlgorithm::Rsa)?;
    write_new(&key_path, &pem, 0o600)?;
    let password = hash::generate_password();
    passwd::add_user(&accounts, &address, &hash::hash_password(&password))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    write_new(&config_path, &config, 0o644)?;
    if let Some(user) = &args.user {
        give_accounts_to(&accounts, user)?;
    }

    let records = smtp_std::mta::auth::records::Records {
        domain: domain.to_owned(),
        host: args.hostname.clone(),
        ipv4: vec![args.ip],
        ipv6: Vec::new(),
        dkim: Some((args.selector.clone(), key.record_value())),
        dmarc_policy: "quarantine".to_owned(),
        rua: Some(format!("mailto:postmaster@{domain}")),
    };
    println!("Wrote {}, {} and {}.", config_path.display(), accounts.display(), key_path.display());
    println!();
    println!("Account {address}, password (shown once, keep it): {password}");
    println!();
    println!("Publish these DNS records:");
    print!("{}", records.zone());
    println!();
    println!("Start the server:");
    println!("  smtp-std serve --config {}", config_path.display());
    println!("Then check the records: smtp-std check --domain {domain} --selector {}", args.selector);
    Ok(())
}

/// The accounts file for the server's `user` (which re-reads it after dropping privileges)
/// and Dovecot's auth (group `dovecot`, when that group exists): `user:dovecot`, 0640.
fn give_accounts_to(path: &std::path::Path, user: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(());
    }
    let u = nix::unistd::User::from_name(user).ok().flatten().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("--user {user}: no such user on this system"))
    })?;
    let group = nix::unistd::Group::from_name("dovecot").ok().flatten().map_or(u.gid, |g| g.gid);
    nix::unistd::chown(path, Some(u.uid), Some(group))
        .map_err(|e| std::io::Error::other(format!("chown {user} {}: {e}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o640))
}
