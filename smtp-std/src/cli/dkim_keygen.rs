//! `smtp-std dkim-keygen`: a DKIM signing key and its DNS record.

use std::path::PathBuf;

use clap::Args;

pub(crate) const KEYGEN_AFTER: &str = "\
EXAMPLE:
  smtp-std dkim-keygen --domain example.org --selector mail2025 --out dkim.key
  Publish the printed TXT record, then sign with the key file (`records --key` prints it too).

The key file is PKCS#8 PEM (`PRIVATE KEY`); it is written with mode 0600 and never
overwritten. Without --out the key goes to standard output after the record.";

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum KeyAlgorithm {
    /// rsa-sha256 with a 2048-bit key: understood by every verifier.
    Rsa,
    /// ed25519-sha256 (RFC 8463): small keys; not every verifier knows it yet.
    Ed25519,
}

#[derive(Debug, Args)]
pub(crate) struct DkimKeygen {
    /// The signing domain (d=).
    #[arg(long, value_name = "DOMAIN")]
    domain: String,
    /// The selector (s=): the key record is at SELECTOR._domainkey.DOMAIN.
    #[arg(long, value_name = "NAME")]
    selector: String,
    /// Key algorithm.
    #[arg(long, value_enum, default_value = "rsa")]
    algorithm: KeyAlgorithm,
    /// Write the private key here (refuses to overwrite) instead of standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

pub(crate) fn run(args: DkimKeygen) -> std::io::Result<()> {
    use smtp_std::mta::auth::{DkimAlgorithm, DkimKey};
    let algorithm = match args.algorithm {
        KeyAlgorithm::Rsa => DkimAlgorithm::Rsa,
        KeyAlgorithm::Ed25519 => DkimAlgorithm::Ed25519,
    };
    let (key, pem) = DkimKey::generate(algorithm)?;
    if let Some(path) = &args.out {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f =
            options.open(path).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        std::io::Write::write_all(&mut f, pem.as_bytes())?;
        f.sync_all()?;
        eprintln!("smtp-std: private key written to {}", path.display());
    }
    println!("; Publish this record in the {} zone:", args.domain.trim_end_matches('.'));
    println!("{}", key.txt_record(&args.domain, &args.selector));
    if args.out.is_none() {
        print!("{pem}");
    }
    Ok(())
}
