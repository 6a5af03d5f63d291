//! [`SaveEvent`]: every event written to a file named after its ivorn (`--save-event`).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tracing::debug;
use vtp_core::Delivery;
use vtp_core::message::EventRole;

use super::{Handler, HandlerError};

/// Writes every event to a file in a directory (`--save-event`, `--save-event-directory`).
///
/// The file is named after the ivorn by Comet's rule ([`SaveEvent::file_name`]) and holds the
/// raw payload bytes as received (Comet re-encodes them as text; we do not). An existing file is
/// never overwritten, and a valid event is never refused for want of a name: if the name is
/// taken (an earlier save of the same ivorn, or another ivorn that sanitises alike), the event
/// goes to `NAME_HASH`, where `HASH` is 16 hex digits of a hash of the whole ivorn, so distinct
/// ivorns get distinct names and one ivorn always gets the same one; if that is taken too (the
/// same ivorn saved again), to `NAME_HASH_2`, `NAME_HASH_3`, and so on. Names stay within 255
/// bytes. (Comet appends `_` until the name is new, which runs out of room after 55 files.)
///
/// Saving the very same bytes again is a no-op: if a taken name already holds exactly this
/// payload (the event was saved before, and is handled again after a restart: handlers are
/// at-least-once), that file counts as the save and no copy is made. So replays from the
/// handler spool are idempotent.
///
/// Implementation note: each file is created with `O_CREAT | O_EXCL` ([`OpenOptions::create_new`]),
/// which is atomic, so concurrent saves of one ivorn (by several workers or processes) each get
/// their own file. Comet needs a lock file in the process's working directory for that; we
/// create no lock file.
///
/// With [`skipping_tests`](Self::skipping_tests) (`--save-event-skip-test`), events whose
/// `role` is `test` are not saved (the other handlers still get them).
#[derive(Debug, Clone)]
pub struct SaveEvent {
    dir: PathBuf,
    skip_test: bool,
}

