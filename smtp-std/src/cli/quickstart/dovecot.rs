//! The Dovecot 2.3 config that `quickstart` writes next to smtp-std's: IMAP (and LMTP with
//! `--lmtp`) for the same accounts file and the Maildirs smtp-std writes, read as the user
//! smtp-std runs as.

use std::path::Path;

use smtp_std::lmtp::LmtpTarget;

/// What the Dovecot config is written for.
pub(super) struct DovecotConf<'a> {
    /// The mail domain (for the comments).
    pub domain: &'a str,
    /// smtp-std's config file (for the comments).
    pub config: &'a Path,
    /// The accounts file: Dovecot's passdb.
    pub accounts: &'a Path,
    /// `<data_dir>`: the Maildirs are `<data_dir>/mailboxes/<domain>/<local>/`.
    pub data_dir: &'a Path,
    /// The user smtp-std runs as (who owns the mailboxes), its uid and its group's gid.
    pub user: &'a str,
    pub uid: u32,
    pub gid: u32,
    /// The certificate and key (PEM).
    pub cert: &'a Path,
    pub key: &'a Path,
    /// `[delivery] lmtp`, when smtp-std hands the mail to Dovecot's LMTP.
    pub lmtp: Option<&'a LmtpTarget>,
    /// With LMTP: smtp-std's port 25 on loopback, where Sieve's autoreplies go (a relay for
    /// `relay_networks`).
    pub submission_host: Option<std::net::SocketAddr>,
}

/// Characters that a path in the Dovecot config cannot hold as is: `%` starts a variable,
/// `:` separates `mail_location`'s parts, white space and the rest end or quote a value.
pub(super) fn dovecot_safe(path: &Path) -> Result<(), String> {
    let s = path.to_str().ok_or_else(|| format!("{}: not UTF-8", path.display()))?;
    match s.chars().find(|c| c.is_whitespace() || c.is_control() || "%:\"'#{}<>$\\".contains(*c)) {
        Some(c) => Err(format!("{s}: the Dovecot config cannot name a path with {c:?} in it; choose another")),
        None => Ok(()),
    }
}

