#!/usr/bin/env python3
"""Two decode profiles side by side (profile_decode.sh's summaries, e.g. one setting of a switch and the other):
per kernel, its time over the profiled steps in each and the change, the kernels that grew most first; and the
totals. Kernels are matched by name; a kernel in one summary only (a launch the setting adds or removes, or one
below the other summary's top rows) shows "-" on the other side. Times are Nsight's sums over the profiled steps
(programmatic launches off, so that they do not overlap: VLM2MLA_PDL=0).

    python3 scripts/device/profile_diff.py off=$OUT/profile_mla_..._rows0.txt on=$OUT/profile_mla_..._rows1.txt
"""
import argparse
import re
import sys

ROW = re.compile(r"^\s*([0-9.]+) ms\s+([0-9]+)x\s+(.*)$")
TOTAL = re.compile(r"^total kernel time ([0-9.]+) ms over the decode steps, ([0-9]+) launches")


def read(path):
    """{kernel name: (ms, launches)} and (total ms, total launches) of one summary."""
    kernels, total = {}, None
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as e:
        sys.exit(f"profile_diff: cannot read {path}: {e.strerror}")
    for line in lines:
        m = TOTAL.match(line)
        if m:
            total = (float(m.group(1)), int(m.group(2)))
            continue
        m = ROW.match(line)
        if m and total is not None:
            name = m.group(3).strip()
            ms, n = kernels.get(name, (0.0, 0))
            kernels[name] = (ms + float(m.group(1)), n + int(m.group(2)))
    if total is None:
        sys.exit(f"profile_diff: {path} holds no 'total kernel time' line (not a profile_decode.sh summary?)")
    return kernels, total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("first", metavar="LABEL=FILE", help="the summary to compare against")
    ap.add_argument("second", metavar="LABEL=FILE", help="the other summary")
    ap.add_argument("--rows", type=int, default=20, help="kernels to print (default 20)")
    a = ap.parse_args()
    sides = []
    for arg in (a.first, a.second):
        label, sep, path = arg.partition("=")
        if not sep or not label or not path:
            sys.exit(f"profile_diff: '{arg}': expected LABEL=FILE")
        sides.append((label, *read(path)))
    (la, ka, ta), (lb, kb, tb) = sides
    names = set(ka) | set(kb)
    change = {n: kb.get(n, (0.0, 0))[0] - ka.get(n, (0.0, 0))[0] for n in names}
    w = 12
    print(f"{la:>{w}} {lb:>{w}} {'change':>9}  kernel (ms over the profiled steps, launches)")
    for n in sorted(names, key=lambda n: -abs(change[n]))[: a.rows]:
        cell = lambda k: f"{k[n][0]:.3f}/{k[n][1]}" if n in k else "-"
        print(f"{cell(ka):>{w}} {cell(kb):>{w}} {change[n]:+9.3f}  {n[:110]}")
    print(f"{ta[0]:>{w - 3}.2f} ms {tb[0]:>{w - 3}.2f} ms {tb[0] - ta[0]:+9.3f}  total ({ta[1]} -> {tb[1]} launches)")


if __name__ == "__main__":
    main()
