#!/usr/bin/env python3
"""Run pygcn 1.1.3's real VTP client against a broker and save what it receives.

    pygcn_listen.py HOST PORT OUTDIR [--iamalive-timeout S] [--ivorn IVOID]
                    [--max-reconnect-timeout S] [--allow-remote]

Runs ``gcn.voeventclient.listen(host=HOST, port=PORT, handler=...)``. Every VOEvent that
pygcn accepts (and acks) is written byte-for-byte to OUTDIR/<n>.xml (n = 1, 2, ...;
written to OUTDIR/.<n>.xml.tmp, then renamed, so a file that exists is complete).

pygcn calls the handler as ``handler(payload, root)`` where ``payload`` is the exact
``bytes`` returned by its ``_recv_packet`` (the frame body without the 4-byte prefix), so
no patching is needed to get the raw bytes. pygcn sends its ack *before* calling the handler.

Log lines (stderr, one per line, ``<ISO time> <logger> <LEVEL> <message>``):
  gcn.listen INFO connected to HOST:PORT         <- TCP connected
  vtp.pygcn  INFO socket local=<ip>:<port> peer=<ip>:<port>
  vtp.pygcn  INFO frame n=<k> len=<bytes> root=<tag> role=<role>
  vtp.pygcn  INFO answered iamalive origin=<Origin> response=<ivorn>
  vtp.pygcn  INFO sent ack origin=<ivorn of event>
  vtp.pygcn  INFO saved <n>.xml len=<bytes> sha256=<hex> ivorn=<ivorn>
plus pygcn's own gcn.listen messages (e.g. "received transport message with unrecognized
role: authenticate", "timed out", "closed socket").

The host must be given explicitly, and must be a loopback address (or "localhost")
unless --allow-remote is passed: pygcn's defaults are public GCN servers.
SIGTERM/SIGINT end the process at once with exit code 0.
"""

import argparse
import hashlib
import ipaddress
import logging
import os
import re
import signal
import sys

try:
    import gcn.voeventclient as vc
except ImportError:  # pragma: no cover - message for people running the wrong python
    sys.exit("pygcn_listen.py: cannot import gcn.voeventclient; run it with the peers venv "
             "python (conformance/peers/setup.sh prints its path)")

log = logging.getLogger("vtp.pygcn")


def is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def next_index(outdir):
    """First n such that no OUTDIR/<m>.xml with m >= n exists (restarts never overwrite)."""
    highest = 0
    for name in os.listdir(outdir):
        m = re.fullmatch(r"([0-9]+)\.xml", name)
        if m:
            highest = max(highest, int(m.group(1)))
    return highest + 1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("outdir")
    ap.add_argument("--iamalive-timeout", type=float, default=150.0,
                    help="pygcn's socket timeout: seconds without data before it "
                         "drops the connection and reconnects (pygcn default 150)")
    ap.add_argument("--max-reconnect-timeout", type=int, default=1024,
                    help="cap of pygcn's reconnect back-off in seconds (pygcn default 1024)")
    ap.add_argument("--ivorn", default="ivo://python_voeventclient/anonymous",
                    help="identifier pygcn puts in <Response> of its acks and iamalives")
    ap.add_argument("--allow-remote", action="store_true",
                    help="permit a non-loopback HOST")
    args = ap.parse_args(argv)

    if ":" in args.host:
        ap.error("pygcn 1.1.3 opens AF_INET sockets only; give an IPv4 address")
    if not is_loopback(args.host) and not args.allow_remote:
        ap.error("refusing non-loopback host %r (pass --allow-remote to override)" % args.host)

    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.Formatter.default_msec_format = "%s.%03d"

    os.makedirs(args.outdir, exist_ok=True)
    counter = [next_index(args.outdir)]
    frames = [0]

    # Observe every frame pygcn reads (module global, looked up at call time by
    # _ingest_packet), without changing what it returns.
    orig_recv_packet = vc._recv_packet

    def recv_packet(sock):
        payload = orig_recv_packet(sock)
        frames[0] += 1
        tag = role = "?"
        try:
            root = vc.fromstring(payload)
            tag, role = root.tag, root.get("role")
        except Exception:  # pygcn itself will log and reconnect
            tag = "<unparsable>"
        log.info("frame n=%d len=%d root=%s role=%s", frames[0], len(payload), tag, role)
        return payload

    vc._recv_packet = recv_packet

    # Observe the replies pygcn builds (iamalive answers and acks).
    orig_form_response = vc._form_response

    def form_response(role, origin, response, timestamp):
        if role == "iamalive":
            log.info("answered iamalive origin=%s response=%s", origin, response)
        else:
            log.info("sent %s origin=%s", role, origin)
        return orig_form_response(role, origin, response, timestamp)

    vc._form_response = form_response

    # Report the local port of each connection: the broker logs it in
    # "New subscriber at IPv4Address(type='TCP', host='127.0.0.1', port=<local port>)".
    orig_open_socket = vc._open_socket

    def open_socket(*a, **kw):
        sock = orig_open_socket(*a, **kw)
        log.info("socket local=%s:%d peer=%s:%d", *(sock.getsockname() + sock.getpeername()))
        return sock

    vc._open_socket = open_socket

    def handler(payload, root):
        n = counter[0]
        counter[0] += 1
        final = os.path.join(args.outdir, "%d.xml" % n)
        tmp = os.path.join(args.outdir, ".%d.xml.tmp" % n)
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        log.info("saved %d.xml len=%d sha256=%s ivorn=%s", n, len(payload),
                 hashlib.sha256(payload).hexdigest(), root.get("ivorn"))

    def stop(signum, _frame):
        log.info("signal %d: exiting", signum)
        logging.shutdown()
        # os._exit: listen() wraps the handler in a bare except, which would swallow
        # SystemExit; files are renamed into place atomically, so nothing is half-written.
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    log.info("pygcn listen host=%s port=%d outdir=%s iamalive_timeout=%s",
             args.host, args.port, args.outdir, args.iamalive_timeout)
    vc.listen(host=args.host, port=args.port, ivorn=args.ivorn,
              iamalive_timeout=args.iamalive_timeout,
              max_reconnect_timeout=args.max_reconnect_timeout,
              handler=handler, log=logging.getLogger("gcn.listen"))
    return 0  # listen() never returns


if __name__ == "__main__":
    sys.exit(main())
