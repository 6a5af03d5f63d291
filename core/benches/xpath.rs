//! What XPath filters cost: compiling (typical and the worst the limits admit), building an
//! event's tree, evaluating each filter of the differential corpus on each of its packets, and
//! events per second through a real node fanning out to 100 filtered subscribers. Run with
//! `cargo bench -p vtp-core --bench xpath` (release). Prints numbers; asserts nothing about
//! time.

// A benchmark reads the clock: that is its job. The sans-IO clock ban is for the core itself.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use vtp_core::filter::{FilterEngine, FilterId, XPathEngine};
use vtp_core::message::{self, Message};
use vtp_core::{Action, Config, ListenerRole, Node, Peer};

const EXPECTED: &str = include_str!("../tests/data/xpath/expected.tsv");
const LOCAL: &str = "ivo://example.org/broker";

/// The 10 distinct filters of the fan-out run: what GCN, Gaia and LVK subscribers send.
const TEN: [&str; 10] = [
    r#"//Param[@name="Packet_Type" and @value=61]"#,
    r#"//Who[AuthorIVORN="ivo://nasa.gsfc.tan/gcn"]"#,
    r#"/*[local-name()="VOEvent" and @role!="test"]"#,
    r#"//Param[@name="SC_Lat" and @value>600]"#,
    r#"//Why[@importance > 0.9]"#,
    r#"//Param[@name="alert_name" and starts-with(@value, "Gaia")]"#,
    r#"contains(//How/Description, "Swift")"#,
    r#"//Param[@name="Burst_Inten" and @value >= 1000]"#,
    r#"count(//Param) > 10"#,
    r#"//Group[@name="Solution_Status"]/Param[@name="GRB_Identified" and @value="true"]"#,
];

fn main() {
    let (packets, filters) = corpus();
    println!(
        "corpus: {} filters x {} packets (core/tests/data/xpath)\n",
        filters.len(),
        packets.len()
    );
    compile_times(&filters);
    let per_pair = evaluation_times(&packets, &filters);
    fan_out(&packets);
    println!("\nsummary: median per (event, filter) {per_pair:.1} µs (target <= 25 µs)");
}

