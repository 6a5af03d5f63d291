//! `--archive`: the event archive the node keeps (vtp-host's `archive`) and who may read it
//! through the --http endpoint.

use std::path::{Path, PathBuf};

use crate::args::Operations;
use crate::{Fail, usage};

/// The archive's directory, if the node keeps one: `--archive DIR`; `--archive` alone or
/// `--http` without `--no-archive`, the --eventdb directory (the state directory when a
/// listener has none and `--archive` asks for it).
fn dir(ops: &Operations, eventdb: Option<&Path>) -> Result<Option<PathBuf>, Fail> {
    let a = &ops.archive;
    if a.no_archive {
        if a.archive.is_some() {
            return Err(usage("--archive and --no-archive: give one of them"));
        }
        return Ok(None);
    }
    match &a.archive {
        Some(dir) if !dir.as_os_str().is_empty() => Ok(Some(dir.clone())),
        Some(_) => match eventdb {
            Some(d) => Ok(Some(d.to_owned())),
            None => Ok(Some(vtp_host::store::default_dir_from_env()?)),
        },
        None if ops.http.is_some() => Ok(eventdb.map(Path::to_owned)),
        None => Ok(None),
    }
}

/// The opened archive and the rules for reading it.
#[cfg(feature = "archive")]
pub(crate) struct Opened {
    pub(crate) archive: vtp_host::archive::Archive,
    pub(crate) access: vtp_host::archive::Access,
}

/// Opens the archive the flags ask for (refusing clearly when another vtp holds it).
#[cfg(feature = "archive")]
pub(crate) fn open(
    ops: &Operations,
    eventdb: Option<&Path>,
    config: &vtp_core::Config,
) -> Result<Option<Opened>, Fail> {
    use std::time::Duration;
    use vtp_host::archive::{Access, Archive, ArchiveConfig};
    let Some(dir) = dir(ops, eventdb)? else {
        return Ok(None);
    };
    if ops.http.is_none() {
        tracing::warn!(
            "--archive without --http: events are archived in {} but nothing serves them",
            dir.display()
        );
    }
    let token = match &ops.archive.http_token_file {
        Some(file) => {
            let text = std::fs::read_to_string(file).map_err(|e| {
                usage(format!(
                    "--http-token-file {}: cannot read: {e}",
                    file.display()
                ))
            })?;
            if text.trim().len() < 16 {
                return Err(usage(format!(
                    "--http-token-file {}: the token must be at least 16 characters",
                    file.display()
                )));
            }
            Some(text)
        }
        None => None,
    };
    let mut cfg = ArchiveConfig::new(&dir);
    cfg.max_age = Duration::from_secs(ops.archive.archive_max_age * 86_400);
    cfg.max_bytes = ops.archive.archive_max_bytes;
    let archive = Archive::open(&cfg).map_err(|e| usage(format!("--archive: {e}")))?;
    tracing::info!(
        "archive: {} (keeping {} days, at most {} bytes)",
        archive.path().display(),
        ops.archive.archive_max_age,
        ops.archive.archive_max_bytes
    );
    let access = Access::new(
        config.subscriber_whitelist.clone(),
        !config.subscriber_identities.is_empty(),
        token.as_deref(),
    );
    Ok(Some(Opened { archive, access }))
}

/// Without the archive in the build, `--archive` (or --http-token-file) is refused.
#[cfg(not(feature = "archive"))]
pub(crate) fn refuse(ops: &Operations, eventdb: Option<&Path>) -> Result<(), Fail> {
    if ops.archive.archive.is_some() || ops.archive.http_token_file.is_some() {
        return Err(usage(
            "--archive needs a build with the archive (cargo feature `archive`)",
        ));
    }
    let _ = dir(ops, eventdb)?;
    Ok(())
}
