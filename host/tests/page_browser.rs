//! The status page (`GET /` of the operator endpoint) loaded in a real headless browser
//! (Debian's Chromium, `conformance/peers/setup_chromium.sh`), with the latest events given by
//! a source the test attaches the way the node attaches its archive
//! (`Metrics::attach_recent_events`): the DOM has one mark per positioned event, the IVORNs
//! (hostile ones escaped: no script element appears), and a screenshot is a PNG.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use vtp_host::ops::http::{HttpLimits, HttpServer, PAGE_CSP};
use vtp_host::ops::{ListenerInfo, Metrics, NodeInfo, PageEvent, SkyPosition};
use vtp_testkit::TempDir;
use vtp_testkit::browser::{dump_dom, png_size, screenshot};

const HOSTILE: &str = "ivo://evil.example/x#<script>document.title='owned'</script>";

fn events() -> Vec<PageEvent> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let at = |seq: u64, ivorn: &str, pos: Option<(f64, f64)>| PageEvent {
        seq,
        received_unix_ms: now - 1000 * (10 - seq as i64),
        ivorn: ivorn.to_owned(),
        role: "observation".into(),
        stream: ivorn
            .trim_start_matches("ivo://")
            .split('#')
            .next()
            .unwrap()
            .to_owned(),
        position: pos.map(|(ra, dec)| SkyPosition {
            ra,
            dec,
            error: Some(0.05),
        }),
        signature: None,
    };
    // Newest first.
    vec![
        at(5, HOSTILE, Some((300.0, 45.0))),
        at(
            4,
            "ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_4",
            Some((22.413, -14.6364)),
        ),
        at(3, "ivo://vtp.test/page#no-position", None),
        at(2, "ivo://nasa.gsfc.gcn/Fermi#GBM_2", Some((180.0, 0.0))),
        at(
            1,
            "ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_1",
            Some((359.9, -89.0)),
        ),
    ]
}

fn get(addr: SocketAddr, head: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    write!(s, "{head} / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn the_status_page_in_chromium_marks_each_positioned_event() {
    let (metrics, _observer) = Metrics::new(NodeInfo {
        role: "broker",
        ivo: Some("ivo://vtp.test/browser".into()),
        listeners: vec![ListenerInfo {
            serves: "subscribers",
            address: "127.0.0.1:8099".into(),
            tls: false,
        }],
        upstreams: Vec::new(),
    });
    let list = events();
    metrics.attach_recent_events(move |limit: usize| {
        Ok(list.iter().take(limit).cloned().collect::<Vec<_>>())
    });
    let server = HttpServer::start(
        "127.0.0.1:0".parse().unwrap(),
        metrics,
        HttpLimits::default(),
    )
    .unwrap();
    let addr = server.local_addr();

    // The headers, and HEAD without a body.
    let response = get(addr, "GET");
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(head.contains("cache-control: no-store"), "{head}");
    assert!(
        head.contains(&format!(
            "content-security-policy: {}",
            PAGE_CSP.to_ascii_lowercase()
        )),
        "{head}"
    );
    assert!(body.starts_with("<!DOCTYPE html>"));
    let response = get(addr, "HEAD");
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "", "HEAD has no body");

    let url = format!("http://{addr}/");
    let dom = dump_dom(&url);
    assert!(dom.contains("ivo://vtp.test/browser"), "{dom}");
    assert!(dom.contains("<svg id=\"skymap\""), "{dom}");
    let marks: Vec<&str> = dom.split("<circle class=\"event\"").skip(1).collect();
    assert_eq!(marks.len(), 4, "one mark per positioned event:\n{dom}");
    for ivorn in [
        "ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_4",
        "ivo://nasa.gsfc.gcn/Fermi#GBM_2",
        "ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_1",
    ] {
        assert!(
            dom.contains(&format!("data-ivorn=\"{ivorn}\"")),
            "{ivorn}:\n{dom}"
        );
        assert!(dom.contains(&format!(">{ivorn}</a>")), "{ivorn} listed");
    }
    assert!(dom.contains("href=\"/api/events/3\""), "{dom}");
    assert!(dom.contains("ivo://vtp.test/page#no-position"));
    // The hostile IVORN is text, never markup: no script element, the title untouched.
    assert!(!dom.contains("<script"), "{dom}");
    assert!(
        dom.contains("&lt;script&gt;document.title='owned'&lt;/script&gt;"),
        "{dom}"
    );
    assert!(
        dom.contains("<title>vtp broker ivo://vtp.test/browser</title>"),
        "{dom}"
    );

    let dir = TempDir::new("page-shot");
    let png = screenshot(&url, &dir.path().join("page.png"));
    assert_eq!(png_size(&png), Some((1280, 1600)));
}
