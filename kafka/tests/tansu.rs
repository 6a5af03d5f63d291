//! vtp-kafka against a real broker (tansu 0.6.0) and an independent client (kafka-python
//! 3.0.12). Each test starts its own broker on a loopback port.
//!
//! Setup (the tests fail, naming the script, when it was not run):
//! `bash conformance/peers/setup_tansu.sh` (tansu) and `bash conformance/peers/setup.sh`
//! (the venv with kafka-python).
#![allow(clippy::unwrap_used, reason = "tests")]

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use vtp_kafka::{
    Config, Consumer, Item, Oversize, Producer, ResponseError, StartFrom, murmur2, to_positive,
};
use vtp_testkit::kafka::{Tansu, peer_command};

/// The bound on every wait for records.
const DEADLINE: Duration = Duration::from_secs(30);

/// One record for kafka_produce.py.
struct Out<'a> {
    topic: &'a str,
    partition: Option<i32>,
    key: Option<&'a [u8]>,
    value: &'a [u8],
    compression: &'a str,
}

/// Produces with kafka-python; returns (topic, partition, offset) per record, in order.
fn kafka_python_produce(broker: &Tansu, records: &[Out<'_>]) -> Vec<(String, i32, i64)> {
    let mut input = String::new();
    for r in records {
        let line = serde_json::json!({
            "topic": r.topic,
            "partition": r.partition,
            "key": r.key.map(|k| B64.encode(k)),
            "value": B64.encode(r.value),
            "compression": r.compression,
        });
        input.push_str(&line.to_string());
        input.push('\n');
    }
    let mut cmd = peer_command("kafka_produce.py", &[&broker.addr()]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    vtp_testkit::kafka::produced(&out, records.len())
}

fn config(broker: &Tansu) -> Config {
    let mut c = Config::new(&broker.addr(), "vtp-kafka-test").unwrap();
    c.request_timeout = Duration::from_secs(10);
    c
}

/// Polls until `n` items arrived (failing after [`DEADLINE`]), then once more to check that
/// nothing else comes.
fn poll_exactly(consumer: &mut Consumer, n: usize) -> Vec<Item> {
    let deadline = Instant::now() + DEADLINE;
    let mut items = Vec::new();
    while items.len() < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} items after {DEADLINE:?}: {items:?}",
            items.len()
        );
        items.extend(consumer.poll(Duration::from_millis(200)).unwrap());
    }
    let more = consumer.poll(Duration::from_millis(200)).unwrap();
    assert!(more.is_empty(), "more than {n} items: {more:?}");
    items
}

fn record_key(item: &Item) -> (String, i32, i64) {
    let (t, p, o) = item.position();
    (t.to_owned(), p, o)
}

#[test]
fn consumer_receives_every_record_kafka_python_produced_compressed_or_not() {
    let broker = Tansu::start();
    let topic = "gcn.classic.voevent.TEST";
    broker.create_topic(topic, 2);
    let values: Vec<Vec<u8>> = (0..40)
        .map(|i| format!("<voe:VOEvent ivorn=\"ivo://test#{i}\"/>").into_bytes())
        .collect();
    let codecs = ["none", "zstd", "gzip", "lz4"];
    let out: Vec<Out<'_>> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Out {
            topic,
            partition: Some((i % 2) as i32),
            key: None,
            value: v,
            compression: codecs[i / 10],
        })
        .collect();
    let produced = kafka_python_produce(&broker, &out);

    let mut consumer = Consumer::new(config(&broker), "g1", &[topic], StartFrom::Earliest).unwrap();
    let items = poll_exactly(&mut consumer, 40);
    let mut got: BTreeMap<(String, i32, i64), Bytes> = BTreeMap::new();
    for item in &items {
        let Item::Record(r) = item else {
            panic!("{item:?}")
        };
        got.insert(record_key(item), r.value.clone());
    }
    let want: BTreeMap<(String, i32, i64), Bytes> = produced
        .into_iter()
        .zip(&values)
        .map(|(k, v)| (k, Bytes::from(v.clone())))
        .collect();
    assert_eq!(got, want);
    // Offsets per partition are 0..20 in order.
    for p in 0..2 {
        let offsets: Vec<i64> = items
            .iter()
            .map(|i| i.position())
            .filter(|(_, part, _)| *part == p)
            .map(|(_, _, o)| o)
            .collect();
        assert_eq!(offsets, (0..20).collect::<Vec<_>>(), "partition {p}");
    }
    let lag = consumer.lag();
    assert_eq!(lag.len(), 2);
    for l in lag {
        assert_eq!(
            (l.position, l.high_watermark, l.lag()),
            (Some(20), Some(20), Some(0))
        );
    }
}