fn corpus() -> (Vec<(String, Vec<u8>)>, Vec<String>) {
    let mut lines = EXPECTED.lines();
    let header = lines.next().expect("header");
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
    let packets = header
        .split('\t')
        .skip(1)
        .map(|name| {
            let path = if name == "gcn_swift_bat.xml" {
                format!("{dir}/{name}")
            } else {
                format!("{dir}/xpath/packets/{name}")
            };
            (name.to_owned(), std::fs::read(&path).expect("packet"))
        })
        .collect();
    let filters = lines
        .filter(|l| !l.ends_with('E'))
        .map(|l| l.split('\t').next().expect("filter").replace("\\\\", "\\"))
        .collect();
    (packets, filters)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Compile times: every corpus filter, then the worst shapes the default limits admit.
fn compile_times(filters: &[String]) {
    let first = Instant::now();
    let mut engine = XPathEngine::default();
    let _ = engine.compile("true()");
    println!(
        "compile: first in the process {:.0} µs",
        micros(first.elapsed())
    );
    let mut slowest = (0.0, "");
    let mut times: Vec<f64> = filters
        .iter()
        .map(|f| {
            let t = Instant::now();
            let id = engine.compile(f).expect("corpus filter compiles");
            let us = micros(t.elapsed());
            engine.release(id);
            if us > slowest.0 {
                slowest = (us, f);
            }
            us
        })
        .collect();
    println!(
        "compile: corpus median {:.0} µs, max {:.0} µs ({})",
        median(&mut times),
        slowest.0,
        slowest.1
    );
    // The largest instance of each shape that the front-end admits.
    let largest = |shape: &dyn Fn(usize) -> String| {
        let mut n = 1;
        while engine.check(&shape(n + 1)).is_ok() {
            n += 1;
        }
        shape(n)
    };
    let worst: Vec<(&str, String)> = vec![
        (
            "nested parentheses",
            largest(&|n| format!("{}1{}", "(".repeat(n), ")".repeat(n))),
        ),
        (
            "nested not()",
            largest(&|n| format!("{}true(){}", "not(".repeat(n), ")".repeat(n))),
        ),
        (
            "nested predicates",
            largest(&|n| format!("//a{}", "[b".repeat(n) + &"]".repeat(n))),
        ),
        (
            "or-chain of comparisons",
            largest(&|n| {
                (0..n)
                    .map(|i| format!("@v={i}"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            }),
        ),
        (
            "and-chain of node-set comparisons",
            largest(&|n| {
                (0..n)
                    .map(|i| format!("//P[@n='{i}']/@v > {i}"))
                    .collect::<Vec<_>>()
                    .join(" and ")
            }),
        ),
        (
            "number-to-string conversions",
            largest(&|n| {
                (0..n)
                    .map(|i| format!("string(//p{i} * 2)"))
                    .collect::<Vec<_>>()
                    .join(" = ")
            }),
        ),
        ("sum of terms", largest(&|n| vec!["1"; n].join("+"))),
        (
            "nested function calls",
            largest(&|n| format!("{}'x'{}", "concat('a', ".repeat(n), ")".repeat(n))),
        ),
    ];
    for (what, expr) in &worst {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            match engine.compile(expr) {
                Ok(id) => engine.release(id),
                Err(e) => panic!("{what}: {e}"),
            }
            best = best.min(micros(t.elapsed()));
        }
        println!(
            "compile: worst case admitted, {what} ({} bytes): {best:.0} µs",
            expr.len()
        );
    }
}

/// Per packet: the tree build; per (packet, filter): the evaluation alone.
fn evaluation_times(packets: &[(String, Vec<u8>)], filters: &[String]) -> f64 {
    let mut engine = XPathEngine::default();
    let ids: Vec<FilterId> = filters
        .iter()
        .map(|f| engine.compile(f).expect("compiles"))
        .collect();
    let trivial = engine.compile("true()").expect("compiles");
    let mut out = Vec::new();
    let mut run = |engine: &mut XPathEngine, payload: &[u8], ids: &[FilterId], reps: usize| {
        let mut best = f64::MAX;
        for _ in 0..reps {
            out.clear();
            let t = Instant::now();
            engine.evaluate(payload, 0..payload.len(), ids, &mut out);
            best = best.min(micros(t.elapsed()));
            black_box(&out);
        }
        best
    };
    let mut pairs = Vec::new();
    let mut slowest: Vec<(f64, String, String)> = Vec::new();
    for (name, payload) in packets {
        let Ok(Message::VoEvent(_)) = message::parse(payload, &Default::default()) else {
            panic!("{name}: not a VOEvent");
        };
        let doc = run(&mut engine, payload, &[trivial], 30);
        let all = run(&mut engine, payload, &ids, 5);
        println!(
            "{name:24} {:6} B: tree {doc:6.0} µs; all {} filters in one call {all:7.0} µs \
             ({:.1} µs per filter, tree included)",
            payload.len(),
            ids.len(),
            all / ids.len() as f64
        );
        for (f, &id) in filters.iter().zip(&ids) {
            let t = run(&mut engine, payload, &[id], 7);
            let alone = (t - doc).max(0.0);
            pairs.push(alone);
            slowest.push((alone, name.clone(), f.clone()));
        }
    }
    let mut sorted = pairs.clone();
    let med = median(&mut sorted);
    let p90 = sorted[sorted.len() * 9 / 10];
    println!(
        "per (event, filter), tree excluded: median {med:.1} µs, p90 {p90:.1} µs, max {:.0} µs \
         over {} pairs",
        sorted[sorted.len() - 1],
        sorted.len()
    );
    slowest.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (t, p, f) in slowest.iter().take(5) {
        println!("  slow: {t:6.0} µs  {f}  on {p}");
    }
    let (gcn_name, gcn) = &packets[0];
    for f in [
        "//*[//*]",
        "//*[following::*]",
        "count(//*[count(//*) > 0])",
        "//*[. = //*]",
    ] {
        let id = engine.compile(f).expect("compiles");
        let t = run(&mut engine, gcn, &[id], 1);
        let est = engine.estimate(id, gcn).unwrap_or(f64::NAN);
        println!(
            "costly: {f:32} on {gcn_name}: estimate {est:10.0} units (budget {}), {t:7.0} µs",
            engine.limits().cost_max
        );
    }
    // Where the budget matters (large estimates), how many ns one estimated unit costs.
    let mut per_unit: Vec<(f64, f64, &str)> = Vec::new();
    for (_, payload) in packets {
        let doc = run(&mut engine, payload, &[trivial], 5);
        for (f, &id) in filters.iter().zip(&ids) {
            let t = (run(&mut engine, payload, &[id], 3) - doc).max(0.0);
            if let Some(est) = engine.estimate(id, payload).filter(|&e| e >= 10_000.0) {
                per_unit.push((t * 1000.0 / est, est, f));
            }
        }
    }
    per_unit.sort_by(|a, b| a.0.total_cmp(&b.0));
    if let Some(worst) = per_unit.last() {
        println!(
            "cost model, estimates >= 10k units: {} pairs, ns per unit median {:.2}, max {:.2} \
             ({} units: {}); budget {} units",
            per_unit.len(),
            per_unit[per_unit.len() / 2].0,
            worst.0,
            worst.1,
            worst.2,
            engine.limits().cost_max
        );
    }
    med
}

/// Events per second through a node: 100 subscribers, each holding one of 10 distinct filters.
fn fan_out(packets: &[(String, Vec<u8>)]) {
    let t0 = Instant::now();
    let mut now = t0;
    let mut config = Config::new(Some(LOCAL.into()));
    config.timing.test_event_interval = None;
    let mut node = Node::new(
        config,
        Box::new(XPathEngine::default()),
        7,
        now,
        Duration::from_secs(1_714_564_800),
    )
    .expect("config");
    let peer = Peer::Tcp((Ipv4Addr::LOCALHOST, 40000).into());
    let drain = |node: &mut Node| {
        let mut forwards = 0usize;
        while let Some(a) = node.poll_action() {
            if matches!(a, Action::Forward { .. }) {
                forwards += 1;
            }
        }
        while node.poll_event().is_some() {}
        forwards
    };
    for i in 0..100 {
        let conn = node
            .handle_accept(ListenerRole::Broadcast, peer, now)
            .expect("accepted");
        let filter = TEN[i % TEN.len()].replace('"', "&quot;");
        let reply = format!(
            "<trn:Transport xmlns:trn=\"http://www.telescope-networks.org/xml/Transport/v1.1\" \
             version=\"1.0\" role=\"authenticate\"><Origin>{LOCAL}</Origin>\
             <TimeStamp>2024-05-01T12:00:01Z</TimeStamp><Meta>\
             <Param name=\"xpath-filter\" value=\"{filter}\"/></Meta></trn:Transport>"
        );
        let frame = vtp_core::frame::encode(reply.as_bytes()).expect("fits");
        node.handle_input(conn, &frame, now);
        drain(&mut node);
    }
    assert_eq!(node.distinct_filters(), TEN.len());
    // GCN and Gaia notices, each made unique by its IVORN.
    let templates: Vec<String> = packets
        .iter()
        .filter(|(n, _)| n == "gcn_swift_bat.xml" || n == "gaia_alert.xml")
        .map(|(_, p)| String::from_utf8(p.clone()).expect("UTF-8"))
        .collect();
    let events = 2000;
    let frames: Vec<_> = (0..events)
        .map(|i| {
            let t = &templates[i % templates.len()];
            let xml = t.replacen("-729\"", &format!("-729-{i}\""), 1).replacen(
                "#Gaia24abc\"",
                &format!("#Gaia24abc{i}\""),
                1,
            );
            vtp_core::frame::encode(xml.as_bytes()).expect("fits")
        })
        .collect();
    let mut forwarded = 0;
    let start = Instant::now();
    for frame in &frames {
        now += Duration::from_millis(1);
        let a = node
            .handle_accept(ListenerRole::Receive, peer, now)
            .expect("accepted");
        node.handle_input(a, frame, now);
        forwarded += drain(&mut node);
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "\nfan-out through a Node: {events} events, 100 subscribers, 10 distinct filters: \
         {:.0} events/s ({:.0} µs per event), {forwarded} forwards (target >= 2000 events/s)",
        events as f64 / secs,
        secs * 1e6 / events as f64
    );
    assert!(forwarded > 0, "some events pass");
}
