#!/usr/bin/env python3
"""An independent VTP-over-TLS author or subscriber: Python's ``ssl`` module (OpenSSL), no
Twisted, no Comet, no vtp code. Used by cli/tests/interop_tls.rs to check vtp's TLS
listeners against a second TLS implementation.

    tls_peer.py author    HOST PORT FILE --ca CA [--cert C --key K] [options]
    tls_peer.py subscribe HOST PORT      --ca CA [--cert C --key K] [--frames N] [options]

    options: --server-hostname NAME (default HOST), --tls-max 1.2|1.3, --timeout S (10)

The server certificate is always verified against CA (only), host name included, as
``ssl.create_default_context`` does. ``author`` sends FILE as one VTP frame (4-byte
big-endian length, then the bytes) and reads one reply frame. ``subscribe`` reads N frames
(default 1) and answers nothing.

Lines on stdout (``tls_peer: ...``), one per step:
  connected local=<ip>:<port>
  handshake ok version=<TLSv1.x> cipher=<name>
  handshake failed: <OpenSSL's reason>
  frame n=<k> len=<bytes> root=<local name> role=<role>
  closed after <n> bytes: <reason>        (end of stream, a TLS alert, a reset)
  timed out after <n> bytes

Exit status: 0 the author got an ack / the subscriber read its N frames; 1 the author got a
nak; 2 usage; 3 the TLS handshake failed; 4 the connection closed before the reply or the N
frames; 5 timed out.

In TLS 1.3 the client's handshake completes before the server has checked the client's
certificate: a broker that refuses the certificate sends its alert afterwards, so the author
sees ``handshake ok`` and then ``closed after 0 bytes: ...alert...``. With ``--tls-max 1.2``
the refusal ends the handshake itself.
"""

import argparse
import socket
import ssl
import struct
import sys
import xml.etree.ElementTree as ET


def say(msg):
    print("tls_peer: " + msg, flush=True)


class Closed(Exception):
    """The stream ended (or failed) before a whole frame; ``args[0]`` is the reason."""


def recv_exact(sock, n, got):
    """Reads exactly n bytes; ``got[0]`` counts every byte read so far."""
    buf = b""
    while len(buf) < n:
        try:
            chunk = sock.recv(n - len(buf))
        except socket.timeout:
            raise
        except (ssl.SSLError, OSError) as e:
            raise Closed(str(e)) from e
        if not chunk:
            raise Closed("end of stream")
        got[0] += len(chunk)
        buf += chunk
    return buf


def read_frame(sock, n, got):
    (length,) = struct.unpack(">I", recv_exact(sock, 4, got))
    payload = recv_exact(sock, length, got)
    root, role = "?", "?"
    try:
        el = ET.fromstring(payload)
        root, role = el.tag.rsplit("}", 1)[-1], el.get("role")
    except ET.ParseError:
        root = "<unparsable>"
    say("frame n=%d len=%d root=%s role=%s" % (n, length, root, role))
    return root, role


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=["author", "subscribe"])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("file", nargs="?")
    ap.add_argument("--ca", required=True, help="the only CA certificates trusted (PEM)")
    ap.add_argument("--cert", help="client certificate (PEM)")
    ap.add_argument("--key", help="its private key (PEM)")
    ap.add_argument("--server-hostname", help="name the server certificate must carry")
    ap.add_argument("--tls-max", choices=["1.2", "1.3"], default="1.3")
    ap.add_argument("--frames", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=10.0)
    args = ap.parse_args(argv)
    if (args.mode == "author") != (args.file is not None):
        ap.error("author needs FILE; subscribe takes none")
    if (args.cert is None) != (args.key is None):
        ap.error("--cert and --key go together")

    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=args.ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = (ssl.TLSVersion.TLSv1_2 if args.tls_max == "1.2"
                           else ssl.TLSVersion.TLSv1_3)
    if args.cert:
        ctx.load_cert_chain(args.cert, args.key)

    raw = socket.create_connection((args.host, args.port), timeout=args.timeout)
    say("connected local=%s:%d" % raw.getsockname()[:2])
    got = [0]
    try:
        try:
            sock = ctx.wrap_socket(raw, server_hostname=args.server_hostname or args.host)
        except (ssl.SSLError, OSError) as e:
            say("handshake failed: %s" % e)
            return 3
        say("handshake ok version=%s cipher=%s" % (sock.version(), sock.cipher()[0]))
        if args.mode == "author":
            with open(args.file, "rb") as f:
                payload = f.read()
            try:
                sock.sendall(struct.pack(">I", len(payload)) + payload)
            except (ssl.SSLError, OSError) as e:
                raise Closed(str(e)) from e
            _, role = read_frame(sock, 1, got)
            return 0 if role == "ack" else 1
        for n in range(1, args.frames + 1):
            read_frame(sock, n, got)
        return 0
    except Closed as e:
        say("closed after %d bytes: %s" % (got[0], e.args[0]))
        return 4
    except socket.timeout:
        say("timed out after %d bytes" % got[0])
        return 5
    finally:
        raw.close()


if __name__ == "__main__":
    sys.exit(main())
