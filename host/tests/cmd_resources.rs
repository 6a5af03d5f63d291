//! `--cmd` holds no thread, pipe or process after each run, whatever the program leaves behind.
//!
//! A test binary of its own (one test): it counts this process's threads and open descriptors,
//! which tests running beside it would change.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use vtp_host::Command;

fn count(dir: &str) -> usize {
    fs::read_dir(dir).expect("/proc is readable").count()
}

/// Waits at most 5 s for this process's threads and descriptors to come back to `baseline`.
fn settles(baseline: (usize, usize)) -> (usize, usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = (count("/proc/self/task"), count("/proc/self/fd"));
        if now == baseline || Instant::now() >= deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn script(dir: &Path, name: &str, body: &str) -> Command {
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write the script");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("make it executable");
    Command::new(&path, Vec::new()).expect("an executable script")
}

#[test]
fn threads_and_descriptors_are_bounded_whatever_the_command_leaves_behind() {
    let dir = std::env::temp_dir().join(format!("vtp-host-cmd-resources-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    // Exits at once, a background child holding its output pipes.
    let exits = script(&dir, "exits.sh", "sleep 60 &\necho started");
    // Never exits: killed at the timeout, with its background child.
    let hangs =
        script(&dir, "hangs.sh", "sleep 60 &\nsleep 60").with_timeout(Duration::from_millis(100));
    // Leaves its process group (`setsid`), out of reach of the group kill, holding the pipes.
    let escaped = dir.join("escaped.pid");
    let escapes = script(
        &dir,
        "escapes.sh",
        &format!(
            "setsid sh -c 'echo $$ > \"{}\"; exec sleep 60' &\nsleep 0.2",
            escaped.display()
        ),
    );
    let baseline = (count("/proc/self/task"), count("/proc/self/fd"));
    for _ in 0..20 {
        exits.run(Bytes::from_static(b"x")).unwrap();
    }
    for _ in 0..5 {
        hangs.run(Bytes::from_static(b"x")).unwrap_err();
    }
    escapes.run(Bytes::from_static(b"x")).unwrap();
    let after = settles(baseline);
    if let Ok(pid) = fs::read_to_string(&escaped) {
        let _ = std::process::Command::new("kill").arg(pid.trim()).status();
    }
    let _ = fs::remove_dir_all(&dir);
    assert_eq!(
        after, baseline,
        "(threads, descriptors) after 26 runs vs before"
    );
}
