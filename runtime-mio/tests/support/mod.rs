//! Helpers for the mio runtime tests: a node running `vtp_mio::run` on its own thread, and a raw
//! author over std sockets (the shutdown signal, the effects that report to the test and the raw
//! peers are `vtp_host::testing`'s). Every wait has a deadline; nothing sleeps.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::disallowed_methods
)]

use std::io::{self, Read, Write};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use vtp_core::endpoint::ListenAddr;
use vtp_core::filter::NoFilterEngine;
use vtp_core::{Config, ListenerRole, Node};
#[allow(unused_imports)] // Each test binary uses its own subset.
pub use vtp_host::testing::{Collect, RawSubscriber, Reports, Stop, WAIT, collect};
use vtp_mio::{Bound, Options};

pub fn node(local_ivo: Option<&str>) -> Node {
    let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let mut config = Config::new(local_ivo.map(str::to_owned));
    config.timing.test_event_interval = None;
    Node::new(config, Box::new(NoFilterEngine), 1, Instant::now(), unix).unwrap()
}

pub fn bind(endpoints: &[(ListenerRole, &str)]) -> Bound {
    let eps: Vec<_> = endpoints
        .iter()
        .map(|(r, a)| (*r, ListenAddr::parse(a).unwrap()))
        .collect();
    vtp_mio::bind(&eps).unwrap()
}

/// A broker running `vtp_mio::run` on its own thread.
pub struct Running {
    pub stop: Stop,
    pub reports: Reports,
    pub handle: JoinHandle<io::Result<Collect>>,
}

impl Running {
    pub fn start(bound: Bound, options: Options) -> Self {
        let (fx, reports) = collect(None);
        let stop = Stop::default();
        let wait = stop.wait();
        let node = node(Some("ivo://vtp.test/mio"));
        let handle = std::thread::spawn(move || vtp_mio::run(node, bound, fx, wait, options));
        Self {
            stop,
            reports,
            handle,
        }
    }

    /// Fires the shutdown signal and returns the effects `run` handed back.
    pub fn stop(self) -> Collect {
        self.stop.fire();
        self.handle.join().unwrap().unwrap()
    }
}

/// A VOEvent with `pad` bytes of description text.
pub fn event_xml(ivorn: &str, pad: usize) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <voe:VOEvent xmlns:voe=\"http://www.ivoa.net/xml/VOEvent/v2.0\"\n \
         ivorn=\"{ivorn}\" role=\"observation\" version=\"2.0\">\n  \
         <Who><AuthorIVORN>ivo://vtp.test/author</AuthorIVORN></Who>\n  \
         <Description>{}</Description>\n\
         </voe:VOEvent>\n",
        "x".repeat(pad)
    )
    .into_bytes()
}

/// Submits `payload` on `s` and returns the receipt's role (`ack` or `nak`).
pub fn submit_raw(s: impl Read + Write, payload: &[u8]) -> String {
    vtp_host::testing::submit(s, payload).0
}
