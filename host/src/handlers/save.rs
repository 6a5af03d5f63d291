//! [`SaveEvent`]: every event written to a file named after its ivorn (`--save-event`).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tracing::debug;
use vtp_core::Delivery;

use super::{Handler, HandlerError};

/// Writes every event to a file in a directory (`--save-event`, `--save-event-directory`).
///
/// The file is named after the ivorn by Comet's rule ([`SaveEvent::file_name`]) and holds the
/// raw payload bytes as received (Comet re-encodes them as text; we do not). An existing file is
/// never overwritten: `_` is appended to the name until it is new.
///
/// Implementation note: each file is created with `O_CREAT | O_EXCL` ([`OpenOptions::create_new`]),
/// which is atomic, so concurrent saves of one ivorn (by several workers or processes) each get
/// their own file. Comet needs a lock file in the process's working directory for that; we
/// create no lock file.
#[derive(Debug, Clone)]
pub struct SaveEvent {
    dir: PathBuf,
}

impl SaveEvent {
    /// A handler saving into `dir`, created (with its parents) if missing.
    ///
    /// # Errors
    ///
    /// [`HandlerError::CreateDir`] if `dir` cannot be created or is not a directory.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, HandlerError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|source| HandlerError::CreateDir {
            dir: dir.clone(),
            source,
        })?;
        Ok(Self { dir })
    }

    /// The directory events are saved in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Saves `payload` under the name derived from `ivorn` and returns the file's path.
    ///
    /// # Errors
    ///
    /// [`HandlerError::Save`] if the file cannot be created or written (a partly written file
    /// is removed), or if every candidate name up to 255 bytes is taken.
    pub fn save(&self, ivorn: &str, payload: &[u8]) -> Result<PathBuf, HandlerError> {
        let mut name = Self::file_name(ivorn);
        loop {
            let path = self.dir.join(&name);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    return match file.write_all(payload) {
                        Ok(()) => Ok(path),
                        Err(source) => {
                            drop(file);
                            // Best effort: a truncated event file is worse than none.
                            let _ = fs::remove_file(&path);
                            Err(HandlerError::Save { path, source })
                        }
                    };
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && name.len() < NAME_MAX => {
                    name.push('_');
                }
                Err(source) => return Err(HandlerError::Save { path, source }),
            }
        }
    }

    /// The file name Comet derives from an ivorn (docs/protocol.md §4.5).
    ///
    /// Drop one leading `.`; turn `/` and `\` into `_`; keep only ASCII letters, digits, `_`
    /// and `.`. `ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_532871-729` gives
    /// `ivo__nasa.gsfc.gcn_SWIFTBAT_GRB_Pos_532871729`, `..x` gives `.x`. Two additions keep
    /// the name usable and inside the directory: a name that would be empty, `.` or `..` is
    /// `event`, and names are cut to 200 bytes (room for `_` suffixes within the 255-byte limit
    /// of file names). The result never contains a path separator.
    pub fn file_name(ivorn: &str) -> String {
        let rest = ivorn.strip_prefix('.').unwrap_or(ivorn);
        let mut name = String::with_capacity(rest.len().min(STEM_MAX));
        for c in rest.chars() {
            if name.len() == STEM_MAX {
                break;
            }
            match c {
                '/' | '\\' => name.push('_'),
                c if c.is_ascii_alphanumeric() || c == '_' || c == '.' => name.push(c),
                _ => {}
            }
        }
        if name.is_empty() || name == "." || name == ".." {
            return "event".to_owned();
        }
        name
    }
}

impl Handler for SaveEvent {
    fn name(&self) -> &str {
        "save-event"
    }

    fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        let path = self.save(&delivery.ivorn, &delivery.payload)?;
        debug!(ivorn = %delivery.ivorn, path = %path.display(), "event saved");
        Ok(())
    }
}

/// Longest file name [`SaveEvent`] tries (the usual `NAME_MAX`).
const NAME_MAX: usize = 255;

