//! Helpers shared by the crate's unit tests.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tracing_subscriber::fmt::MakeWriter;

use vtp_core::filter::NoFilterEngine;
use vtp_core::message::EventRole;
use vtp_core::{Config, Delivery, EventKey, ListenerRole, Node, Peer, Source};

/// A fresh directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("vtp-host-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A delivery as the node would hand it to the handlers, with any ivorn (even one the node
/// would refuse) and payload.
pub(crate) fn delivery(ivorn: &str, payload: &[u8]) -> Delivery {
    // Connection handles are minted by the node only: accept one on a throwaway node.
    let now = std::time::Instant::now();
    let config = Config::new(Some("ivo://vtp.test/host".to_owned()));
    let mut node = Node::new(config, Box::new(NoFilterEngine), 1, now, Duration::ZERO)
        .expect("valid test config");
    let conn = node
        .handle_accept(ListenerRole::Receive, Peer::Local, now)
        .expect("node accepts");
    Delivery {
        ivorn: ivorn.into(),
        key: EventKey::of_element(payload),
        payload: Bytes::copy_from_slice(payload),
        source: Source::Author(conn),
        role: EventRole::Observation,
        signature: None,
        spans: None,
    }
}

/// Runs `f` with every log event of this thread (DEBUG and up) captured as text.
pub(crate) fn capture_logs<R>(f: impl FnOnce() -> R) -> (R, String) {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    let result = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&logs.0.lock().expect("log lock")).into_owned();
    (result, text)
}

#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl<'a> MakeWriter<'a> for Logs {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        LogWriter(Arc::clone(&self.0))
    }
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("log lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
