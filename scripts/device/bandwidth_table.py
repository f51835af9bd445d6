#!/usr/bin/env python3
"""The decode kernel's bandwidth rows (test_kernels' *Bandwidth* test, "[bandwidth] ..." lines) of several
runs side by side: one row per case (store, modality sets and pattern, batch, tokens, kernel layout, sizes),
the microseconds per call of each run and the last run's against the first's. The "-128" ("-128g")
that marks the instances built for the 7B sizes (and their grouped-rows twins) is dropped from the
kernel so that their rows meet the generic ones', and noted after the row, as are the plan's marks after the
kernel ("first": the image CTAs first; "segK": splits along K segments a sequence), so that settings that change
the plan still meet; a run's label is its log's name unless given as LABEL=FILE.

  python3 scripts/device/bandwidth_table.py generic=bw_0.log specialized=bw_1.log
"""
import argparse
import re
import sys


def rows(path):
    """{case key: microseconds per call} in the log's order, and the kernel names seen per key."""
    out, names = {}, {}
    for line in open(path).read().splitlines():
        if not line.startswith("[bandwidth] ") or not re.match(r"\[bandwidth\] (bf16|int4) ", line):
            continue
        t = line.split()[1:]
        # store n_mod [mods] b t splits kernel [>=N] shape MB us GB/s: the key is all but the numbers at the end
        # and the splits (which a kernel's instance does not change, but keep out of the key regardless)
        *head, _mb, us, _gbs = t
        kernel_at = 5 if head[1] == "1" else 6  # after the splits; two sets add the modality pattern
        if len(head) <= kernel_at or not head[kernel_at - 1].isdigit():
            sys.exit(f"bandwidth_table: {path}: not a bandwidth row (store n_mod [mods] b t splits kernel ...): {line}")
        kernel = head[kernel_at]
        after = head[kernel_at + 1:]
        plan = [x for x in after if x == "first" or re.fullmatch(r"seg\d+", x)]
        base = re.sub(r"-128g?$", "", kernel)
        key = tuple(head[:kernel_at - 1] + [base] + [x for x in after if x not in plan])
        out[key] = float(us)
        names.setdefault(key, []).append(" ".join([kernel[len(base):]] + plan).strip())
    return out, names


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("logs", nargs="+", help="LABEL=FILE or FILE: test_kernels' bandwidth output")
    a = ap.parse_args()
    runs = []
    for arg in a.logs:
        label, _, path = arg.rpartition("=")
        try:
            runs.append((label or path, *rows(path)))
        except OSError as e:
            sys.exit(f"bandwidth_table: cannot read {path}: {e.strerror}")
    keys = list(dict.fromkeys(k for _, r, _ in runs for k in r))
    width = max([len(" ".join(k)) for k in keys] + [4])
    print(f"{'case':{width}} " + " ".join(f"{lab[-14:]:>14}" for lab, _, _ in runs) + "  last/first")
    for k in keys:
        us = [r.get(k) for _, r, _ in runs]
        cells = " ".join(f"{u:14.1f}" if u is not None else f"{'-':>14}" for u in us)
        ratio = f"{us[-1] / us[0]:10.3f}" if us[0] and us[-1] else ""
        marks = [f"{lab}: {n}" for lab, _, nm in runs for n in nm.get(k, [])[:1] if n]
        print(f"{' '.join(k):{width}} {cells}  {ratio}" + ("  (" + ", ".join(marks) + ")" if marks else ""))


if __name__ == "__main__":
    main()
