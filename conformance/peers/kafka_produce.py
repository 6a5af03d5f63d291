"""Produce records with kafka-python, the independent client of the vtp-kafka tests.

Usage: kafka_produce.py BOOTSTRAP < records.jsonl

Each input line is a JSON object: {"topic": str, "partition": int or null, "key": base64 or
null, "value": base64, "compression": "none"|"gzip"|"snappy"|"lz4"|"zstd"}. Records of one
compression type go through one KafkaProducer (acks=all, requests up to 32 MiB so a test can
send a record far over vtp's bounds), in input order. For each record one
line "produced TOPIC PARTITION OFFSET" is printed, then "done N" once all are acknowledged.
"""
import base64
import json
import sys

from kafka import KafkaProducer


def main():
    bootstrap = sys.argv[1]
    producers = {}
    futures = []
    for line in sys.stdin:
        if not line.strip():
            continue
        rec = json.loads(line)
        comp = rec.get("compression") or "none"
        if comp not in producers:
            producers[comp] = KafkaProducer(
                bootstrap_servers=bootstrap,
                acks="all",
                compression_type=None if comp == "none" else comp,
                linger_ms=50,
                max_request_size=32 << 20,
                request_timeout_ms=15000,
            )
        key = rec.get("key")
        futures.append(
            producers[comp].send(
                rec["topic"],
                value=base64.b64decode(rec["value"]),
                key=None if key is None else base64.b64decode(key),
                partition=rec.get("partition"),
            )
        )
    for p in producers.values():
        p.flush(timeout=30)
    for f in futures:
        md = f.get(timeout=30)
        print(f"produced {md.topic} {md.partition} {md.offset}", flush=True)
    for p in producers.values():
        p.close(timeout=5)
    print(f"done {len(futures)}", flush=True)


if __name__ == "__main__":
    main()
