#!/usr/bin/env python3
"""End-to-end check of the real peers on 127.0.0.1 (no vtp code involved).

    python3 conformance/peers/e2e_check.py [--venv DIR] [--mode plain|wrapper] [--keep]

plain   (default) ``twistd comet`` exactly as installed, on ports picked beforehand.
wrapper ``comet_twistd.py`` with --receive-port=0/--broadcast-port=0 (ports read back from
        the log), listeners bound to 127.0.0.1, iamalive every 2 s.

Starts a Comet broker, a Comet subscriber and the pygcn listener, submits docs/protocol.md §2.1's
minimal packet with comet-sendvo, checks that both subscribers got the exact bytes, checks
comet-sendvo's nak output (duplicate, invalid IVOID), then stops everything (SIGTERM, then
SIGKILL after a bounded wait) and checks that no process is left. Every wait is bounded.
Ends with "N passed, M failed"; exit code 0 only if nothing failed.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

EVENT = b"""<?xml version="1.0" encoding="UTF-8"?>
<voe:VOEvent xmlns:voe="http://www.ivoa.net/xml/VOEvent/v2.0"
             ivorn="ivo://example.org/survey#alert-0001" role="test" version="2.0">
  <Who><AuthorIVORN>ivo://example.org/survey</AuthorIVORN></Who>
