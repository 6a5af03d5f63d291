#!/usr/bin/env python3
"""``--cmd`` handler for a Comet 3.1.0 broker/subscriber: save the event's exact bytes.

Comet runs a ``--cmd`` executable with no arguments and the broker's environment, writes
the raw event bytes (the frame payload as received) to its stdin and closes it. This
script stores them as ``$VTP_SAVE_DIR/<n>.xml`` (n = 1, 2, ...): written to a temporary
file first and then hard-linked to the first free ``<n>.xml``, so a visible file is always
complete and concurrent invocations never overwrite each other.

Why not ``--save-event``: it decodes the bytes with the document's declared encoding and
re-encodes them with the process locale (text mode), and names files after the IVORN
(``ivo__example.org_surveyalert0001``, ``_`` appended on collision). ``--print-event``
logs a re-serialisation. Only ``--cmd`` sees the untouched bytes.
"""

import os
import sys
import tempfile


def main():
    outdir = os.environ.get("VTP_SAVE_DIR")
    if not outdir:
        print("comet_save_raw.py: VTP_SAVE_DIR is not set", file=sys.stderr)
        return 2
    os.makedirs(outdir, exist_ok=True)
    data = sys.stdin.buffer.read()
    fd, tmp = tempfile.mkstemp(prefix=".incoming-", suffix=".tmp", dir=outdir)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        n = 1
        while True:
            try:
                os.link(tmp, os.path.join(outdir, "%d.xml" % n))
                break
            except FileExistsError:
                n += 1
    finally:
        os.unlink(tmp)
    # Comet logs a command's output at DEBUG (-v): "External process said: ..."
    print("saved %d.xml len=%d" % (n, len(data)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
