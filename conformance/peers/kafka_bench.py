"""The Kafka side of .ci/bench-kafka.sh (kafka-python, the peers venv). Prints numbers.

    kafka_bench.py produce BOOTSTRAP TOPIC N EVENT TAG
        N distinct copies of the VOEvent file EVENT (IVORN + "-TAG-<9 digits>"), as fast as
        kafka-python sends them (acks=all); prints "produced N in S s (R records/s)".
    kafka_bench.py latency BOOTSTRAP TOPIC BROADCAST N RATE EVENT TAG
        Connects one raw VTP subscriber to BROADCAST (HOST:PORT), then produces N events at
        RATE per second, each sent at once (linger 0); the latency of an event is from its
        send call to its arrival at the subscriber. Prints p50/p99/max in ms.
    kafka_bench.py verify BOOTSTRAP TOPIC N TIMEOUT
        Reads TOPIC from its start: exit 0 if it holds N records with N distinct keys.
    kafka_bench.py forward PORT TARGET_PORT
        Forwards 127.0.0.1:PORT to 127.0.0.1:TARGET_PORT (the bench's start gate).
"""
import re
import socket
import statistics
import struct
import sys
import threading
import time


def events(path, tag, n, first=0):
    doc = open(path, "rb").read()
    m = re.search(rb'ivorn="([^"]*)"', doc)
    head, tail = doc[: m.end(1)], doc[m.end(1):]
    for i in range(first, first + n):
        yield i, head + b"-%s-%09d" % (tag.encode(), i) + tail


def producer(bootstrap, linger_ms):
    from kafka import KafkaProducer

    return KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=linger_ms,
        batch_size=1 << 20,
        max_request_size=8 << 20,
        request_timeout_ms=30000,
    )


def produce(bootstrap, topic, n, path, tag):
    p = producer(bootstrap, 20)
    t0 = time.monotonic()
    for _, value in events(path, tag, int(n)):
        p.send(topic, value=value)
    p.flush(timeout=300)
    s = time.monotonic() - t0
    p.close(timeout=5)
    print(f"produced {n} in {s:.2f} s ({int(n) / s:.0f} records/s)", flush=True)


def read_frames(sock, seen, n, done):
    buf = b""
    pat = re.compile(rb'ivorn="[^"]*-(\d{9})"')
    while len(seen) < n:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        buf += chunk
        while len(buf) >= 4:
            (size,) = struct.unpack(">I", buf[:4])
            if len(buf) < 4 + size:
                break
            frame, buf = buf[4 : 4 + size], buf[4 + size :]
            m = pat.search(frame[:2000])
            if m:
                seen.setdefault(int(m.group(1)), time.monotonic())
    done.set()


def latency(bootstrap, topic, broadcast, n, rate, path, tag):
    n, rate = int(n), float(rate)
    host, port = broadcast.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=120)
    sock.settimeout(120)
    seen, sent, done = {}, {}, threading.Event()
    threading.Thread(target=read_frames, args=(sock, seen, n, done), daemon=True).start()
    time.sleep(0.5)  # the broker has the subscriber before the first event
    p = producer(bootstrap, 0)
    t0 = time.monotonic()
    for i, value in events(path, tag, n):
        due = t0 + i / rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        sent[i] = time.monotonic()
        p.send(topic, value=value)
    p.flush(timeout=60)
    done.wait(60)
    lat = sorted((seen[i] - sent[i]) * 1000 for i in sent if i in seen)
    if len(lat) < n:
        print(f"latency: only {len(lat)} of {n} events arrived", flush=True)
        sys.exit(1)
    q = statistics.quantiles(lat, n=100)
    print(
        f"latency Kafka->subscriber over {n} events at {rate:g}/s: p50 {q[49]:.1f} ms, "
        f"p99 {q[98]:.1f} ms, max {lat[-1]:.1f} ms",
        flush=True,
    )


def verify(bootstrap, topic, n, timeout):
    """Reads TOPIC (partition 0) from its start; exits 1 unless N records with N distinct keys
    are there (tansu 0.6.0's end offset is the last batch's first offset, so records are read
    rather than the end offset asked)."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                      fetch_max_bytes=16 << 20, max_partition_fetch_bytes=16 << 20)
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    records, keys = 0, set()
    deadline = time.monotonic() + float(timeout)
    while records < int(n) and time.monotonic() < deadline:
        for batch in c.poll(timeout_ms=500).values():
            records += len(batch)
            keys.update(r.key for r in batch)
    print(f"{topic} holds {records} records, {len(keys)} distinct keys", flush=True)
    if records != int(n) or len(keys) != int(n):
        sys.exit(1)


def forward(port, target):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", int(port)))
    ls.listen(16)

    def pipe(a, b):
        try:
            while data := a.recv(1 << 16):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    while True:
        a, _ = ls.accept()
        b = socket.create_connection(("127.0.0.1", int(target)))
        threading.Thread(target=pipe, args=(a, b), daemon=True).start()
        threading.Thread(target=pipe, args=(b, a), daemon=True).start()


if __name__ == "__main__":
    {"produce": produce, "latency": latency, "verify": verify, "forward": forward}[sys.argv[1]](
        *sys.argv[2:]
    )
