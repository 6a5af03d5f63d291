#!/usr/bin/env python3
"""Drop-in replacement for the peers venv's ``twistd`` that can adjust Comet 3.1.0 knobs
which have no command-line option. Same arguments as twistd, e.g.

    VTP_COMET_INTERFACE=127.0.0.1 VTP_COMET_IAMALIVE_INTERVAL=2 \
      <venv>/bin/python comet_twistd.py -n --logfile=- --pidfile= comet --receive ...

Environment (each optional; unset = Comet's own behaviour):
  VTP_COMET_INTERFACE          address the --receive/--broadcast listeners bind to
                               (Comet 3.1.0 always binds 0.0.0.0)
  VTP_COMET_IAMALIVE_INTERVAL  broker iamalive tick, seconds (Comet: 60; class constant
                               VOEventBroadcasterFactory.IAMALIVE_INTERVAL)
  VTP_COMET_ALIVE_INTERVAL     subscriber silence timeout, seconds (Comet: 120;
                               VOEventSubscriber.ALIVE_INTERVAL)
  VTP_COMET_RECEIVER_TIMEOUT   receiver per-connection deadline, seconds (Comet: 20;
                               VOEventReceiver.TIMEOUT)

Each applied patch is reported on stderr as ``vtp-comet: <name> = <value>`` before
twistd starts. Everything else is the unmodified Comet/Twisted code path
(twisted.scripts.twistd.run, exactly what the venv's bin/twistd runs).
"""

import os
import sys


def _num(name):
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    return float(value) if "." in value else int(value)


def patch():
    iface = os.environ.get("VTP_COMET_INTERFACE")
    if iface:
        import comet.service.broker as broker
        tcp_server = broker.TCPServer

        def bound_tcp_server(port, factory, *args, **kwargs):
            kwargs.setdefault("interface", iface)
            return tcp_server(port, factory, *args, **kwargs)

        broker.TCPServer = bound_tcp_server
        print("vtp-comet: listen interface = %s" % iface, file=sys.stderr)

    value = _num("VTP_COMET_IAMALIVE_INTERVAL")
    if value is not None:
        from comet.protocol.broadcaster import VOEventBroadcasterFactory
        VOEventBroadcasterFactory.IAMALIVE_INTERVAL = value
        print("vtp-comet: IAMALIVE_INTERVAL = %s" % value, file=sys.stderr)

    value = _num("VTP_COMET_ALIVE_INTERVAL")
    if value is not None:
        from comet.protocol.subscriber import VOEventSubscriber
        VOEventSubscriber.ALIVE_INTERVAL = value
        print("vtp-comet: ALIVE_INTERVAL = %s" % value, file=sys.stderr)

    value = _num("VTP_COMET_RECEIVER_TIMEOUT")
    if value is not None:
        from comet.protocol.receiver import VOEventReceiver
        VOEventReceiver.TIMEOUT = value
        print("vtp-comet: receiver TIMEOUT = %s" % value, file=sys.stderr)


if __name__ == "__main__":
    patch()
    sys.argv[0] = "twistd"
    from twisted.scripts.twistd import run
    sys.exit(run())
