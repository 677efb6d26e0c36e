//! skein-preflight: the files a skein daemon reads at start — the TLS
//! certificate and key, the password file, the aliases file, the DKIM
//! signing keys — checked one
//! way, by the daemons before they serve and by `skein config check`.
//!
//! Parsing the configuration (`skein-config`) checks what the text says;
//! this crate checks what it points at, which the parser cannot: that each
//! named file exists, can be read, and parses as the daemon will parse it
//! (a certificate chain and a key that match, argon2id hashes, an aliases
//! file the router accepts). Each daemon runs [`check`] for what it reads
//! ([`Reader`]) in `main`, before the skeleton starts, and exits
//! `EX_CONFIG` (78) with the error; the supervisor and the systemd units
//! do not restart a service that exits 78. `skein config check` runs it
//! for every daemon ([`Reader::All`]), so that it fails on exactly what
//! would stop a start.
//!
//! # Reads and writes
//!
//! Reads the files the configuration names; writes nothing.
//!
//! # Security
//!
//! Runs with the caller's privilege: in the smtpd that is root (or the
//! account under systemd) before the privilege drop, so that the key may
//! be root's alone. A secret readable by every user, or a file the mail
//! system trusts that every user may write, is a [`Checked::warnings`]
//! line (the daemons log it; `config check` prints it).
//!
//! # Failure
//!
//! Every problem is a [`ConfigError`] at the key that names the file:
//! `/etc/skein/skein.toml:14: tls.key: cannot read /etc/skein/key.pem: No
//! such file or directory (os error 2)`.

#![warn(missing_docs)]

pub mod passwords;
pub mod tls;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use skein_config::{ConfigError, ErrorKind, Loaded};
use skein_routing::aliases::{AliasError, AliasTable};

pub use passwords::Passwords;

/// Which daemon's files to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// `skein-smtpd`: `tls.cert` and `tls.key`, `smtpd.password_file`,
    /// and `router.aliases` when `smtpd.verify_local_recipients` is on.
    Smtpd,
    /// `skein-router`: `router.aliases` and the `[[dkim]]` keys.
    Router,
    /// `skein-scheduler`: nothing beyond the file itself (its agents
    /// read the configuration it hands them).
    Scheduler,
    /// Everything any daemon reads (`skein config check`).
    All,
}

/// What the checks loaded, for the daemon to use as it is (what was
/// checked is what serves), and what they would warn about.
#[derive(Debug, Default)]
pub struct Checked {
    /// The STARTTLS server configuration, when `tls.cert` and `tls.key`
    /// are set and the reader uses them.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The AUTH users, when `smtpd.password_file` is set and the reader
    /// uses it (shared: the smtpd's sessions hold it).
    pub passwords: Option<Arc<Passwords>>,
    /// How many aliases the aliases file has, when it was checked.
    pub aliases: Option<usize>,
    /// The `[[dkim]]` signing keys, loaded, when the reader signs (the
    /// router) and there are any.
    pub dkim: Option<Arc<skein_dkim::Signer>>,
    /// One line each: `file:line: key: …` and what to do about it.
    pub warnings: Vec<String>,
}

