//! The status page (`GET /`) of a running `vtp broker --http`, loaded in a real headless
//! browser (Debian's Chromium, `conformance/peers/setup_chromium.sh`; `VTP_CHROMIUM` under CI,
//! where it is never skipped), after real GCN notices with positions were submitted with
//! `vtp send`.
//!
//! The latest events and the sky map's marks come from the event archive, attached to the
//! page's source (`Metrics::attach_recent_events`) by the node: the assertions on them are in
//! the test marked `ignore` until the archive is attached in the binary.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Instant;

use support::*;
use vtp_testkit::browser::{dump_dom, png_size, screenshot};

const GCN: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../core/tests/data/gcn_swift_bat.xml"
));
const GCN_IVORN: &str = "ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_532871-729";

/// Where the submitted notices are on the sky (RA, Dec in degrees).
const POSITIONS: [(f64, f64); 3] = [(22.413, -14.6364), (150.0, 30.0), (300.0, 60.0)];

/// A broker with `--http`, and what was submitted to it: the IVORNs of the positioned events
/// and of the one without a position.
struct Scene {
    broker: Broker,
    http: u16,
    positioned: Vec<String>,
    plain: String,
    _files: TempDir,
}

/// The GCN notice of the corpus as event `n`, at `(ra, dec)`.
fn gcn_at(n: usize, (ra, dec): (f64, f64)) -> (String, Vec<u8>) {
    let text = std::str::from_utf8(GCN).unwrap();
    let ivorn = format!("ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_53287{n}-729");
    for needle in [GCN_IVORN, "<C1>22.4130</C1>", "<C2>-14.6364</C2>"] {
        assert!(text.contains(needle), "{needle} in the corpus notice");
    }
    let text = text
        .replacen(GCN_IVORN, &ivorn, 1)
        .replacen("<C1>22.4130</C1>", &format!("<C1>{ra:.4}</C1>"), 1)
        .replacen("<C2>-14.6364</C2>", &format!("<C2>{dec:.4}</C2>"), 1);
    (ivorn, text.into_bytes())
}

fn send(port: u16, file: &std::path::Path) {
    let out = Command::new(VTP)
        .args(["send", &format!("127.0.0.1:{port}")])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "vtp send {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `GET path` on the HTTP endpoint: the whole response (head and body).
fn get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(loopback(port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Starts the broker, submits the notices and a plain event with `vtp send`, and waits until
/// the page counts them.
fn scene(name: &str) -> Scene {
    let broker = Broker::start(
        name,
        &["--broadcast-test-interval", "0", "--http", "127.0.0.1:0"],
    );
    let http = http_port(&broker.proc.log);
    let files = TempDir::new(&format!("{name}-events"));
    let mut positioned = Vec::new();
    for (n, pos) in POSITIONS.into_iter().enumerate() {
        let (ivorn, bytes) = gcn_at(n, pos);
        let file = files.path().join(format!("gcn-{n}.xml"));
        std::fs::write(&file, bytes).unwrap();
        send(broker.receive, &file);
        positioned.push(ivorn);
    }
    let plain = format!("ivo://vtp.test/{name}#no-position");
    let (file, _) = write_event(&files, "plain.xml", &plain);
    send(broker.receive, &file);
    let deadline = Instant::now() + WAIT;
    loop {
        let page = get(http, "/");
        if page.contains("4 events in 24 hours") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page never counted the 4 events:\n{page}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Scene {
        broker,
        http,
        positioned,
        plain,
        _files: files,
    }
}

#[test]
fn the_status_page_of_a_running_broker_in_chromium() {
    let s = scene("page");
    let response = get(s.http, "/");
    let head = response
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        head.contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(
        head.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );

    let url = format!("http://127.0.0.1:{}/", s.http);
    let dom = dump_dom(&url);
    assert!(
        dom.contains("<span id=\"ivo\">ivo://vtp.test/page</span>"),
        "the node's IVO:\n{dom}"
    );
    assert!(dom.contains("<svg id=\"skymap\""), "the sky map:\n{dom}");
    assert!(dom.contains("<ellipse class=\"sky\""), "{dom}");
    assert!(dom.contains("<svg id=\"chart\""), "the chart:\n{dom}");
    assert!(
        dom.contains("<path class=\"bars\""),
        "a bar for this minute:\n{dom}"
    );
    assert!(dom.contains("4 events in 24 hours"), "{dom}");
    for port in [s.broker.receive, s.broker.broadcast] {
        assert!(
            dom.contains(&format!("127.0.0.1:{port}")),
            "listener {port}"
        );
    }
    assert!(!dom.contains("<script"), "{dom}");

    let dir = TempDir::new("page-shot");
    let png = screenshot(&url, &dir.path().join("page.png"));
    assert_eq!(png_size(&png), Some((1280, 1600)), "a 1280x1600 PNG");
}

/// Needs the archive attached to the page's source by the node (issue 17): until then the
/// page says the archive is off and the map has no mark.
#[test]
#[ignore = "needs the event archive attached to the status page (issue 17)"]
fn the_status_page_lists_the_archived_events_and_maps_the_positioned_ones() {
    let s = scene("page-archive");
    let url = format!("http://127.0.0.1:{}/", s.http);
    let dom = dump_dom(&url);
    assert!(!dom.contains("id=\"archive-off\""), "{dom}");
    let marks = dom.matches("<circle class=\"event\"").count();
    assert_eq!(
        marks,
        s.positioned.len(),
        "one mark per positioned event:\n{dom}"
    );
    for ivorn in &s.positioned {
        assert!(
            dom.contains(&format!("data-ivorn=\"{ivorn}\"")),
            "{ivorn} marked:\n{dom}"
        );
        assert!(
            dom.contains(&format!(">{ivorn}</a>")),
            "{ivorn} listed:\n{dom}"
        );
    }
    assert!(
        dom.contains(&format!(">{}</a>", s.plain)),
        "the plain event listed"
    );
    assert!(
        !dom.contains(&format!("data-ivorn=\"{}\"", s.plain)),
        "the plain event has no mark"
    );
    // The latest event first, linking to its XML.
    let newest = dom.find(&format!(">{}</a>", s.plain)).unwrap();
    let oldest = dom.find(&format!(">{}</a>", s.positioned[0])).unwrap();
    assert!(newest < oldest, "newest first");
    assert!(dom.contains("<a href=\"/api/events/"), "{dom}");
    assert!(dom.contains("RA 150.000° Dec +30.000° ± 0.050°"), "{dom}");
}
