#!/usr/bin/env python3
"""Generate ivoid_cases.tsv: how Comet splits or rejects each test IVOID.

Comet's rule (docs/protocol.md section 4.1): match the regex below with Python's `re`
(Unicode `\\w`) from the start of the string, then reject a resource key containing `//`, `/../` or `/./`, or
ending in `/`. We additionally reject the one trailing newline that `$` lets through (our
decision, see core/src/ivoid.rs), recorded as the verdict `newline`.

Run from this directory:  python3 gen_ivoid_cases.py > ivoid_cases.tsv
Output is deterministic (fixed seed). Columns, tab-separated, with backslash escapes
(\\\\ \\t \\n \\r \\xHH):
    input  verdict  authority  resource_key  marker  local_id
verdict: ok | nomatch | badrsrc | newline. The split columns are filled for ok and badrsrc
(the groups Python's regex produced); resource_key is empty when the group did not match
(a matched key is never empty: it starts with `/`); marker is 1 when a `#` was consumed.
"""

import random
import re

IVOID_RE = re.compile(
    r"ivo://(?P<auth>[a-zA-Z0-9][\w\-.~*'()]{2,})(?P<rsrc>/[\w\-.~*'()/]*)?#?"
    r"(?P<local>[\w\-.~*'()+=/%!$&,;:@?]*)$"
)

BASES = [
    "ivo://ca.chimenet.frb/FRB-DETECTION-#2022-11-19-02:12:43.164293UTC+0000_ae104a28a784",
    "ivo://nasa.gsfc.gcn/SWIFT#BAT_GRB_Pos_532871-729",
    "ivo://nasa.gsfc.gcn/gcn/Fermi#GBM_Flt_Pos_2024-05-01",
    "ivo://auth/rsrc+x",
    "ivo://auth:8080/x",
    "ivo://a.b#x",
    "ivo://authreskey#local",
    "ivo://auth/rsrc",
    "ivo://auth/rsrc#",
    "ivo://auth",
    "ivo://auth#",
    "ivo://123/rsrc#local",
    "ivo://nasa.heasarc/rsrc#local",
    "ivo://n_1a.alph-0.02/rsrc#local",
    "ivo://auth/user/STScI_1/1a-7z.u#local",
    "ivo://auth~*'()/r~*'()._-/x#l",
    "ivo://auth/rsrc#-._~%!$&'()*+,;=:@/?",
    "ivo://auth/data/..#x",
    "ivo://auth/.#x",
    "ivo://a\u00e9\u4e2d/M\u00fcller#\u00df",
    "ivo://DAT%41",
    "ivo://a2/rsrc#local",
    "ivo://_temporary.id/rsrc#local",
    "ivo://DAT%41/rsrc#local",
    "ivo://de!uni-hd!physics#ari/rsrc#local",
    "ivo://auth/#local",
    "ivo://auth/data/#local",
    "ivo://auth/data//other#local",
    "ivo://auth/data/c/../d#local",
    "ivo://auth/data/./d#local",
    "ivo://auth/data!g-vo.org#local",
    "ivo://auth/user/M%fcller#local",
    "ivo://auth/rsrc/+x",
    "ivo://auth/rsrc#lo cal",
    "ivo://auth/rsrc#a#b",
    "ivo://auth/rsrc#[x]",
    "ivo://auth/rsrc#<x>",
    "ivo://auth/rsrc#\"x\"",
    "ivo://a.b/c#x\n",
    "ivo://auth/rsrc\n",
    "ivo://auth/data/\n",
    "IVO://auth/rsrc#x",
    "ivo:/auth/rsrc#x",
    "ivo://",
    "ivo://#localID",
    "ivo:///resourceKey#",
    "",
]

# Characters for mutations. Every non-ASCII one here is classified the same by Python's `\w`
# and by Rust's `char::is_alphanumeric() || '_'` (letters, digits, a number, a combining mark
# that is not Other_Alphabetic, an emoji, a no-break space).
ALPHABET = list(
    "abcXYZ019_-.~*'()/#+=%!$&,;:@?[]<> \"`{}|\\^\n\t"
) + list("aZ5_-./#//..+:=@é") * 4 + ["\u00e9", "\u00df", "\u4e2d", "\u0436", "\u0663", "\u2460", "\u0301", "\U0001f600", "\u00a0"]


def comet_split(s):
    """Return (verdict, auth, rsrc, marker, local) as Comet (plus our newline rule) sees s."""
    m = IVOID_RE.match(s)
    if m is None:
        return ("nomatch", "", "", "", "")
    if m.end() != len(s):
        # `$` matched before a final "\n": Comet accepts, we reject.
        return ("newline", "", "", "", "")
    auth, rsrc, local = m.group("auth"), m.group("rsrc"), m.group("local")
    before_local = m.end("rsrc") if rsrc is not None else m.end("auth")
    marker = "1" if m.start("local") > before_local else "0"
    rsrc = rsrc or ""
    bad = any(f in rsrc for f in ("//", "/../", "/./")) or rsrc.endswith("/")
    return ("badrsrc" if bad else "ok", auth, rsrc, marker, local)


def escape(s):
    out = []
    for c in s:
        if c == "\\":
            out.append("\\\\")
        elif c == "\t":
            out.append("\\t")
        elif c == "\n":
            out.append("\\n")
        elif c == "\r":
            out.append("\\r")
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append("\\x%02x" % ord(c))
        else:
            out.append(c)
    return "".join(out)


def mutate(rng, s):
    # Mostly leave the scheme alone: a broken `ivo://` is a boring rejection.
    lo = 6 if s.startswith("ivo://") and rng.random() < 0.9 else 0
    chars = list(s)
    for _ in range(rng.randint(1, 3)):
        op = rng.choice(("insert", "delete", "replace"))
        if op == "insert" or len(chars) <= lo:
            chars.insert(rng.randint(lo, len(chars)), rng.choice(ALPHABET))
        elif op == "delete":
            del chars[rng.randrange(lo, len(chars))]
        else:
            chars[rng.randrange(lo, len(chars))] = rng.choice(ALPHABET)
    return "".join(chars)


def main():
    rng = random.Random(20240501)
    cases = list(BASES)
    seen = set(cases)
    # Mutating accepted identifiers explores the boundary best; rejected ones less often.
    accepted = [b for b in BASES if comet_split(b)[0] == "ok"]
    while len(cases) < 300:
        base = rng.choice(accepted) if rng.random() < 0.75 else rng.choice(BASES)
        s = mutate(rng, base)
        if s not in seen:
            seen.add(s)
            cases.append(s)
    print("# Generated by gen_ivoid_cases.py; do not edit. Columns:")
    print("# input\tverdict\tauthority\tresource_key\tmarker\tlocal_id")
    for s in cases:
        verdict, auth, rsrc, marker, local = comet_split(s)
        print("\t".join(escape(f) for f in (s, verdict, auth, rsrc, marker, local)))


if __name__ == "__main__":
    main()
