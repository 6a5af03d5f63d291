#!/usr/bin/env python3
"""Generate expected.tsv: Comet's verdict for every (filter, packet) pair, computed by lxml.

Comet compiles each subscriber filter with `lxml.etree.XPath(expr)` (a syntax error drops the
filter) and evaluates it on the event's root element, parsed with
`XMLParser(resolve_entities=False)`; the event passes when Python's `bool()` of the result is
true (a non-empty node-set or string, a non-zero number, NaN included, a true boolean), and an
evaluation error counts as false. This script does exactly that.

Run with the peers venv (it pins lxml 6.1.3, Comet's engine), from any directory:

    python="$(bash conformance/peers/setup.sh | tail -n 1)/bin/python"
    "$python" core/tests/data/xpath/gen_expected.py > core/tests/data/xpath/expected.tsv

Inputs: filters.txt (one expression per line; '#' comment lines and blank lines skipped) and
the packets listed in PACKETS. Output (deterministic), tab-separated, with backslash escapes
(\\\\ \\t \\n \\r) in the filter column: a header row `filter` + packet names, then one row per
filter: the filter, then one verdict per packet: 1 (passes), 0 (does not pass, or evaluation
error), E (lxml refuses to compile the filter: XPathSyntaxError).
"""

import os
import sys

import lxml
from lxml import etree

HERE = os.path.dirname(os.path.abspath(__file__))

PACKETS = [
    "../gcn_swift_bat.xml",
    "packets/fermi_gbm_v11.xml",
    "packets/gaia_alert.xml",
    "packets/asassn_default_ns.xml",
    "packets/moa_no_namespace.xml",
    "packets/lvk_test_role.xml",
    "packets/broker_test_event.xml",
    "packets/ohp_latin1.xml",
]


def escape(s):
    return (
        s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


def main():
    if lxml.__version__ != "6.1.3":
        sys.exit(f"gen_expected.py: lxml 6.1.3 expected (Comet's pin), found {lxml.__version__}")
    roots = []
    for rel in PACKETS:
        with open(os.path.join(HERE, rel), "rb") as f:
            data = f.read()
        parser = etree.XMLParser(resolve_entities=False)
        roots.append(etree.fromstring(data, parser=parser))
    with open(os.path.join(HERE, "filters.txt"), encoding="utf-8") as f:
        filters = [line.rstrip("\n") for line in f]
    filters = [x for x in filters if x.strip() and not x.startswith("#")]

    out = sys.stdout
    out.write("filter\t" + "\t".join(os.path.basename(p) for p in PACKETS) + "\n")
    for expr in filters:
        try:
            xpath = etree.XPath(expr)
        except etree.XPathSyntaxError:
            out.write(escape(expr) + "\t" + "\t".join("E" for _ in roots) + "\n")
            continue
        verdicts = []
        for root in roots:
            try:
                verdicts.append("1" if bool(xpath(root)) else "0")
            except etree.XPathError:
                verdicts.append("0")
        out.write(escape(expr) + "\t" + "\t".join(verdicts) + "\n")


if __name__ == "__main__":
    main()