</voe:VOEvent>
"""
BAD_IVOID = EVENT.replace(b"ivo://example.org/survey#alert-0001", b"ivo://a2#x")

RESULTS = []


def check(name, ok, detail=""):
    RESULTS.append(ok)
    print("%s %s%s" % ("PASS" if ok else "FAIL", name, (": " + detail) if detail else ""),
          flush=True)
    return ok


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Proc:
    def __init__(self, name, argv, logpath, env=None, cwd=None):
        self.name, self.logpath = name, logpath
        self.log = open(logpath, "wb")
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=env, cwd=cwd,
                                  start_new_session=True)

    def text(self):
        with open(self.logpath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_for(self, pattern, timeout, count=1):
        """Wait until `pattern` (regex) has matched `count` times; return the last match."""
        deadline = time.monotonic() + timeout
        while True:
            found = list(re.finditer(pattern, self.text()))
            if len(found) >= count:
                return found[count - 1]
            if self.p.poll() is not None or time.monotonic() > deadline:
                return None
            time.sleep(0.05)

    def stop(self, timeout=10):
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(5)
        else:
            # the leader is gone; make sure nothing else of its group survives
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()
        return self.p.returncode


def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def wait_file(path, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return True
        time.sleep(0.05)
    return False


def sendvo(venv, port, path, timeout=30):
    t0 = time.monotonic()
    r = subprocess.run([os.path.join(venv, "bin", "comet-sendvo"), "-h", "127.0.0.1",
                        "-p", str(port), "-f", path], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout)
    return r.returncode, r.stdout.decode("utf-8", "replace"), time.monotonic() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--venv", default=os.environ.get(
        "VTP_PEERS_VENV", os.path.join(REPO, "target", "peers-venv")))
    ap.add_argument("--mode", choices=("plain", "wrapper"), default="plain")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()
    venv = os.path.abspath(args.venv)
    py = os.path.join(venv, "bin", "python")
    twistd = os.path.join(venv, "bin", "twistd")
    if not os.path.exists(twistd):
        sys.exit("no peers venv at %s: run conformance/peers/setup.sh" % venv)

    tmp = tempfile.mkdtemp(prefix="vtp-peers-e2e-")
    print("workdir", tmp, flush=True)
    event_path = os.path.join(tmp, "event.xml")
    with open(event_path, "wb") as f:
        f.write(EVENT)
    bad_path = os.path.join(tmp, "bad_ivoid.xml")
    with open(bad_path, "wb") as f:
        f.write(BAD_IVOID)

    procs = []
    try:
        # ---- broker
        common = ["-n", "--logfile=-", "--pidfile=", "comet"]
        broker_opts = ["--receive", "--broadcast",
                       "--local-ivo=ivo://vtp.test/broker",
                       "--eventdb=" + os.path.join(tmp, "broker-db"),
                       "--broadcast-test-interval=0",
                       "--author-whitelist=127.0.0.0/8",
                       "--subscriber-whitelist=127.0.0.0/8"]
        env = dict(os.environ)
        if args.mode == "plain":
            rport, bport = free_port(), free_port()
            argv = [twistd] + common + broker_opts + [
                "--receive-port=%d" % rport, "--broadcast-port=%d" % bport]
        else:
            env.update(VTP_COMET_INTERFACE="127.0.0.1", VTP_COMET_IAMALIVE_INTERVAL="2")
            argv = [py, os.path.join(HERE, "comet_twistd.py")] + common + broker_opts + [
                "--receive-port=0", "--broadcast-port=0"]
        print("broker:", " ".join(argv), flush=True)
        t0 = time.monotonic()
        broker = Proc("broker", argv, os.path.join(tmp, "broker.log"), env=env, cwd=tmp)
        procs.append(broker)
        m_r = broker.wait_for(r"VOEventReceiverFactory \(WhitelistingFactory\) starting on (\d+)", 30)
        m_b = broker.wait_for(r"VOEventBroadcasterFactory \(WhitelistingFactory\) starting on (\d+)", 30)
        if not check("broker ready", bool(m_r and m_b),
                     "%.2f s" % (time.monotonic() - t0)):
            print(broker.text())
            return
        rport, bport = int(m_r.group(1)), int(m_b.group(1))
        print("receive port %d, broadcast port %d" % (rport, bport), flush=True)
        listening = subprocess.run(["ss", "-Hltn"], stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL).stdout.decode() \
            if shutil.which("ss") else ""
        for line in listening.splitlines():
            if re.search(r":(%d|%d)\s" % (rport, bport), line):
                print("  listen:", " ".join(line.split()), flush=True)

        # ---- Comet subscriber (raw bytes via --cmd, plus --save-event for comparison)
        raw_dir = os.path.join(tmp, "comet-sub-raw")
        save_dir = os.path.join(tmp, "comet-sub-saved")
        sub_env = dict(os.environ, VTP_SAVE_DIR=raw_dir)
        sub_argv = [twistd, "-n", "--logfile=-", "--pidfile=", "comet", "-v",
                    "--remote=127.0.0.1:%d" % bport,
                    "--local-ivo=ivo://vtp.test/subscriber",
                    "--eventdb=" + os.path.join(tmp, "sub-db"),
                    "--filter=/*[local-name()='VOEvent']",
                    "--save-event", "--save-event-directory=" + save_dir,
                    "--cmd=" + os.path.join(HERE, "comet_save_raw.py")]
        print("subscriber:", " ".join(sub_argv), flush=True)
        t0 = time.monotonic()
        sub = Proc("comet-sub", sub_argv, os.path.join(tmp, "comet-sub.log"),
                   env=sub_env, cwd=tmp)
        procs.append(sub)

        # ---- pygcn listener
        pyg_dir = os.path.join(tmp, "pygcn")
        pyg_argv = [py, os.path.join(HERE, "pygcn_listen.py"), "127.0.0.1", str(bport),
                    pyg_dir, "--iamalive-timeout", "150"]
        print("pygcn:", " ".join(pyg_argv), flush=True)
        pyg = Proc("pygcn", pyg_argv, os.path.join(tmp, "pygcn.log"), cwd=tmp)
        procs.append(pyg)

        ok_sub = sub.wait_for(r"Authenticate received from IPv4Address\(type='TCP', "
                              r"host='127\.0\.0\.1', port=%d\)" % bport, 30)
        check("comet subscriber connected", bool(ok_sub), "%.2f s" % (time.monotonic() - t0))
        # pygcn logs "connected to" as soon as connect() returns; the broker has registered
        # the subscriber only once it has sent the authenticate message, so wait for that.
        ok_pyg = pyg.wait_for(r"frame n=1 len=\d+ root=\S+ role=authenticate", 30)
        check("pygcn connected (authenticate received)", bool(ok_pyg))
        check("broker saw 2 subscribers", bool(broker.wait_for(r"New subscriber at", 10, 2)))
        # the broker has installed the subscriber's filter once this line is logged
        check("broker installed filter",
              bool(broker.wait_for(r"Installing filter /\*\[local-name\(\)='VOEvent'\]", 10)))

        # ---- submit
        rc, out, dt = sendvo(venv, rport, event_path)
        check("comet-sendvo ack exit 0", rc == 0 and "Event was sent successfully" in out,
              "rc=%d %.2f s" % (rc, dt))
        print("  | " + out.strip().replace("\n", "\n  | "), flush=True)

        got_pyg = wait_file(os.path.join(pyg_dir, "1.xml"), 15)
        got_sub = wait_file(os.path.join(raw_dir, "1.xml"), 15)
        if check("pygcn saved 1.xml", got_pyg):
            with open(os.path.join(pyg_dir, "1.xml"), "rb") as f:
                check("pygcn bytes identical", f.read() == EVENT)
        if check("comet subscriber --cmd saved 1.xml", got_sub):
            with open(os.path.join(raw_dir, "1.xml"), "rb") as f:
                check("comet subscriber bytes identical", f.read() == EVENT)
        saved = os.path.join(save_dir, "ivo__example.org_surveyalert0001")
        if check("comet subscriber --save-event file", wait_file(saved, 15), saved):
            with open(saved, "rb") as f:
                check("--save-event bytes identical (UTF-8 locale)", f.read() == EVENT)

        # ---- naks
        rc, out, dt = sendvo(venv, rport, event_path)
        check("duplicate -> nak, exit 1",
              rc == 1 and "Previously seen by this broker" in out, "rc=%d %.2f s" % (rc, dt))
        print("  | " + out.strip().replace("\n", "\n  | "), flush=True)
        rc, out, dt = sendvo(venv, rport, bad_path)
        check("invalid IVOID -> nak, exit 1",
              rc == 1 and "Invalid IVOID: ivo://a2#x" in out, "rc=%d %.2f s" % (rc, dt))
        print("  | " + out.strip().replace("\n", "\n  | "), flush=True)
        rc, out, dt = sendvo(venv, free_port(), event_path)
        check("closed port -> exit 1", rc == 1 and "Connection failed" in out,
              "rc=%d %.2f s" % (rc, dt))
        print("  | " + out.strip().replace("\n", "\n  | "), flush=True)

        # ---- iamalive (only quick with the wrapper: Comet's own period is 60 s)
        if args.mode == "wrapper":
            check("pygcn answered iamalive",
                  bool(pyg.wait_for(r"answered iamalive origin=ivo://vtp\.test/broker", 10)))
            check("comet subscriber got iamalive",
                  bool(sub.wait_for(r"IAmAlive received from", 10)))
            # unanswered iamalives would make the broker drop a peer at the next tick
            pyg.wait_for(r"answered iamalive", 10, 3)
            check("broker kept both subscribers over 3 ticks",
                  "dropping connection" not in broker.text())

        time.sleep(0.5)
        check("only one event delivered to pygcn",
              sorted(n for n in os.listdir(pyg_dir) if n.endswith(".xml")) == ["1.xml"])
    finally:
        pgids = [p.p.pid for p in procs]
        for p in reversed(procs):
            rc = p.stop()
            print("stopped %s rc=%s" % (p.name, rc), flush=True)
        time.sleep(0.2)
        left = [g for g in pgids if group_alive(g)]
        check("no process left", not left, "left: %s" % left if left else "")
        for p in procs:
            print("---- %s (%s)" % (p.name, p.logpath))
            print(p.text())
        if args.keep:
            print("kept", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        passed = sum(RESULTS)
        print("%d passed, %d failed" % (passed, len(RESULTS) - passed), flush=True)
    return


if __name__ == "__main__":
    main()
    sys.exit(0 if RESULTS and all(RESULTS) else 1)
