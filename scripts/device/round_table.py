#!/usr/bin/env python3
"""The tables round.sh prints from bench_mla.sh's JSON lines: per decode step (median ms, the floor, their
ratio, the kernel launches of a captured step, the decode kernels taken; with --against BASE.jsonl, the same
configuration's median in BASE and this run's over it, for bandwidth_ab.sh's side-by-side steps; a configuration
run several times is paired by occurrence: its n-th line here against its n-th in BASE, or BASE's last), or with
--largest per batch (median ms, ratio to the floor, tokens/s, against the first line's, peak memory). Both give
the steps' spread beside the median: the quartiles of the steps after the first two (a CUDA graph's warm-up and
capture), where steps at 32k took up to 1.5x the median while generate copied its history every step (until
86ec205; since, within ~3%): two settings whose medians differ by less than that spread are not told apart by
one run. A line without a result prints its error.

  python3 scripts/device/round_table.py round_bench_as_is.jsonl
  python3 scripts/device/round_table.py --largest round_largest.jsonl
  python3 scripts/device/round_table.py ab_bench_tree.jsonl --against ab_bench_baseline.jsonl
"""
import argparse
import json
import statistics
import sys


def quartiles(steps):
    """'q1-q3' of the steps after the first two, or '' with fewer than four of them."""
    s = steps[2:]
    if len(s) < 4:
        return ""
    q = statistics.quantiles(s, n=4)
    return f"{q[0]:.2f}-{q[2]:.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("jsonl", help="bench_mla.sh's output")
    ap.add_argument("--largest", action="store_true", help="tokens/s against the first line's, peak memory")
    ap.add_argument("--against", metavar="BASE", help="another run's JSON lines: its median per configuration")
    a = ap.parse_args()

    def read(path):
        try:
            return [json.loads(line) for line in open(path).read().splitlines() if line.strip()]
        except OSError as e:
            sys.exit(f"round_table: cannot read {path}: {e.strerror}")
        except json.JSONDecodeError as e:
            sys.exit(f"round_table: {path}: not JSON lines ({e})")

    def key(d):
        r = d.get("result") or {}
        return (d["variant"], d.get("decode"), r.get("context", d.get("context")), r.get("batch", d.get("batch")))

    lines = read(a.jsonl)
    base = None  # configuration -> BASE's medians in order, and how many of this run's lines have taken one
    if a.against:
        base = {}
        for d in read(a.against):
            if d.get("result"):
                base.setdefault(key(d), []).append(d["result"]["decode_ms_per_step_median"])
    taken = {}
    head = f"{'variant':14} {'context':>7} {'batch':>5} {'ms/step':>8}"
    if base is not None:
        head += f" {'base ms':>8} {'/base':>6}"
    print(head + (f" {'x floor':>7} {'tokens/s':>9} {'vs first':>8} {'peak GiB':>8} {'steps q1-q3':>13}" if a.largest
                  else f" {'floor':>7} {'x floor':>7} {'kernels':>7} {'steps q1-q3':>13}  decode kernels"))
    first = None
    for d in lines:
        r = d.get("result")
        if r is None:
            print(f"{d['variant']:14} {d.get('context', ''):>7} {d.get('batch', ''):>5}  error: {d.get('error', '')}")
            continue
        ms, floor = r["decode_ms_per_step_median"], r["floor_ms"]
        row = f"{d['variant']:14} {r['context']:>7} {r['batch']:>5} {ms:8.2f}"
        if base is not None:
            medians, n = base.get(key(d), []), taken.get(key(d), 0)
            taken[key(d)] = n + 1
            b = medians[min(n, len(medians) - 1)] if medians else None
            row += f" {b:8.2f} {ms / b:6.3f}" if b else f" {'-':>8} {'-':>6}"
        if a.largest:
            tps = r["batch"] * 1000.0 / ms
            first = first or tps
            print(f"{row} {ms / floor:6.2f}x {tps:9.0f} {tps / first:7.2f}x {r['peak_memory_bytes'] / 2**30:8.1f} "
                  f"{quartiles(r.get('decode_step_ms', [])):>13}")
        else:
            print(f"{row} {floor:7.2f} {ms / floor:6.2f}x {r.get('decode_step_kernels', -1):>7} "
                  f"{quartiles(r.get('decode_step_ms', [])):>13}  {','.join(r.get('decode_kernels', []))}")


if __name__ == "__main__":
    main()