impl SaveEvent {
    /// A handler saving into `dir`, created (with its parents, mode 0755) if missing.
    ///
    /// The directory must belong to the user running vtp and be writable by nobody else, as
    /// the seen-index's must: otherwise another user could plant a symbolic link under the name
    /// of an event to come. (Files are created with `O_EXCL`, which does not follow a link, so
    /// such a link would divert no write; it would still take that name.)
    ///
    /// # Errors
    ///
    /// [`HandlerError::CreateDir`] if `dir` cannot be created or is not a directory,
    /// [`HandlerError::UnsafeDir`] if another user owns it or others can write to it.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, HandlerError> {
        let dir = dir.into();
        crate::store::create_checked(&dir, 0o755).map_err(|e| match e {
            Ok(source) => HandlerError::CreateDir {
                dir: dir.clone(),
                source,
            },
            Err(why) => HandlerError::UnsafeDir {
                dir: dir.clone(),
                why,
            },
        })?;
        Ok(Self {
            dir,
            skip_test: false,
        })
    }

    /// The same handler, passing over (`skip`) or saving events whose `role` is `test`.
    #[must_use]
    pub fn skipping_tests(mut self, skip: bool) -> Self {
        self.skip_test = skip;
        self
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
    /// is removed).
    pub fn save(&self, ivorn: &str, payload: &[u8]) -> Result<PathBuf, HandlerError> {
        let stem = Self::file_name(ivorn);
        let hashed = format!("{stem}_{:016x}", fnv1a64(ivorn.as_bytes()));
        let mut n = 0u64;
        loop {
            let name = match n {
                0 => stem.clone(),
                1 => hashed.clone(),
                n => format!("{hashed}_{n}"),
            };
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
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if holds(&path, payload) {
                        return Ok(path);
                    }
                    n += 1;
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
    /// `event`, and names are cut to 200 bytes (room for the suffixes [`save`](Self::save) adds
    /// to a taken name within the 255-byte limit of file names). The result never contains a
    /// path separator.
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
        if self.skip_test && delivery.role == EventRole::Test {
            debug!(ivorn = %delivery.ivorn, "test event not saved (--save-event-skip-test)");
            return Ok(());
        }
        let path = self.save(&delivery.ivorn, &delivery.payload)?;
        debug!(ivorn = %delivery.ivorn, path = %path.display(), "event saved");
        Ok(())
    }
}

/// Longest file name [`SaveEvent`] creates (the usual `NAME_MAX`): a 200-byte stem, `_`, 16 hex
/// digits, `_` and at most 20 digits of a counter make 238.
#[cfg(test)]
const NAME_MAX: usize = 255;

/// Longest name [`SaveEvent::file_name`] derives, leaving room for the suffixes of taken names.
const STEM_MAX: usize = 200;

/// True if `path` is a regular file (not followed if a link) holding exactly `payload`.
fn holds(path: &Path, payload: &[u8]) -> bool {
    use rustix::fs::{Mode, OFlags};
    // Non-blocking, so that a planted FIFO cannot stall the handler.
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let Ok(fd) = rustix::fs::open(path, flags, Mode::empty()) else {
        return false;
    };
    let mut file = fs::File::from(fd);
    match file.metadata() {
        Ok(m) if m.is_file() && m.len() == payload.len() as u64 => {}
        _ => return false,
    }
    let mut held = Vec::with_capacity(payload.len());
    io::Read::read_to_end(&mut file, &mut held).is_ok() && held == payload
}

/// FNV-1a, 64 bits: a hash that is the same on every platform and in every release, so one
/// ivorn always gets the same name. Not collision-resistant against a chosen ivorn; a collision
/// only costs a counter suffix.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

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
        let hashed = format!("{name}_{:016x}", fnv1a64(GCN.as_bytes()));
        assert_eq!(first, save.dir().join(name));
        assert_eq!(second, save.dir().join(&hashed));
        assert_eq!(third, save.dir().join(format!("{hashed}_2")));
        // The same ivorn always gets the same names.
        let again = SaveEvent::new(tmp.path().join("events/again")).unwrap();
        assert_eq!(again.save(GCN, b"1").unwrap(), again.dir().join(name));
        assert_eq!(again.save(GCN, b"2").unwrap(), again.dir().join(&hashed));
        assert_eq!(fs::read(&first).unwrap(), b"one \xff\x00");
        assert_eq!(fs::read(&second).unwrap(), b"two");
        assert_eq!(fs::read(&third).unwrap(), b"three");

        // A file that was there before is left alone.
        fs::write(save.dir().join(".x"), b"precious").unwrap();
        let path = save.save("..x", b"event").unwrap();
        let hash = fnv1a64(b"..x");
        assert_eq!(path, save.dir().join(format!(".x_{hash:016x}")));
        assert_eq!(fs::read(save.dir().join(".x")).unwrap(), b"precious");
    }

    #[test]
    fn skipping_tests_passes_over_test_events_only() {
        let tmp = TempDir::new("save-skip-test");
        let mut test = delivery("ivo://vtp.test/a#test", b"<t/>");
        test.role = EventRole::Test;
        let observation = delivery("ivo://vtp.test/a#obs", b"<o/>");
        let skipping = SaveEvent::new(tmp.path().join("skip"))
            .unwrap()
            .skipping_tests(true);
        skipping.handle(&test).unwrap();
        skipping.handle(&observation).unwrap();
        assert_eq!(
            files(skipping.dir()),
            BTreeSet::from(["ivo__vtp.test_a#obs".replace('#', "")])
        );
        let saving = SaveEvent::new(tmp.path().join("all")).unwrap();
        saving.handle(&test).unwrap();
        saving.handle(&observation).unwrap();
        assert_eq!(files(saving.dir()).len(), 2);
    }

    #[test]
    fn saving_the_same_bytes_again_makes_no_copy() {
        let tmp = TempDir::new("save-replay");
        let save = SaveEvent::new(tmp.path()).unwrap();
        let first = save.save(GCN, b"the event").unwrap();
        assert_eq!(save.save(GCN, b"the event").unwrap(), first);
        // Other bytes under the same ivorn are a new file, and their replay finds that one.
        let other = save.save(GCN, b"a correction").unwrap();
        assert_ne!(other, first);
        assert_eq!(save.save(GCN, b"a correction").unwrap(), other);
        assert_eq!(save.save(GCN, b"the event").unwrap(), first);
        assert_eq!(files(tmp.path()).len(), 2);
        // A prefix of the bytes (a save cut short by a crash) is not the event: a copy is made.
        let cut = save.save("ivo://a/b#cut", b"the ev").unwrap();
        let whole = save.save("ivo://a/b#cut", b"the event").unwrap();
        assert_ne!(cut, whole);
        assert_eq!(fs::read(&whole).unwrap(), b"the event");
    }

    #[test]
    fn distinct_ivorns_that_sanitise_alike_all_get_a_file() {
        let tmp = TempDir::new("save-alike");
        let save = SaveEvent::new(tmp.path()).unwrap();
        // Past the 200-byte cut only the serial differs: every ivorn gets the same Comet name.
        let prefix = format!("ivo://example.org/{}#", "x".repeat(300));
        let mut paths = BTreeSet::new();
        for i in 0..100 {
            let ivorn = format!("{prefix}{i}");
            let path = save.save(&ivorn, ivorn.as_bytes()).unwrap();
            assert_eq!(path.parent(), Some(tmp.path()));
            let name = path.file_name().unwrap().to_str().unwrap();
            assert!(name.len() <= NAME_MAX, "{} bytes", name.len());
            assert_eq!(fs::read(&path).unwrap(), ivorn.as_bytes());
            paths.insert(path);
        }
        assert_eq!(paths.len(), 100);
        assert_eq!(files(tmp.path()).len(), 100);
        // Ivorns whose names differ only by `_` suffixes do not crowd each other out either.
        let base = format!("ivo://example.org/{}", "y".repeat(250));
        for i in 0..60 {
            let ivorn = format!("{base}#{}", "-".repeat(i));
            save.save(&ivorn, b"y").unwrap();
        }
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

    #[test]
    fn a_directory_others_can_write_to_or_another_user_owns_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = TempDir::new("save-unsafe");
        let open = tmp.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o1777)).unwrap();
        let foreign = if rustix::process::geteuid().is_root() {
            let d = tmp.path().join("nobody");
            fs::create_dir(&d).unwrap();
            std::os::unix::fs::chown(&d, Some(65_534), Some(65_534)).unwrap();
            d
        } else {
            PathBuf::from("/")
        };
        for (dir, why) in [
            (&open, "writable by its group or by others (mode 1777)"),
            (&foreign, "not by this user"),
        ] {
            let err = SaveEvent::new(dir).unwrap_err();
            assert!(matches!(err, HandlerError::UnsafeDir { .. }), "{err:?}");
            let text = err.to_string();
            assert!(text.contains(why), "{text}");
            assert!(text.contains("--save-event-directory DIR"), "{text}");
        }
        // A new one is created without write access for others, and accepted.
        let new = tmp.path().join("a/b");
        SaveEvent::new(&new).unwrap();
        let mode = fs::metadata(&new).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755);
    }
}
