//! [`Stdout`]: every event written to standard output (`--stdout xml0|jsonl`), so that
//! `vtp listen HOST --stdout jsonl | consumer` works.
//!
//! Two record formats, each unambiguous whatever the event holds:
//!
//! - [`StdoutFormat::Xml0`]: the event's bytes exactly as received, then one NUL byte. XML
//!   cannot contain NUL (the node refuses events that do), so NUL ends a record; read with
//!   `xargs -0`, `read -d ''`, `split('\0')`. An event holding a NUL anyway is not written
//!   (logged at WARN).
//! - [`StdoutFormat::Jsonl`]: one JSON object per line (`jq`):
//!   `{"ivorn":…,"role":…,"received":…,"xml":…}`. `received` is when vtp handed the event to
//!   its handlers (RFC 3339, UTC, milliseconds; for an event replayed from the handler spool
//!   after a restart, the time of the replay). `xml` is the event's bytes as a string, exact
//!   when they are UTF-8; an event in another encoding (a legacy one its XML declaration
//!   names) has `xml_base64`, the bytes in base64, instead.
//!
//! Each record is written whole and flushed before the next one starts (records of events
//! handled at the same moment by different handler workers never interleave, but may leave in
//! an order other than their arrival). Logs go to standard error, never here.
//!
//! Standard output that cannot be written any more (its reader exited: `EPIPE`; or any other
//! write error) is logged once at ERROR, the callback given to [`Stdout::on_closed`] runs once
//! (the `vtp` binary stops then), and every later event fails with
//! [`HandlerError::OutputClosed`] without a write: with the handler spool, such events are
//! handled again at the next start.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{error, warn};
use vtp_core::Delivery;
use vtp_core::time::format_utc;

use super::{Handler, HandlerError};

/// How [`Stdout`] writes each event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StdoutFormat {
    /// The event's bytes, then a NUL byte.
    Xml0,
    /// One JSON object per line.
    Jsonl,
}

/// Writes every event to standard output (or another writer) in a [`StdoutFormat`].
pub struct Stdout {
    format: StdoutFormat,
    out: Mutex<Box<dyn Write + Send>>,
    closed: AtomicBool,
    on_closed: Option<Box<dyn Fn() + Send + Sync>>,
}

impl Stdout {
    /// A handler writing to this process's standard output.
    pub fn new(format: StdoutFormat) -> Self {
        Self::to(format, Box::new(io::stdout()))
    }

    /// A handler writing to `out` (tests; a library user's pipe).
    pub fn to(format: StdoutFormat, out: Box<dyn Write + Send>) -> Self {
        Self {
            format,
            out: Mutex::new(out),
            closed: AtomicBool::new(false),
            on_closed: None,
        }
    }

    /// Runs `f` once, on a handler worker, when the output cannot be written any more.
    #[must_use]
    pub fn on_closed(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_closed = Some(Box::new(f));
        self
    }

    /// The record of `delivery` in this handler's format; `None` if it cannot be written
    /// unambiguously (a NUL in an `xml0` event).
    fn record(&self, delivery: &Delivery) -> Option<Vec<u8>> {
        match self.format {
            StdoutFormat::Xml0 => {
                if delivery.payload.contains(&0) {
                    return None;
                }
                let mut r = Vec::with_capacity(delivery.payload.len() + 1);
                r.extend_from_slice(&delivery.payload);
                r.push(0);
                Some(r)
            }
            StdoutFormat::Jsonl => Some(json_line(delivery, SystemTime::now())),
        }
    }
}

impl std::fmt::Debug for Stdout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stdout")
            .field("format", &self.format)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Handler for Stdout {
    fn name(&self) -> &str {
        "stdout"
    }

    fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(HandlerError::OutputClosed);
        }
        let Some(record) = self.record(delivery) else {
            warn!(
                ivorn = %delivery.ivorn,
                "--stdout xml0: the event holds a NUL byte, which ends a record: not written"
            );
            return Ok(());
        };
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        let Err(e) = out.write_all(&record).and_then(|()| out.flush()) else {
            return Ok(());
        };
        drop(out);
        if !self.closed.swap(true, Ordering::AcqRel) {
            if e.kind() == io::ErrorKind::BrokenPipe {
                error!("standard output is closed (its reader exited): --stdout stops vtp");
            } else {
                error!("cannot write to standard output ({e}): --stdout stops vtp");
            }
            if let Some(f) = &self.on_closed {
                f();
            }
        }
        Err(HandlerError::OutputClosed)
    }
}

