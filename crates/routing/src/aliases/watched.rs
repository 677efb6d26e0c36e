//! The aliases in force, kept up to date with their files: shared by the
//! router (which routes with them) and the SMTP server (which checks local
//! recipients with them at `RCPT TO`), so that both reload the same way.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{error, info};

use super::{AliasError, AliasTable};

/// What [`WatchedAliases::refresh`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// Nothing to do: no aliases file, or no file changed (and no reload
    /// was forced).
    Unchanged,
    /// The table was read again and is now in force.
    Reloaded,
    /// A file changed but does not load (logged at `error`): the previous
    /// table stays in force until the files change again.
    Kept,
}

/// The alias table in force and the file it comes from (`router.aliases`).
///
/// Loaded once with [`load`](Self::load), where a broken file is an error
/// (there is no previous table to fall back on); afterwards
/// [`refresh`](Self::refresh) reloads it when one of its files changed or
/// when forced (SIGHUP), and a file that no longer loads is logged while
/// the previous table stays in force.
///
/// The table is held in an [`Arc`] so that a caller can take a
/// [`shared`](Self::shared) handle and route with it without holding
/// whatever lock guards the `WatchedAliases` (a user lookup may block).
#[derive(Debug)]
pub struct WatchedAliases {
    path: Option<PathBuf>,
    table: Arc<AliasTable>,
}

impl WatchedAliases {
    /// Reads `path` and its include files; `None` (no `router.aliases`)
    /// gives an empty table that never changes.
    pub fn load(path: Option<PathBuf>) -> Result<WatchedAliases, AliasError> {
        let table = match &path {
            Some(path) => AliasTable::load(path)?,
            None => AliasTable::empty(),
        };
        Ok(WatchedAliases {
            path,
            table: Arc::new(table),
        })
    }

    /// Reloads the table when `force`d (SIGHUP) or when one of its files
    /// changed. A broken file is logged and the previous table kept; it is
    /// reported once, and tried again when a file changes again.
    pub fn refresh(&mut self, force: bool) -> Refresh {
        let Some(path) = &self.path else {
            return Refresh::Unchanged;
        };
        if !force && !self.table.changed() {
            return Refresh::Unchanged;
        }
        match AliasTable::load(path) {
            Ok(table) => {
                info!(file = %path.display(), aliases = table.len(), "aliases loaded");
                self.table = Arc::new(table);
                Refresh::Reloaded
            }
            Err(e) => {
                error!(error = %e, "aliases not reloaded: keeping the previous aliases until the file is fixed");
                // Copies the table only if someone still routes with it.
                Arc::make_mut(&mut self.table).restamp();
                Refresh::Kept
            }
        }
    }

    /// The table in force.
    pub fn table(&self) -> &AliasTable {
        &self.table
    }

    /// The table in force, as a handle that stays valid (and unchanged)
    /// across later reloads.
    pub fn shared(&self) -> Arc<AliasTable> {
        Arc::clone(&self.table)
    }

    /// The aliases file, if one is configured.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replaces `path` by rename, so that the change shows in the inode
    /// even within one tick of the file system's clock.
    fn replace(path: &Path, text: &str) {
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    #[test]
    fn no_file_means_no_aliases_and_nothing_to_reload() {
        let mut w = WatchedAliases::load(None).unwrap();
        assert!(w.table().is_empty());
        assert_eq!(w.path(), None);
        assert_eq!(w.refresh(false), Refresh::Unchanged);
        assert_eq!(w.refresh(true), Refresh::Unchanged);
    }

    #[test]
    fn broken_file_at_load_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let aliases = d.path().join("aliases");
        std::fs::write(&aliases, "a: b\nbroken\n").unwrap();
        let e = WatchedAliases::load(Some(aliases.clone())).unwrap_err();
        assert!(matches!(e, AliasError::Syntax { line: 2, .. }), "{e}");
        let e = WatchedAliases::load(Some(d.path().join("missing"))).unwrap_err();
        assert!(matches!(e, AliasError::Io { .. }), "{e}");
    }

    #[test]
    fn follows_changes_and_keeps_the_previous_table_when_broken() {
        let d = tempfile::tempdir().unwrap();
        let aliases = d.path().join("aliases");
        std::fs::write(&aliases, "staff: ann\n").unwrap();
        let mut w = WatchedAliases::load(Some(aliases.clone())).unwrap();
        assert_eq!(w.path(), Some(aliases.as_path()));
        assert!(w.table().lookup("staff").is_some());
        assert_eq!(w.refresh(false), Refresh::Unchanged);

        // A change on disk is picked up without being asked.
        let before = w.shared();
        replace(&aliases, "team: bob\n");
        assert_eq!(w.refresh(false), Refresh::Reloaded);
        assert!(w.table().lookup("staff").is_none());
        assert!(w.table().lookup("team").is_some());
        // A handle taken earlier still sees the table of its time.
        assert!(before.lookup("staff").is_some());

        // A broken file: logged, the previous table stays, and it is not
        // reported again until the file changes again.
        replace(&aliases, "team: bob\nbroken line\n");
        assert_eq!(w.refresh(false), Refresh::Kept);
        assert!(w.table().lookup("team").is_some());
        assert_eq!(w.refresh(false), Refresh::Unchanged);

        // Fixed: loaded.
        replace(&aliases, "crew: carol\n");
        assert_eq!(w.refresh(false), Refresh::Reloaded);
        assert!(w.table().lookup("crew").is_some());
        assert!(w.table().lookup("team").is_none());
    }

    #[test]
    fn forced_reload_rereads_an_unchanged_file() {
        let d = tempfile::tempdir().unwrap();
        let aliases = d.path().join("aliases");
        std::fs::write(&aliases, "staff: ann\n").unwrap();
        let mut w = WatchedAliases::load(Some(aliases)).unwrap();
        let before = w.shared();
        assert_eq!(w.refresh(true), Refresh::Reloaded);
        assert!(!Arc::ptr_eq(&before, &w.shared()), "a new table");
        assert!(w.table().lookup("staff").is_some());
    }

    #[test]
    fn a_broken_reload_while_a_handle_is_out_keeps_both_usable() {
        let d = tempfile::tempdir().unwrap();
        let aliases = d.path().join("aliases");
        std::fs::write(&aliases, "staff: ann\n").unwrap();
        let mut w = WatchedAliases::load(Some(aliases.clone())).unwrap();
        let out = w.shared();
        replace(&aliases, "broken\n");
        assert_eq!(w.refresh(false), Refresh::Kept);
        assert!(out.lookup("staff").is_some());
        assert!(w.table().lookup("staff").is_some());
        assert_eq!(w.refresh(false), Refresh::Unchanged, "restamped");
    }
}