/// Longest name [`SaveEvent::file_name`] derives, leaving room for `_` suffixes.
const STEM_MAX: usize = 200;

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::{Arc, Barrier};
    use std::thread;

    use super::*;
    use crate::handlers::GCN;
    use crate::testutil::{TempDir, delivery};

    fn files(dir: &Path) -> BTreeSet<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    }

    #[test]
    fn file_names_follow_comet() {
        let cases = [
            (GCN, "ivo__nasa.gsfc.gcn_SWIFTBAT_GRB_Pos_532871729"),
            ("..x", ".x"),
            (".x", "x"),
            ("ivo://../../etc/passwd", "ivo__.._.._etc_passwd"),
            ("/abs", "_abs"),
            ("\\..\\win", "_.._win"),
            ("..", "event"),
            (".", "event"),
            ("...", "event"),
            ("", "event"),
            ("ivo://:#-~", "ivo__"),
            ("#:-", "event"),
            ("ivo://é/ü", "ivo___"),
        ];
        for (ivorn, want) in cases {
            assert_eq!(SaveEvent::file_name(ivorn), want, "{ivorn:?}");
        }
    }

    #[test]
    fn file_names_are_bounded_and_never_contain_separators() {
        let long = format!("ivo://a/{}", "x".repeat(10_000));
        let name = SaveEvent::file_name(&long);
        assert_eq!(name.len(), STEM_MAX);
        for ivorn in ["a/b\\c", "ivo://x/../../..", "/../..", "\\\\server\\share"] {
            let name = SaveEvent::file_name(ivorn);
            assert!(!name.contains('/') && !name.contains('\\'), "{name}");
            assert!(name != "." && name != ".." && !name.is_empty(), "{name}");
        }
    }

    #[test]
    fn save_writes_raw_bytes_and_never_clobbers() {
        let tmp = TempDir::new("save");
        let save = SaveEvent::new(tmp.path().join("events/new")).unwrap();
        let first = save.save(GCN, b"one \xff\x00").unwrap();
        let second = save.save(GCN, b"two").unwrap();
        let third = save.save(GCN, b"three").unwrap();
        let name = "ivo__nasa.gsfc.gcn_SWIFTBAT_GRB_Pos_532871729";
        assert_eq!(first, save.dir().join(name));
        assert_eq!(second, save.dir().join(format!("{name}_")));
        assert_eq!(third, save.dir().join(format!("{name}__")));
        assert_eq!(fs::read(&first).unwrap(), b"one \xff\x00");
        assert_eq!(fs::read(&second).unwrap(), b"two");
        assert_eq!(fs::read(&third).unwrap(), b"three");

        // A file that was there before is left alone.
        fs::write(save.dir().join(".x"), b"precious").unwrap();
        let path = save.save("..x", b"event").unwrap();
        assert_eq!(path, save.dir().join(".x_"));
        assert_eq!(fs::read(save.dir().join(".x")).unwrap(), b"precious");
    }

    #[test]
    fn hostile_ivorns_stay_inside_the_directory() {
        let tmp = TempDir::new("save-hostile");
        let dir = tmp.path().join("events");
        let save = SaveEvent::new(&dir).unwrap();
        let hostile = [
            "ivo://../../etc/passwd",
            "..",
            ".",
            "/abs",
            "../../x",
            "\\..\\..\\y",
            "",
        ];
        for ivorn in hostile {
            let path = save.save(ivorn, ivorn.as_bytes()).unwrap();
            assert_eq!(path.parent(), Some(dir.as_path()), "{ivorn:?} -> {path:?}");
            assert_eq!(fs::read(&path).unwrap(), ivorn.as_bytes());
        }
        assert_eq!(files(&dir).len(), hostile.len());
        // Nothing was written next to the directory.
        assert_eq!(files(tmp.path()), BTreeSet::from(["events".to_owned()]));
    }

    #[test]
    fn concurrent_saves_of_one_ivorn_get_their_own_files() {
        let tmp = TempDir::new("save-race");
        let save = Arc::new(SaveEvent::new(tmp.path()).unwrap());
        let barrier = Arc::new(Barrier::new(4));
        let threads: Vec<_> = (0..4u8)
            .map(|i| {
                let (save, barrier) = (Arc::clone(&save), Arc::clone(&barrier));
                thread::spawn(move || {
                    barrier.wait();
                    save.handle(&delivery(GCN, &[b'0' + i; 100])).unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let names = files(tmp.path());
        assert_eq!(names.len(), 4, "{names:?}");
        let contents: BTreeSet<Vec<u8>> = names
            .iter()
            .map(|n| fs::read(tmp.path().join(n)).unwrap())
            .collect();
        assert_eq!(contents, (0..4u8).map(|i| vec![b'0' + i; 100]).collect());
    }

    #[test]
    fn save_event_needs_a_usable_directory() {
        let tmp = TempDir::new("save-dir");
        let file = tmp.path().join("file");
        fs::write(&file, b"").unwrap();
        let err = SaveEvent::new(&file).unwrap_err();
        assert!(matches!(err, HandlerError::CreateDir { .. }), "{err:?}");
        assert!(err.to_string().contains("file"), "{err}");
    }
}
