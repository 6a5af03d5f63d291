//! The store's directory: where it is by default, that only this user can write to it, and
//! opening the files in it without following symbolic links.
//!
//! Every file of the store is opened relative to one handle on its directory (`openat`), with
//! `O_NOFOLLOW`, and the directory behind that handle is checked once, when it is opened: it
//! must belong to the user running vtp and be writable by nobody else. So nobody else can plant
//! a symbolic link or a file in it, and a link planted before the check is refused, not
//! followed. The path given for the directory itself is resolved like any path (a link to a
//! directory is fine); what is checked is the directory it leads to.

use std::ffi::OsStr;
use std::fs::{self, DirBuilder, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};

use super::StoreError;

/// The directory the seen-index is kept in when none is given (`vtp broker` without
/// `--eventdb`), from the environment values passed in, for the user `euid`:
///
/// 1. `$STATE_DIRECTORY`, set by systemd for a unit with `StateDirectory=` (the first one, if
///    it names several);
/// 2. for root (`euid` 0), `/var/lib/vtp`;
/// 3. `$XDG_STATE_HOME/vtp`;
/// 4. `$HOME/.local/state/vtp`.
///
/// Values that are empty or not absolute paths are skipped, as the XDG base directory
/// specification asks. [`default_dir_from_env`] calls this with the process's environment.
///
/// # Errors
///
/// [`StoreError::NoDefaultDir`] if none of them applies.
pub fn default_dir(
    state_directory: Option<&OsStr>,
    xdg_state_home: Option<&OsStr>,
    home: Option<&OsStr>,
    euid: u32,
) -> Result<PathBuf, StoreError> {
    if let Some(first) = state_directory.and_then(first_of_list)
        && first.is_absolute()
    {
        return Ok(first);
    }
    if euid == 0 {
        return Ok(PathBuf::from("/var/lib/vtp"));
    }
    if let Some(xdg) = absolute(xdg_state_home) {
        return Ok(xdg.join("vtp"));
    }
    if let Some(home) = absolute(home) {
        return Ok(home.join(".local/state/vtp"));
    }
    Err(StoreError::NoDefaultDir)
}

/// [`default_dir`] for this process: its `STATE_DIRECTORY`, `XDG_STATE_HOME` and `HOME`, and
/// its effective user.
///
/// # Errors
///
/// [`StoreError::NoDefaultDir`] if none of them gives a directory.
pub fn default_dir_from_env() -> Result<PathBuf, StoreError> {
    default_dir(
        std::env::var_os("STATE_DIRECTORY").as_deref(),
        std::env::var_os("XDG_STATE_HOME").as_deref(),
        std::env::var_os("HOME").as_deref(),
        rustix::process::geteuid().as_raw(),
    )
}

/// True if `dir` lies in a directory the system may empty: the temporary directory
/// (`$TMPDIR`), `/tmp`, `/var/tmp` or `/dev/shm`.
pub(super) fn is_temporary(dir: &Path) -> bool {
    let temp = std::env::temp_dir();
    [
        temp.as_path(),
        Path::new("/tmp"),
        Path::new("/var/tmp"),
        Path::new("/dev/shm"),
    ]
    .iter()
    .any(|t| dir.starts_with(t))
}

/// `v` as a path, if it is an absolute one.
fn absolute(v: Option<&OsStr>) -> Option<&Path> {
    v.map(Path::new).filter(|p| p.is_absolute())
}

/// The first path of a `:`-separated list (systemd joins several `StateDirectory=` so).
fn first_of_list(list: &OsStr) -> Option<PathBuf> {
    let bytes = list.as_bytes();
    let first = bytes.split(|&b| b == b':').next().unwrap_or(bytes);
    (!first.is_empty()).then(|| PathBuf::from(OsStr::from_bytes(first)))
}

