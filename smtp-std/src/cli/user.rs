//! `smtp-std user`: add, re-password, delete and list the accounts (Dovecot passwd-file, hashed
//! passwords), a thin layer over [`smtp_std::mta::accounts::passwd`].

use std::io::{BufRead, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use smtp_std::mta::accounts::hash;
use smtp_std::mta::accounts::passwd::{self, PasswdError, PasswdFile};
use smtp_std::mta::config::Config;

pub(crate) const USER_AFTER: &str = "\
The accounts file is Dovecot's passwd-file (`user@domain:{ARGON2ID}...`), so Dovecot can use
the same file as its passdb. Only hashed passwords are written: Argon2id with a random salt.
`--config FILE` takes the file from the config's `accounts` key and refuses an address whose
domain is not one of its [[domain]] names; `--accounts FILE` names the file directly.
Each change rewrites the file atomically under a lock, keeping every other line (comments,
extra fields) as it was, and the file's mode and owner; a running `serve` picks it up.

THE PASSWORD:
  With --generate: a new random password, printed once on standard output.
  Otherwise the first line of standard input, from a pipe or a file (an empty line is
  refused); when standard input is a terminal, a generated one as with --generate.
  The password never appears in a log line or an error.

EXAMPLES:
  smtp-std user add alice@example.org --config /etc/smtp-std/smtp-std.toml --generate
      password for alice@example.org: 7kPq...   (generated, shown once)
  printf '%s\\n' \"$NEW_PASSWORD\" | smtp-std user passwd alice@example.org --config smtp-std.toml
  smtp-std user del alice@example.org --accounts /etc/smtp-std/passwd
  smtp-std user list --config /etc/smtp-std/smtp-std.toml
  Check a hash with Dovecot: doveadm pw -t \"$(grep ^alice@ passwd | cut -d: -f2)\" -p PASSWORD

EXIT STATUS:
  0   done
  1   another error: the user exists already, the accounts file cannot be read or is broken
  2   the command line itself is wrong
  64  bad usage: an address that is not local@domain or not in the config's domains, no
      password on standard input (and no --generate)
  67  no such user (passwd, del)
  73  the accounts file cannot be written
  78  the config file cannot be used
  Errors are one line on standard error.

A new accounts file gets mode 0640, and with --config run as root, the group of the config's
`user` (the server reads it after dropping privileges).";

const ADD_AFTER: &str = "\
EXAMPLES:
  echo 'a long secret' | smtp-std user add alice@example.org --config smtp-std.toml
  smtp-std user add bob@example.org --config smtp-std.toml --generate";

const PASSWD_AFTER: &str = "\
EXAMPLE:
  smtp-std user passwd alice@example.org --accounts /etc/smtp-std/passwd --generate";

const EX_USAGE: u8 = 64;
const EX_NOUSER: u8 = 67;
const EX_CANTCREAT: u8 = 73;
const EX_CONFIG: u8 = 78;

/// The longest password line read from standard input.
const MAX_PASSWORD: u64 = 4096;

/// `smtp-std user ...`
#[derive(Debug, Args)]
#[command(after_long_help = USER_AFTER)]
pub(crate) struct UserArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Add an account; the password from standard input, or generated and printed (--generate).
    #[command(after_long_help = ADD_AFTER)]
    Add {
        /// The account's address (local@domain).
        address: String,
        #[command(flatten)]
        file: FileArgs,
        /// Make a random password and print it once, instead of reading standard input.
        #[arg(long)]
        generate: bool,
    },
    /// Set an account's password; from standard input, or generated and printed (--generate).
    #[command(after_long_help = PASSWD_AFTER)]
    Passwd {
        /// The account's address (local@domain).
        address: String,
        #[command(flatten)]
        file: FileArgs,
        /// Make a random password and print it once, instead of reading standard input.
        #[arg(long)]
        generate: bool,
    },
    /// Delete an account (its mailbox stays on disk).
    Del {
        /// The account's address (local@domain).
        address: String,
        #[command(flatten)]
        file: FileArgs,
    },
    /// List the accounts, one a line.
    List {
        #[command(flatten)]
        file: FileArgs,
    },
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct FileArgs {
    /// The mail server's config file: the accounts file is its `accounts`, and an address must
    /// be in one of its domains.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The accounts file (Dovecot passwd-file) itself, without a config file.
    #[arg(long, value_name = "FILE")]
    accounts: Option<PathBuf>,
}

/// An error: the exit code and the one line for standard error.
struct Failure(u8, String);

fn usage(msg: impl Into<String>) -> Failure {
    Failure(EX_USAGE, msg.into())
}

impl From<PasswdError> for Failure {
    fn from(e: PasswdError) -> Self {
        let code = match &e {
            PasswdError::NoSuchUser { .. } => EX_NOUSER,
            PasswdError::Write { .. } => EX_CANTCREAT,
            PasswdError::BadUser(..) => EX_USAGE,
            _ => 1,
        };
        Failure(code, e.to_string())
    }
}

/// The accounts file, the domains an address must be in (none: any), the user the server runs
/// as (the config's `user`).
struct Target {
    accounts: PathBuf,
    domains: Option<Vec<String>>,
    server_user: Option<String>,
}

impl FileArgs {
    fn target(&self) -> Result<Target, Failure> {
        match (&self.config, &self.accounts) {
            (Some(config), _) => {
                let c = Config::load(config).map_err(|e| Failure(EX_CONFIG, e.to_string()))?;
                let domains = Some(c.domains.into_iter().map(|d| d.name).collect());
                Ok(Target { accounts: c.accounts, domains, server_user: c.user })
            }
            (None, Some(accounts)) => Ok(Target { accounts: accounts.clone(), domains: None, server_user: None }),
            (None, None) => Err(usage("give --config FILE or --accounts FILE")),
        }
    }
}

impl Target {
    /// The address checked (`local@domain`, in one of our domains) and lower-cased.
    fn address(&self, address: &str, check_domain: bool) -> Result<String, Failure> {
        let user = passwd::normalize_user(address).map_err(|why| usage(format!("address `{address}`: {why}")))?;
        if let (true, Some(domains)) = (check_domain, &self.domains) {
            let (_, domain) = user.rsplit_once('@').unwrap_or_default();
            if !domains.iter().any(|d| d == domain) {
                return Err(usage(format!(
                    "{domain} is not one of the config's domains ({}): add a [[domain]] first",
                    domains.join(", ")
                )));
            }
        }
        Ok(user)
    }
}

/// The new password: generated and printed once with `generate` or when standard input is a
/// terminal, else the first line of standard input.
fn new_password(user: &str, generate: bool) -> Result<String, Failure> {
    let stdin = std::io::stdin();
    if generate || stdin.is_terminal() {
        let password = hash::generate_password();
        println!("password for {user}: {password}");
        return Ok(password);
    }
    let mut line = Vec::new();
    stdin
        .lock()
        .take(MAX_PASSWORD + 2)
        .read_until(b'\n', &mut line)
        .map_err(|e| Failure(1, format!("cannot read the password from standard input: {e}")))?;
    for end in [b"\n".as_slice(), b"\r"] {
        if line.ends_with(end) {
            line.truncate(line.len() - end.len());
        }
    }
    if line.is_empty() {
        return Err(usage(
            "no password on standard input (an empty first line, or none): pipe one in, or give --generate",
        ));
    }
    if line.len() as u64 > MAX_PASSWORD {
        return Err(usage(format!("the password on standard input is longer than {MAX_PASSWORD} bytes")));
    }
    String::from_utf8(line).map_err(|_| usage("the password on standard input is not UTF-8"))
}

/// Gives a new accounts file to the group of the user the server runs as, when we are root, so
/// that the server can read it (mode 0640) after dropping privileges.
fn share_with_server(path: &Path, server_user: &str) {
    use nix::unistd::{chown, Uid, User};
    if !Uid::effective().is_root() {
        return;
    }
    let result = match User::from_name(server_user) {
        Ok(Some(u)) => chown(path, None, Some(u.gid)).map_err(|e| e.to_string()),
        Ok(None) => Err(format!("no such user {server_user:?}")),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = result {
        eprintln!("smtp-std: warning: {} not given to the group of {server_user}: {e}", path.display());
    }
}

/// Says so on standard error when the file, after a change, is one the server would refuse
/// (another line is broken).
fn warn_if_unusable(path: &Path) {
    if let Err(e) = PasswdFile::load(path) {
        eprintln!("smtp-std: warning: the server will refuse the accounts file: {e}");
    }
}

fn act(action: Action) -> Result<(), Failure> {
    match action {
        Action::Add { address, file, generate } => {
            let t = file.target()?;
            let user = t.address(&address, true)?;
            if passwd::has_user(&t.accounts, &user)? {
                // Refused before a password is read (or generated and printed in vain).
                return Err(PasswdError::Exists { file: t.accounts.clone(), user }.into());
            }
            let password = new_password(&user, generate)?;
            let new_file = !t.accounts.exists();
            passwd::add_user(&t.accounts, &user, &hash::hash_password(&password))?;
            eprintln!("smtp-std: added {user} to {}", t.accounts.display());
            if let (true, Some(server_user)) = (new_file, &t.server_user) {
                share_with_server(&t.accounts, server_user);
            }
            warn_if_unusable(&t.accounts);
        }
        Action::Passwd { address, file, generate } => {
            let t = file.target()?;
            let user = t.address(&address, true)?;
            // Refuse an unknown user before asking for (or generating) a password.
            if !passwd::has_user(&t.accounts, &user)? {
                return Err(Failure(EX_NOUSER, format!("{}: no user {user}", t.accounts.display())));
            }
            let password = new_password(&user, generate)?;
            passwd::set_password(&t.accounts, &user, &hash::hash_password(&password))?;
            eprintln!("smtp-std: new password for {user} in {}", t.accounts.display());
            warn_if_unusable(&t.accounts);
        }
        Action::Del { address, file } => {
            let t = file.target()?;
            // No domain check: an account of a domain since removed from the config can go.
            let user = t.address(&address, false)?;
            passwd::remove_user(&t.accounts, &user)?;
            eprintln!("smtp-std: deleted {user} from {} (its mailbox stays)", t.accounts.display());
            warn_if_unusable(&t.accounts);
        }
        Action::List { file } => {
            let t = file.target()?;
            let accounts = match PasswdFile::load(&t.accounts) {
                Ok(a) => a,
                Err(PasswdError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                    PasswdFile::default()
                }
                Err(e) => return Err(e.into()),
            };
            let mut out = String::new();
            for user in accounts.users() {
                out.push_str(user);
                out.push('\n');
            }
            print!("{out}");
        }
    }
    Ok(())
}

/// Runs `smtp-std user ...`.
pub(crate) fn run(args: UserArgs) -> ExitCode {
    match act(args.action) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, msg)) => {
            eprintln!("smtp-std: {msg}");
            ExitCode::from(code)
        }
    }
}
