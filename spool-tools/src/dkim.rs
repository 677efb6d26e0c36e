//! `skein dkim keygen DOMAIN SELECTOR [--algorithm A] [--out FILE]`: makes
//! a DKIM signing key, writes it (mode 0600, never over an existing file)
//! and prints the DNS TXT record that publishes it on standard output, so
//! that `skein dkim keygen example.org s2026 >> zone` does what it says.
//! What to add to skein.toml goes to standard error.
//!
//! Run as root, it gives the key to the account the services run as
//! (`user`), which is who reads it under systemd; the mode stays 0600.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use skein_config::{Config, DkimAlgorithm, Source};

use crate::sysexits::*;

/// What `keygen` was asked for.
#[derive(Debug)]
pub struct Keygen {
    /// The signing domain (`d=`).
    pub domain: String,
    /// The selector (`s=`).
    pub selector: String,
    /// The algorithm.
    pub algorithm: DkimAlgorithm,
    /// Where to write the key (`None`: `dkim/DOMAIN.SELECTOR.key` beside
    /// the configuration file, or in the current directory).
    pub out: Option<PathBuf>,
}

/// Runs `keygen`; returns the exit code.
pub fn keygen(config: Option<&Path>, request: &Keygen) -> u8 {
    let domain = request.domain.trim_end_matches('.').to_ascii_lowercase();
    if !skein_config::is_plausible_domain(&domain) {
        eprintln!("skein: dkim keygen: {:?} is not a domain", request.domain);
        return EX_USAGE;
    }
    if request.selector.is_empty()
        || !request.selector.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
    {
        eprintln!(
            "skein: dkim keygen: {:?} is not a selector (DNS labels: letters, digits, \"-\" and \"_\")",
            request.selector
        );
        return EX_USAGE;
    }
    let loaded = match Config::load(config) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("skein: {e}");
            return EX_CONFIG;
        }
    };
    let out = request.out.clone().unwrap_or_else(|| {
        let base = match &loaded.source {
            Source::File(path) => path.parent().map(Path::to_path_buf).unwrap_or_default(),
            Source::Embedded => PathBuf::from("."),
        };
        base.join("dkim")
            .join(format!("{domain}.{}.key", request.selector))
    });
    if skein_dkim::exists(&out) {
        eprintln!(
            "skein: dkim keygen: {} exists: not overwritten (a published key would stop verifying)",
            out.display()
        );
        return EX_CANTCREAT;
    }
    let key = match skein_dkim::generate(request.algorithm) {
        Ok(key) => key,
        Err(e) => {
            eprintln!("skein: dkim keygen: {e}");
            return EX_SOFTWARE;
        }
    };
    if let Err(e) = write_key(&out, key.pem.as_bytes(), loaded.config.run_as()) {
        eprintln!("skein: dkim keygen: {}: {e}", out.display());
        return EX_CANTCREAT;
    }
    println!(
        "{}",
        skein_dkim::zone_record(&request.selector, &domain, &key.txt)
    );
    let shown = std::fs::canonicalize(&out).unwrap_or(out);
    eprintln!(
        "skein: wrote {} (mode 0600); publish the record above, then add to the configuration:\n\n\
         [[dkim]]\ndomain = \"{domain}\"\nselector = \"{}\"\nkey = \"{}\"\nalgorithm = \"{}\"\n",
        shown.display(),
        request.selector,
        shown.display(),
        request.algorithm
    );
    EX_OK
}

/// Writes the key with mode 0600 into a new file (its directory made
/// 0750 if missing); as root, owned by `user` when that account exists.
fn write_key(path: &Path, pem: &[u8], user: &str) -> std::io::Result<()> {
    let account = if nix::unistd::geteuid().is_root() {
        nix::unistd::User::from_name(user).ok().flatten()
    } else {
        None
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)?;
        // root:<the account's group>, so that the router may enter it.
        if let Some(account) = &account {
            nix::unistd::chown(dir, None, Some(account.gid)).map_err(std::io::Error::from)?;
        }
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let written = file.write_all(pem).and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    if let Some(account) = &account {
        nix::unistd::fchown(&file, Some(account.uid), Some(account.gid))
            .map_err(std::io::Error::from)?;
    }
    Ok(())
}