/// Why a directory is not safe to keep files in: `None` if it belongs to `euid` and nobody
/// else can write to it.
fn unsafe_reason(meta: &fs::Metadata, euid: u32) -> Option<String> {
    if meta.uid() != euid {
        return Some(format!(
            "it is owned by uid {}, not by this user (uid {euid})",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Some(format!(
            "it is writable by its group or by others (mode {mode:04o})"
        ));
    }
    None
}

/// Creates `dir` (and missing parents) with `mode` if it does not exist, and checks that it
/// belongs to this user and nobody else can write to it ([`unsafe_reason`]).
///
/// # Errors
///
/// `Err(Ok(error))` if it cannot be created or read, `Err(Err(why))` if it is not safe.
pub(crate) fn create_checked(dir: &Path, mode: u32) -> Result<File, Result<io::Error, String>> {
    DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(Ok)?;
    let handle = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map(File::from)
    .map_err(|e| Ok(e.into()))?;
    let meta = handle.metadata().map_err(Ok)?;
    match unsafe_reason(&meta, rustix::process::geteuid().as_raw()) {
        Some(why) => Err(Err(why)),
        None => Ok(handle),
    }
}

/// Opens the store's directory, creating it (mode 0700, with its parents) if missing.
pub(super) fn open_store_dir(dir: &Path) -> Result<File, StoreError> {
    create_checked(dir, 0o700).map_err(|e| match e {
        Ok(source) => StoreError::CreateDir {
            dir: dir.to_owned(),
            source,
        },
        Err(why) => StoreError::UnsafeDir {
            dir: dir.to_owned(),
            why,
        },
    })
}

/// How [`open_in`] opens a file.
#[derive(Clone, Copy)]
pub(super) enum How {
    /// Read only; it must exist.
    Read,
    /// Read and write, created if missing.
    ReadWrite,
    /// Write only, created if missing.
    Write,
    /// Read and write, created: it must not exist.
    CreateNew,
}

/// Opens `name` in the directory `dir` without following a symbolic link; a file it creates
/// gets mode 0600. A symbolic link gives an error that says so.
pub(super) fn open_in(dir: &File, name: &str, how: How) -> io::Result<File> {
    let flags = OFlags::NOFOLLOW
        | OFlags::CLOEXEC
        | match how {
            How::Read => OFlags::RDONLY,
            How::ReadWrite => OFlags::RDWR | OFlags::CREATE,
            How::Write => OFlags::WRONLY | OFlags::CREATE,
            How::CreateNew => OFlags::RDWR | OFlags::CREATE | OFlags::EXCL,
        };
    rustix::fs::openat(dir, name, flags, Mode::RUSR | Mode::WUSR)
        .map(File::from)
        .map_err(|e| {
            if e == rustix::io::Errno::LOOP {
                io::Error::other(format!(
                    "`{name}` is a symbolic link, which vtp does not follow (it may have been \
                     planted to redirect the store's writes): remove it"
                ))
            } else {
                e.into()
            }
        })
}

/// Removes `name` from `dir` if it is there: a symbolic link itself, never what it points to.
pub(super) fn remove_in(dir: &File, name: &str) -> io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Err(rustix::io::Errno::NOENT) => Ok(()),
        r => r.map_err(Into::into),
    }
}

/// Whether `dir` holds an entry `name` (of any kind; a link is not followed).
pub(super) fn exists_in(dir: &File, name: &str) -> bool {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).is_ok()
}

/// Renames `from` to `to` within `dir`, replacing `to`.
pub(super) fn rename_in(dir: &File, from: &str, to: &str) -> io::Result<()> {
    rustix::fs::renameat(dir, from, dir, to).map_err(Into::into)
}

#[cfg(test)]
mod temporary_tests {
    use super::*;

    #[test]
    fn temporary_directories_are_recognised() {
        assert!(is_temporary(&std::env::temp_dir().join("vtp-eventdb")));
        assert!(is_temporary(Path::new("/tmp/x")));
        assert!(is_temporary(Path::new("/var/tmp/vtp")));
        assert!(is_temporary(Path::new("/dev/shm/vtp")));
        assert!(!is_temporary(Path::new("/var/lib/vtp")));
        assert!(!is_temporary(Path::new("/tmpfoo/vtp")));
    }
}