impl DovecotConf<'_> {
    /// The config file's text.
    pub(super) fn text(&self) -> String {
        let mailboxes = self.data_dir.join("mailboxes");
        let home = self.data_dir.join("home");
        let protocols = if self.lmtp.is_some() { "imap lmtp" } else { "imap" };
        let mut t = format!(
            "# Dovecot 2.3 for the smtp-std mail server of {domain} (written by `smtp-std quickstart`):\n\
             # IMAP for the accounts of {accounts}, reading the Maildirs smtp-std writes.\n\
             # Check it:  doveconf -c {this} -n\n\
             # Use it:    make /etc/dovecot/dovecot.conf the one line `!include {this}`\n\
             #            (Debian's conf.d is not needed), then `systemctl restart dovecot`.\n\
             # smtp-std's own config is {config}.\n\
             protocols = {protocols}\n\
             listen = *, ::\n\
             \n\
             # The certificate smtp-std uses too (certbot's: fullchain.pem and privkey.pem; Dovecot\n\
             # reads them at start and at `doveadm reload`).\n\
             ssl = required\n\
             ssl_cert = <{cert}\n\
             ssl_key = <{key}\n\
             auth_mechanisms = plain login\n\
             \n\
             # The accounts: smtp-std's accounts file (`smtp-std user add|passwd|del`). Dovecot's\n\
             # auth process reads it as the user `dovecot`: chown {user}:dovecot, chmod 640.\n\
             passdb {{\n  driver = passwd-file\n  args = scheme=ARGON2ID username_format=%Lu {accounts}\n}}\n\
             \n\
             # The mail belongs to {user} (uid {uid}, gid {gid}), the user smtp-std runs as: Dovecot\n\
             # reads it as that user, and admits only that uid.\n\
             userdb {{\n  driver = static\n  args = uid={uid} gid={gid} home={home}/%d/%n\n}}\n\
             first_valid_uid = {uid}\n\
             last_valid_uid = {uid}\n\
             \n\
             # One Maildir per account, <domain>/<local>/, its folders Maildir++ (.Junk/: the mail\n\
             # that DMARC quarantines).\n\
             mail_location = maildir:{mailboxes}/%d/%n\n\
             namespace inbox {{\n  inbox = yes\n  separator = .\n",
            domain = self.domain,
            accounts = self.accounts.display(),
            this = self.config.with_file_name("dovecot.conf").display(),
            config = self.config.display(),
            cert = self.cert.display(),
            key = self.key.display(),
            user = self.user,
            uid = self.uid,
            gid = self.gid,
            home = home.display(),
            mailboxes = mailboxes.display(),
        );
        for (name, use_) in [("Junk", "Junk"), ("Sent", "Sent"), ("Drafts", "Drafts"), ("Trash", "Trash")] {
            t.push_str(&format!("  mailbox {name} {{\n    special_use = \\{use_}\n    auto = subscribe\n  }}\n"));
        }
        t.push_str(
            "}\n\
             \n\
             # IMAP: STARTTLS on 143, implicit TLS on 993.\n\
             service imap-login {\n  inet_listener imap {\n    port = 143\n  }\n  \
             inet_listener imaps {\n    port = 993\n    ssl = yes\n  }\n}\n",
        );
        match self.lmtp {
            Some(LmtpTarget::Tcp(addr)) => {
                let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "24"));
                let host = host.trim_start_matches('[').trim_end_matches(']');
                t.push_str(&format!(
                    "\n# LMTP: smtp-std hands every accepted message over here ([delivery] lmtp = \"{addr}\").\n\
                     service lmtp {{\n  inet_listener lmtp {{\n    address = {host}\n    port = {port}\n  }}\n}}\n"
                ));
            }
            Some(LmtpTarget::Unix(path)) => {
                t.push_str(&format!(
                    "\n# LMTP: smtp-std (as {user}) hands every accepted message over here\n\
                     # ([delivery] lmtp = \"{path}\").\n\
                     service lmtp {{\n  unix_listener {path} {{\n    mode = 0600\n    user = {user}\n  }}\n}}\n",
                    user = self.user,
                    path = path.display(),
                ));
            }
            None => {}
        }
        if self.lmtp.is_some() {
            t.push_str(&self.sieve());
        }
        t
    }

    /// Pigeonhole Sieve on LMTP: each account's active script in its home, its replies to
    /// smtp-std's port 25 on loopback.
    fn sieve(&self) -> String {
        let home = self.data_dir.join("home");
        let submission = match self.submission_host {
            Some(a) => format!("submission_host = {a}\n"),
            None => "# submission_host = 127.0.0.1:25\n".to_owned(),
        };
        format!(
            "\n# Sieve filters and autoreplies (Pigeonhole, apt dovecot-sieve), run by LMTP for each\n\
             # message. An account's active script is {home}/<domain>/<local>/.dovecot.sieve\n\
             # (owned by {user}; or a symbolic link into sieve/ next to it), e.g.\n\
             #   require [\"fileinto\", \"vacation\"];\n\
             #   if header :contains \"subject\" \"report\" {{ fileinto \"Work\"; }}\n\
             #   vacation :days 7 :subject \"Away\" \"Back on Monday.\";\n\
             # fileinto creates the folder it names. Replies (vacation, redirect) go to smtp-std's\n\
             # port 25 on loopback, which relays for this host without a password (relay_networks\n\
             # in {config}); vacation answers each sender once per period, never to <>, lists,\n\
             # bulk mail or other autoreplies (RFC 3834).\n\
             protocol lmtp {{\n  mail_plugins = $mail_plugins sieve\n}}\n\
             plugin {{\n  sieve = file:~/sieve;active=~/.dovecot.sieve\n}}\n\
             lda_mailbox_autocreate = yes\n\
             lda_mailbox_autosubscribe = yes\n\
             {submission}",
            home = home.display(),
            user = self.user,
            config = self.config.display(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(lmtp: Option<&LmtpTarget>) -> String {
        DovecotConf {
            domain: "example.org",
            config: Path::new("/etc/smtp-std/smtp-std.toml"),
            accounts: Path::new("/etc/smtp-std/passwd"),
            data_dir: Path::new("/var/lib/smtp-std"),
            user: "vmail",
            uid: 8,
            gid: 8,
            cert: Path::new("/etc/smtp-std/cert.pem"),
            key: Path::new("/etc/smtp-std/key.pem"),
            lmtp,
            submission_host: lmtp.map(|_| "127.0.0.1:25".parse().unwrap()),
        }
        .text()
    }

    #[test]
    fn the_layout_smtp_std_writes() {
        let t = conf(None);
        assert!(t.contains("\nmail_location = maildir:/var/lib/smtp-std/mailboxes/%d/%n\n"), "{t}");
        assert!(t.contains("args = scheme=ARGON2ID username_format=%Lu /etc/smtp-std/passwd\n"), "{t}");
        assert!(t.contains("args = uid=8 gid=8 home=/var/lib/smtp-std/home/%d/%n\n"), "{t}");
        assert!(t.contains("\nfirst_valid_uid = 8\nlast_valid_uid = 8\n"), "{t}");
        assert!(t.contains("mailbox Junk {\n    special_use = \\Junk\n"), "{t}");
        assert!(t.contains("\nprotocols = imap\n") && !t.contains("service lmtp"), "{t}");
        assert!(t.contains("ssl_key = </etc/smtp-std/key.pem\n"), "{t}");
        assert_eq!(t.matches('{').count(), t.matches('}').count(), "{t}");
    }

    #[test]
    fn lmtp_listener_matches_the_delivery_target() {
        let t = conf(Some(&LmtpTarget::Tcp("127.0.0.1:24".into())));
        assert!(t.contains("\nprotocols = imap lmtp\n"), "{t}");
        assert!(t.contains("inet_listener lmtp {\n    address = 127.0.0.1\n    port = 24\n"), "{t}");
        let t = conf(Some(&LmtpTarget::Tcp("[::1]:2424".into())));
        assert!(t.contains("address = ::1\n    port = 2424\n"), "{t}");
        let t = conf(Some(&LmtpTarget::Unix("/run/smtp-std/lmtp".into())));
        assert!(t.contains("unix_listener /run/smtp-std/lmtp {\n    mode = 0600\n    user = vmail\n"), "{t}");
    }

    #[test]
    fn sieve_with_lmtp_only() {
        let t = conf(Some(&LmtpTarget::Tcp("127.0.0.1:24".into())));
        assert!(t.contains("protocol lmtp {\n  mail_plugins = $mail_plugins sieve\n}\n"), "{t}");
        assert!(t.contains("  sieve = file:~/sieve;active=~/.dovecot.sieve\n"), "{t}");
        assert!(t.contains("/var/lib/smtp-std/home/<domain>/<local>/.dovecot.sieve"), "{t}");
        assert!(t.contains("\nsubmission_host = 127.0.0.1:25\n"), "{t}");
        assert!(t.contains("\nlda_mailbox_autocreate = yes\n"), "{t}");
        assert_eq!(t.matches('{').count(), t.matches('}').count(), "{t}");
        let t = conf(None);
        assert!(!t.contains("sieve") && !t.contains("submission_host"), "{t}");
    }

    #[test]
    fn paths_dovecot_cannot_take() {
        assert!(dovecot_safe(Path::new("/etc/smtp-std")).is_ok());
        for bad in ["/srv/my mail", "/srv/100%", "/srv/a:b", "/srv/x\"y", "/srv/a#b"] {
            assert!(dovecot_safe(Path::new(bad)).unwrap_err().starts_with(bad), "{bad}");
        }
    }
}