/// Checks the files `reader` reads at start; see the crate's header.
pub fn check(loaded: &Loaded, reader: Reader) -> Result<Checked, ConfigError> {
    let config = &loaded.config;
    let smtpd = matches!(reader, Reader::Smtpd | Reader::All);
    let mut checked = Checked::default();
    if smtpd && let (Some(cert), Some(key)) = (&config.tls.cert, &config.tls.key) {
        let tls = tls::server_config(cert, key)
            .map_err(|e| at(loaded, e.key, format!("{}: {}", e.path.display(), e.detail)))?;
        checked.tls = Some(tls);
        secret(loaded, "tls.key", key, &mut checked.warnings);
        trusted(loaded, "tls.cert", cert, &mut checked.warnings);
    }
    if smtpd && let Some(path) = &config.smtpd.password_file {
        let passwords =
            Passwords::load(path).map_err(|detail| at(loaded, "smtpd.password_file", detail))?;
        checked.passwords = Some(Arc::new(passwords));
        secret(loaded, "smtpd.password_file", path, &mut checked.warnings);
    }
    let reads_aliases = match reader {
        Reader::Router | Reader::All => true,
        Reader::Smtpd => config.smtpd.verify_local_recipients,
        Reader::Scheduler => false,
    };
    if reads_aliases && let Some(path) = &config.router.aliases {
        let table = AliasTable::load(path).map_err(|e| {
            let message = match e {
                AliasError::Syntax {
                    file,
                    line,
                    message,
                } => format!("{}:{line}: {message}", file.display()),
                AliasError::Io { path, source } => {
                    format!("cannot read {}: {source}", path.display())
                }
            };
            at(loaded, "router.aliases", message)
        })?;
        checked.aliases = Some(table.len());
        trusted(loaded, "router.aliases", path, &mut checked.warnings);
    }
    if matches!(reader, Reader::Router | Reader::All) && !config.dkim.is_empty() {
        let signer = skein_dkim::Signer::load(&config.dkim)
            .map_err(|e| at(loaded, &format!("dkim[{}].key", e.index), e.to_string()))?;
        for (index, entry) in config.dkim.iter().enumerate() {
            secret(
                loaded,
                &format!("dkim[{index}].key"),
                &entry.key,
                &mut checked.warnings,
            );
        }
        checked.dkim = Some(Arc::new(signer));
    }
    Ok(checked)
}

/// A reload that passed: the new configuration, what its checks loaded,
/// and what it changes.
#[derive(Debug)]
pub struct Reloaded {
    /// The configuration read again.
    pub loaded: Loaded,
    /// What [`check`] loaded from it for the reader.
    pub checked: Checked,
    /// The keys whose value changed and that the daemon applies.
    pub applied: Vec<String>,
    /// The keys that changed but need a restart
    /// ([`skein_config::needs_restart`]): their old values stay.
    pub need_restart: Vec<String>,
}

/// A daemon's reload (SIGHUP, `skein reload`): reads the file `current`
/// came from again ([`Loaded::reload`]) and runs on it exactly the checks
/// the daemon ran at start ([`check`] for `reader`). An error means the
/// reload is refused and the daemon keeps `current` (its caller logs the
/// error, which names file, line and key).
pub fn reload(current: &Loaded, reader: Reader) -> Result<Reloaded, ConfigError> {
    let skein_config::Reload {
        loaded,
        applied,
        need_restart,
    } = current.reload()?;
    let checked = check(&loaded, reader)?;
    Ok(Reloaded {
        loaded,
        checked,
        applied,
        need_restart,
    })
}

/// An error at `key`'s line.
fn at(loaded: &Loaded, key: &str, message: String) -> ConfigError {
    ConfigError {
        kind: ErrorKind::Invalid,
        file: loaded.shown.clone(),
        line: loaded.lines.line(key),
        key: Some(key.to_owned()),
        message,
    }
}

/// `file:line: key: ` for a warning.
fn prefix(loaded: &Loaded, key: &str) -> String {
    match loaded.lines.line(key) {
        Some(line) => format!("{}:{line}: {key}", loaded.shown),
        None => format!("{}: {key}", loaded.shown),
    }
}

fn mode(path: &Path) -> Option<u32> {
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

/// A secret (a private key, password hashes) must not be readable by
/// every user.
fn secret(loaded: &Loaded, key: &str, path: &Path, warnings: &mut Vec<String>) {
    if let Some(mode) = mode(path)
        && mode & 0o004 != 0
    {
        warnings.push(format!(
            "{}: {} is readable by every user (mode {mode:04o}): chmod o-r {} (root or the skein group reads it)",
            prefix(loaded, key),
            path.display(),
            path.display()
        ));
    }
    trusted(loaded, key, path, warnings);
}

/// A file the mail system trusts must not be writable by every user
/// (an aliases file anyone may write sends anyone's mail anywhere).
fn trusted(loaded: &Loaded, key: &str, path: &Path, warnings: &mut Vec<String>) {
    if let Some(mode) = mode(path)
        && mode & 0o002 != 0
    {
        warnings.push(format!(
            "{}: {} is writable by every user (mode {mode:04o}): chmod o-w {}",
            prefix(loaded, key),
            path.display(),
            path.display()
        ));
    }
}

#[cfg(test)]
mod tests;