#[test]
fn committed_offsets_resume_a_new_consumer_and_kafka_python_sees_them() {
    let broker = Tansu::start();
    let topic = "gcn.classic.voevent.RESUME";
    broker.create_topic(topic, 2);
    let first: Vec<Vec<u8>> = (0..10).map(|i| format!("first {i}").into_bytes()).collect();
    let out: Vec<Out<'_>> = first
        .iter()
        .enumerate()
        .map(|(i, v)| Out {
            topic,
            partition: Some((i % 2) as i32),
            key: None,
            value: v,
            compression: "zstd",
        })
        .collect();
    kafka_python_produce(&broker, &out);

    let mut consumer =
        Consumer::new(config(&broker), "bridge", &[topic], StartFrom::Earliest).unwrap();
    let items = poll_exactly(&mut consumer, 10);
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for item in &items {
        let (_, p, o) = item.position();
        next.insert(p, o + 1);
    }
    let commits: Vec<(&str, i32, i64)> = next.iter().map(|(&p, &o)| (topic, p, o)).collect();
    consumer.commit(&commits).unwrap();
    assert_eq!(
        consumer
            .committed(&[(topic, 0), (topic, 1)])
            .unwrap()
            .into_iter()
            .map(|(_, p, o)| (p, o))
            .collect::<Vec<_>>(),
        vec![(0, Some(5)), (1, Some(5))]
    );
    drop(consumer);

    // kafka-python, as a member of the same group, sees the committed offsets.
    let seen = vtp_testkit::kafka::kafka_consume(&broker, &["committed", "bridge", topic]);
    assert!(seen.contains(&format!("committed {topic} 0 5")), "{seen}");
    assert!(seen.contains(&format!("committed {topic} 1 5")), "{seen}");

    // A new consumer of the group starts after the committed offsets.
    let second: Vec<Vec<u8>> = (0..4).map(|i| format!("second {i}").into_bytes()).collect();
    let out: Vec<Out<'_>> = second
        .iter()
        .enumerate()
        .map(|(i, v)| Out {
            topic,
            partition: Some((i % 2) as i32),
            key: None,
            value: v,
            compression: "gzip",
        })
        .collect();
    kafka_python_produce(&broker, &out);
    let mut resumed =
        Consumer::new(config(&broker), "bridge", &[topic], StartFrom::Earliest).unwrap();
    let items = poll_exactly(&mut resumed, 4);
    let mut values: Vec<String> = items
        .iter()
        .map(|i| match i {
            Item::Record(r) => String::from_utf8(r.value.to_vec()).unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    values.sort();
    assert_eq!(values, ["second 0", "second 1", "second 2", "second 3"]);
    for item in &items {
        assert!(item.position().2 >= 5, "{item:?}");
    }

    // Another group, starting from the latest offset, sees nothing old.
    let mut latest = Consumer::new(config(&broker), "other", &[topic], StartFrom::Latest).unwrap();
    assert!(latest.poll(Duration::from_millis(200)).unwrap().is_empty());
}

#[test]
fn producer_records_reach_kafka_python_byte_exact() {
    let broker = Tansu::start();
    let topic = "vtp.out";
    broker.create_topic(topic, 3);
    let mut producer = Producer::new(config(&broker)).unwrap();
    let mut sent: BTreeMap<u64, (Vec<u8>, Vec<u8>)> = BTreeMap::new();
    for i in 0..60u32 {
        // Binary keys and values: every byte value occurs.
        let key: Vec<u8> = i
            .to_be_bytes()
            .iter()
            .chain(&[0xff, 0x00])
            .copied()
            .collect();
        let value: Vec<u8> = (0..=255u8)
            .cycle()
            .skip(i as usize)
            .take(300 + i as usize)
            .collect();
        let id = producer
            .send(
                topic,
                Some(Bytes::from(key.clone())),
                Bytes::from(value.clone()),
            )
            .unwrap();
        sent.insert(id, (key, value));
    }
    let deadline = Instant::now() + DEADLINE;
    let mut deliveries = Vec::new();
    while deliveries.len() < sent.len() {
        assert!(Instant::now() < deadline, "{} deliveries", deliveries.len());
        deliveries.extend(producer.flush(Duration::from_secs(5)).unwrap());
    }
    assert_eq!(producer.pending(), 0);
    let mut at: BTreeMap<(i32, i64), u64> = BTreeMap::new();
    for d in &deliveries {
        let offset = d.result.unwrap_or_else(|e| panic!("{d:?}: {e}"));
        let (key, _) = &sent[&d.id];
        // The Java client's partitioner: positive murmur2 of the key, modulo partitions.
        assert_eq!(d.partition as u32, to_positive(murmur2(key)) % 3, "{d:?}");
        assert!(
            at.insert((d.partition, offset), d.id).is_none(),
            "offset twice: {d:?}"
        );
    }

    let out = vtp_testkit::kafka::kafka_consume(&broker, &["consume", topic, "60", "20"]);
    assert!(out.contains("done 60"), "{out}");
    let mut n = 0;
    for line in out.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let p = v["partition"].as_i64().unwrap() as i32;
        let o = v["offset"].as_i64().unwrap();
        let id = at[&(p, o)];
        let (key, value) = &sent[&id];
        assert_eq!(B64.decode(v["key"].as_str().unwrap()).unwrap(), *key);
        assert_eq!(B64.decode(v["value"].as_str().unwrap()).unwrap(), *value);
        n += 1;
    }
    assert_eq!(n, 60);
}

#[test]
fn a_zstd_producer_batch_is_read_back_by_our_consumer() {
    let broker = Tansu::start();
    let topic = "vtp.zstd";
    broker.create_topic(topic, 1);
    let mut producer = Producer::new(config(&broker)).unwrap();
    producer.set_compression(vtp_kafka::Compression::Zstd);
    for i in 0..5 {
        producer
            .send(topic, None, Bytes::from(format!("z{i}")))
            .unwrap();
    }
    let d = producer.flush(DEADLINE).unwrap();
    assert_eq!(d.len(), 5);
    assert!(d.iter().all(|d| d.result.is_ok()), "{d:?}");
    let mut consumer = Consumer::new(config(&broker), "z", &[topic], StartFrom::Earliest).unwrap();
    let items = poll_exactly(&mut consumer, 5);
    let values: Vec<Bytes> = items
        .into_iter()
        .map(|i| match i {
            Item::Record(r) => r.value,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        values,
        (0..5)
            .map(|i| Bytes::from(format!("z{i}")))
            .collect::<Vec<_>>()
    );
}

/// A committed offset in the middle of a batch (the node commits what is durable, record by
/// record) resumes at that record. tansu 0.6.0 answers a fetch from the middle of a batch
/// with the batches that begin after it only; the consumer finds the batch that holds the
/// position by looking back, instead of taking the next batch and losing the rest of this one.
#[test]
fn a_commit_in_the_middle_of_a_batch_resumes_at_the_next_record_of_that_batch() {
    let broker = Tansu::start();
    let topic = "vtp.mid";
    broker.create_topic(topic, 1);
    let mut producer = Producer::new(config(&broker)).unwrap();
    let mut produce = |range: std::ops::Range<i64>| {
        for i in range.clone() {
            producer
                .send(topic, None, Bytes::from(format!("m{i}")))
                .unwrap();
        }
        let d = producer.flush(DEADLINE).unwrap();
        let offsets: Vec<i64> = d.iter().map(|d| d.result.unwrap()).collect();
        assert_eq!(offsets, range.collect::<Vec<_>>(), "{d:?}");
    };
    produce(0..10); // one batch: 0..=9
    produce(10..15); // one batch: 10..=14
    let mut first = Consumer::new(config(&broker), "mid", &[topic], StartFrom::Earliest).unwrap();
    assert_eq!(poll_exactly(&mut first, 15).len(), 15);
    first.commit(&[(topic, 0, 4)]).unwrap();
    drop(first);

    let mut resumed = Consumer::new(config(&broker), "mid", &[topic], StartFrom::Earliest).unwrap();
    let offsets: Vec<i64> = poll_exactly(&mut resumed, 11)
        .iter()
        .map(|i| i.position().2)
        .collect();
    assert_eq!(offsets, (4..15).collect::<Vec<_>>());
}

#[test]
fn a_glob_subscription_takes_matching_topics_only_and_finds_new_ones() {
    let broker = Tansu::start();
    for t in [
        "gcn.classic.voevent.A",
        "gcn.classic.voevent.B",
        "gcn.classic.text.A",
    ] {
        broker.create_topic(t, 1);
    }
    let out: Vec<Out<'_>> = [
        "gcn.classic.voevent.A",
        "gcn.classic.voevent.B",
        "gcn.classic.text.A",
    ]
    .iter()
    .map(|t| Out {
        topic: t,
        partition: None,
        key: None,
        value: t.as_bytes(),
        compression: "none",
    })
    .collect();
    kafka_python_produce(&broker, &out);

    let mut consumer = Consumer::new(
        config(&broker),
        "glob",
        &["gcn.classic.voevent.*", "gcn.classic.voevent.MISSING"],
        StartFrom::Earliest,
    )
    .unwrap();
    consumer.set_refresh_every(Duration::from_millis(100));
    let items = poll_exactly(&mut consumer, 2);
    let mut topics: Vec<String> = items.iter().map(|i| i.position().0.to_owned()).collect();
    topics.sort();
    assert_eq!(topics, ["gcn.classic.voevent.A", "gcn.classic.voevent.B"]);
    // The exact name that does not exist is a topic error; the others go on.
    assert_eq!(
        consumer.topic_errors().get("gcn.classic.voevent.MISSING"),
        Some(&ResponseError::UnknownTopicOrPartition)
    );

    // A topic created later is found by the periodic re-check.
    broker.create_topic("gcn.classic.voevent.C", 1);
    kafka_python_produce(
        &broker,
        &[Out {
            topic: "gcn.classic.voevent.C",
            partition: None,
            key: None,
            value: b"c",
            compression: "none",
        }],
    );
    let items = poll_exactly(&mut consumer, 1);
    assert_eq!(items[0].position().0, "gcn.classic.voevent.C");
}

#[test]
fn an_oversize_record_is_reported_and_the_others_delivered() {
    let broker = Tansu::start();
    let topic = "gcn.classic.voevent.BIG";
    broker.create_topic(topic, 1);
    let big = vec![b'x'; 5000];
    let out = [
        Out {
            topic,
            partition: Some(0),
            key: None,
            value: b"<small/>",
            compression: "none",
        },
        Out {
            topic,
            partition: Some(0),
            key: None,
            value: &big,
            compression: "none",
        },
        Out {
            topic,
            partition: Some(0),
            key: None,
            value: b"not a VOEvent at all",
            compression: "none",
        },
    ];
    kafka_python_produce(&broker, &out);
    let mut cfg = config(&broker);
    cfg.bounds.record_value_max = 1000;
    let mut consumer = Consumer::new(cfg, "big", &[topic], StartFrom::Earliest).unwrap();
    let items = poll_exactly(&mut consumer, 3);
    assert!(matches!(&items[0], Item::Record(r) if &r.value[..] == b"<small/>"));
    assert_eq!(
        items[1],
        Item::Oversize(Oversize {
            topic: topic.into(),
            partition: 0,
            offset: 1,
            size: 5000
        })
    );
    assert!(matches!(&items[2], Item::Record(r) if r.offset == 2));
}

#[test]
fn a_broker_that_is_down_is_a_retryable_error() {
    let port = vtp_testkit::kafka::free_port();
    let mut cfg = Config::new(&format!("127.0.0.1:{port}"), "t").unwrap();
    cfg.connect_timeout = Duration::from_secs(2);
    let mut consumer = Consumer::new(cfg.clone(), "g", &["t"], StartFrom::Earliest).unwrap();
    let err = consumer.poll(Duration::from_millis(100)).unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains(&port.to_string()), "{err}");
    let mut producer = Producer::new(cfg).unwrap();
    producer.send("t", None, Bytes::from_static(b"v")).unwrap();
    let err = producer.flush(Duration::from_secs(2)).unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(producer.pending(), 1, "the record stays queued");
}
