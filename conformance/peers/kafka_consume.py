"""Consume or inspect with kafka-python, the independent client of the vtp-kafka tests.

Usage:
  kafka_consume.py BOOTSTRAP consume TOPIC COUNT TIMEOUT_S
      Reads every partition of TOPIC from the beginning (manual assignment, no group) until
      COUNT records arrived or TIMEOUT_S passed. Prints one JSON line per record
      {"topic", "partition", "offset", "key" (base64 or null), "value" (base64)}, then
      "done N".
  kafka_consume.py BOOTSTRAP committed GROUP TOPIC
      Prints "committed TOPIC PARTITION OFFSET" (OFFSET "none" if nothing is committed) for
      every partition of TOPIC, as KafkaConsumer(group_id=GROUP).committed() sees it.
"""
import base64
import json
import sys
import time

from kafka import KafkaConsumer, TopicPartition


def b64(b):
    return None if b is None else base64.b64encode(b).decode()


def partitions(consumer, topic, timeout_s=15):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return sorted(parts)
        time.sleep(0.1)
    sys.exit(f"kafka_consume.py: topic {topic} has no partitions")


def consume(bootstrap, topic, count, timeout_s):
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                      auto_offset_reset="earliest")
    tps = [TopicPartition(topic, p) for p in partitions(c, topic)]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    n = 0
    deadline = time.monotonic() + timeout_s
    while n < count and time.monotonic() < deadline:
        for _tp, records in c.poll(timeout_ms=200).items():
            for r in records:
                print(json.dumps({"topic": r.topic, "partition": r.partition,
                                  "offset": r.offset, "key": b64(r.key),
                                  "value": b64(r.value)}), flush=True)
                n += 1
    c.close()
    print(f"done {n}", flush=True)


def committed(bootstrap, group, topic):
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    for p in partitions(c, topic):
        off = c.committed(TopicPartition(topic, p))
        print(f"committed {topic} {p} {'none' if off is None else off}", flush=True)
    c.close()
    print("done", flush=True)


def main():
    bootstrap, cmd = sys.argv[1], sys.argv[2]
    if cmd == "consume":
        consume(bootstrap, sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
    elif cmd == "committed":
        committed(bootstrap, sys.argv[3], sys.argv[4])
    else:
        sys.exit(f"kafka_consume.py: unknown command {cmd}")


if __name__ == "__main__":
    main()