/// `{"ivorn":…,"role":…,"received":…,"xml":…}` and a newline; with signatures on,
/// `"signature":STATUS` (and `"signer":FINGERPRINT` when there is one) after `received`.
fn json_line(d: &Delivery, now: SystemTime) -> Vec<u8> {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let stamp = format_utc(since.as_secs());
    let stamp = stamp.as_str();
    // "…:SSZ" -> "…:SS.mmmZ"
    let received = format!(
        "{}.{:03}Z",
        &stamp[..stamp.len() - 1],
        since.subsec_millis()
    );
    let mut out = String::with_capacity(d.payload.len() + d.ivorn.len() + 96);
    out.push_str("{\"ivorn\":");
    json_string(&d.ivorn, &mut out);
    out.push_str(",\"role\":");
    json_string(d.role.as_str(), &mut out);
    out.push_str(",\"received\":");
    json_string(&received, &mut out);
    if let Some(s) = &d.signature {
        out.push_str(",\"signature\":");
        json_string(s.status.as_str(), &mut out);
        if let Some(signer) = &s.signer {
            out.push_str(",\"signer\":");
            json_string(&signer.fingerprint, &mut out);
        }
    }
    match std::str::from_utf8(&d.payload) {
        Ok(xml) => {
            out.push_str(",\"xml\":");
            json_string(xml, &mut out);
        }
        Err(_) => {
            out.push_str(",\"xml_base64\":\"");
            base64(&d.payload, &mut out);
            out.push('"');
        }
    }
    out.push_str("}\n");
    out.into_bytes()
}

/// `s` as a JSON string (RFC 8259): quotes, backslashes and control characters escaped.
fn json_string(s: &str, out: &mut String) {
    use std::fmt::Write as _;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Standard base64 (RFC 4648 §4, padded).
fn base64(bytes: &[u8], out: &mut String) {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ABC[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::testutil::{capture_logs, delivery};
    use vtp_core::message::EventRole;

    /// A writer shared with the test.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A writer whose reader has gone.
    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn xml0_writes_the_exact_bytes_and_a_nul() {
        let out = Shared::default();
        let h = Stdout::to(StdoutFormat::Xml0, Box::new(out.clone()));
        h.handle(&delivery("ivo://a/b#1", b"<e>caf\xc3\xa9</e>\n"))
            .unwrap();
        h.handle(&delivery("ivo://a/b#2", b"<f/>")).unwrap();
        assert_eq!(&*out.0.lock().unwrap(), b"<e>caf\xc3\xa9</e>\n\0<f/>\0");
        // A NUL inside an event would end its record early: not written.
        let (r, logs) = capture_logs(|| h.handle(&delivery("ivo://a/b#3", b"<g>\0</g>")));
        r.unwrap();
        assert!(
            logs.contains("NUL") && logs.contains("ivo://a/b#3"),
            "{logs}"
        );
        assert_eq!(out.0.lock().unwrap().len(), 19);
    }

    #[test]
    fn jsonl_is_one_object_per_line_with_the_exact_text() {
        let mut d = delivery("ivo://a/b#\"1\"", b"<e a=\"x\">\n\t\\ \x01 caf\xc3\xa9</e>");
        d.role = EventRole::Test;
        let at = UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        let line = String::from_utf8(json_line(&d, at)).unwrap();
        assert_eq!(
            line,
            "{\"ivorn\":\"ivo://a/b#\\\"1\\\"\",\"role\":\"test\",\
             \"received\":\"2023-11-14T22:13:20.123Z\",\
             \"xml\":\"<e a=\\\"x\\\">\\n\\t\\\\ \\u0001 café</e>\"}\n"
        );
        // Not UTF-8 (a legacy encoding): the bytes in base64.
        let latin1 = delivery("ivo://a/b#2", b"<e>caf\xe9</e>");
        let line = String::from_utf8(json_line(&latin1, at)).unwrap();
        assert!(
            line.contains("\"xml_base64\":\"PGU+Y2Fm6TwvZT4=\""),
            "{line}"
        );
        assert!(!line.contains("\"xml\""), "{line}");
    }

    #[test]
    fn base64_pads_as_rfc_4648_says() {
        for (raw, enc) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"\xff\xfe\xfd", "//79"),
        ] {
            let mut s = String::new();
            base64(raw, &mut s);
            assert_eq!(s, enc);
        }
    }

    #[test]
    fn a_closed_output_is_logged_once_calls_back_once_and_fails_every_later_event() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&calls);
        let h = Stdout::to(StdoutFormat::Jsonl, Box::new(Closed)).on_closed(move || {
            c.fetch_add(1, Ordering::Relaxed);
        });
        let (results, logs) = capture_logs(|| {
            (0..3)
                .map(|i| h.handle(&delivery(&format!("ivo://a/b#{i}"), b"<e/>")))
                .collect::<Vec<_>>()
        });
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Err(HandlerError::OutputClosed)))
        );
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        assert_eq!(logs.matches("ERROR").count(), 1, "{logs}");
        assert!(logs.contains("standard output is closed"), "{logs}");
    }
}
