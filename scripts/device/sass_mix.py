#!/usr/bin/env python3
"""The instruction mix of a kernel from Nsight Compute's source page as SASS with executed counts
(`ncu -i REPORT --page source --csv --print-source sass`, which scripts/device/profile_kernel.sh writes with
PROFILE_SOURCE=1): executed warp instructions by opcode, the hottest address ranges, and, given --per N (for
example active warps x tiles per warp), every count divided by N. --lines K lists the K rows that executed
the most instructions, with their text: for the page printed as CUDA source (`--print-source cuda`, from
code built with -lineinfo), the hottest source lines. --stalls K: where the warps wait, from the page's warp
stall samples: the share of each stall reason over the kernel, and the K instructions that drew the most
samples with their main reasons (long_sb: a global load's result; short_sb: shared memory; wait: a fixed
latency; barrier: __syncthreads). A page of several kernels (PROFILE_LAUNCHES > 1) is reported kernel by
kernel, each once; the hot ranges carry their share of the stall samples and their most executed opcodes.

  python3 scripts/device/sass_mix.py ncu_sass_bf16_2_text_32_32768_auto_128.csv --per 131072
  python3 scripts/device/sass_mix.py ncu_cuda_bf16_2_text_32_32768_auto_128.csv --per 131072 --lines 40
"""
import argparse
import collections
import csv
import sys


def kernel_blocks(rows, path):
    """[(kernel name, its rows from its column header on)], one per distinct kernel: the page names each profiled
    kernel in a "Kernel Name" row before its own header and rows, and may print a kernel's page more than once
    (ncu 2026.x printed each twice, 2026-11-29: counted twice before). A page without such rows is one block."""
    starts = [i for i, r in enumerate(rows) if r and r[0] == "Kernel Name"]
    if not starts:
        return [("", rows)]
    blocks, seen = [], set()
    for k, i in enumerate(starts):
        name = rows[i][1] if len(rows[i]) > 1 else f"kernel {k}"
        if name in seen:
            continue
        seen.add(name)
        blocks.append((name, rows[i + 1:starts[k + 1] if k + 1 < len(starts) else len(rows)]))
    return blocks


def parse(rows, path):
    """(instructions: [(opcode, executed, text)], stall samples by reason per instruction) of one kernel's rows."""
    header = next((i for i, r in enumerate(rows) if "Source" in r and "Instructions Executed" in r), None)
    if header is None:
        sys.exit(f"sass_mix: {path} has no 'Source' and 'Instructions Executed' columns "
                 "(expected ncu --page source --csv --print-source sass)")
    ix = {h: i for i, h in enumerate(rows[header])}
    lines, stalls = [], []
    reasons = [h for h in rows[header] if h.startswith("stall_") and "Not Issued" not in h]
    for r in rows[header + 1:]:
        if len(r) < len(ix):
            continue
        src = r[ix["Source"]].strip()
        try:  # rows that are no instruction (a repeated header, a file's name in the CUDA view) are skipped
            n = int(float((r[ix["Instructions Executed"]] or "0").replace(",", "")))
        except ValueError:
            continue
        words = src.split()
        op = words[1] if words and words[0].startswith("@") and len(words) > 1 else (words[0] if words else "")
        lines.append((op.split(".")[0], n, src))
        st = {}
        for h in reasons:
            try:
                v = float(r[ix[h]] or 0)
            except ValueError:
                v = 0.0
            if v > 0:
                st[h[len("stall_"):]] = v
        stalls.append(st)
    return lines, stalls


def report(a, name, lines, stalls):
    total = sum(n for _, n, _ in lines)
    if total == 0:
        sys.exit(f"sass_mix: {a.csv}{' (' + name + ')' if name else ''} counts no executed instructions")
    ops = collections.Counter()
    for op, n, _ in lines:
        ops[op] += n
    if name:
        print(f"== {name}")
    print(f"{a.csv}: {total:,} warp instructions, {total / a.per:,.1f} per unit (--per {a.per:g})")
    for op, n in ops.most_common(a.top):
        print(f"  {op:10} {n / a.per:10.1f}  {100.0 * n / total:5.1f}%")
    samples = sum(sum(st.values()) for st in stalls)
    print(f"hot ranges ({a.window} SASS lines each, at least 1% of the instructions or 2% of the stall samples;"
          " their three most executed opcodes):")
    for s in range(0, len(lines), a.window):
        n = sum(c for _, c, _ in lines[s:s + a.window])
        w = sum(sum(st.values()) for st in stalls[s:s + a.window])
        if n >= 0.01 * total or (samples > 0 and w >= 0.02 * samples):
            top = collections.Counter()
            for op, c, _ in lines[s:s + a.window]:
                top[op] += c
            stall = f"  stalls {100.0 * w / samples:5.1f}%" if samples > 0 else ""
            print(f"  lines {s:5}-{s + a.window:5}  {n / a.per:10.1f}  {100.0 * n / total:5.1f}%{stall}  "
                  f"{' '.join(op for op, _ in top.most_common(3))}")
    if a.lines > 0:
        print(f"the {a.lines} rows that executed the most:")
        for i, (_, n, src) in sorted(enumerate(lines), key=lambda x: -x[1][1])[:a.lines]:
            print(f"  row {i:5}  {n / a.per:10.1f}  {100.0 * n / total:5.1f}%  {src[:100]}")
    if a.stalls > 0:
        by_reason = collections.Counter()
        for st in stalls:
            by_reason.update(st)
        if samples == 0:
            sys.exit(f"sass_mix: {a.csv} has no warp stall samples (profile with the SourceCounters section)")
        print(f"warp stall samples: {samples:,.0f}; by reason: " +
              ", ".join(f"{k} {100.0 * v / samples:.1f}%" for k, v in by_reason.most_common(8)))
        print(f"the {a.stalls} rows drawing the most samples:")
        order = sorted(range(len(lines)), key=lambda i: -sum(stalls[i].values()))[:a.stalls]
        for i in order:
            st = stalls[i]
            main_reasons = ", ".join(f"{k} {v:.0f}" for k, v in sorted(st.items(), key=lambda kv: -kv[1])[:2])
            print(f"  row {i:5}  {100.0 * sum(st.values()) / samples:5.1f}%  {lines[i][2][:60]:60}  ({main_reasons})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv", help="ncu source page (SASS) as CSV")
    ap.add_argument("--per", type=float, default=1.0, help="divide counts by this (e.g. warps x tiles)")
    ap.add_argument("--top", type=int, default=25, help="opcodes to list")
    ap.add_argument("--window", type=int, default=100, help="SASS lines per hot range")
    ap.add_argument("--lines", type=int, default=0, help="list the rows that executed the most instructions")
    ap.add_argument("--stalls", type=int, default=0, help="stall reasons, and the rows drawing the most samples")
    a = ap.parse_args()
    try:
        rows = list(csv.reader(open(a.csv, newline="")))
    except OSError as e:
        sys.exit(f"sass_mix: cannot read {a.csv}: {e.strerror}")
    for name, block in kernel_blocks(rows, a.csv):
        lines, stalls = parse(block, a.csv)
        report(a, name, lines, stalls)


if __name__ == "__main__":
    main()
