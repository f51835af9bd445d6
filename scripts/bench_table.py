#!/usr/bin/env python3
"""Markdown table of scripts/device/bench_mla.sh's JSON lines: decode step time (the median step, the
steady state; the mean over all timed steps beside it), tokens/s, the roofline floor and the ratio to it,
cache bytes. floor = (language-model weights read per step + the cache as allocated) / copy bandwidth;
both constants are arguments (defaults: Qwen2.5-VL-7B's 14.14 GB of bf16 LM weights without the
embedding table, the H200's 4.244 TB/s device-to-device copy rate measured in BENCHMARKS.md); runs whose
JSON carries bench's own `floor_ms` (measured weight bytes and copy rate) use that instead.

    python3 scripts/bench_table.py FILE.jsonl [FILE2.jsonl ...] [--weights-gb 14.14] [--copy-tbs 4.244]
"""
import argparse
import json
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--weights-gb", type=float, default=14.14)
    ap.add_argument("--copy-tbs", type=float, default=4.244)
    a = ap.parse_args()
    print("| context x batch | variant | decode | median ms/step | mean ms/step | tokens/s (median) | floor ms "
          "| median / floor | cache bytes/token | cache GB allocated | peak GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for path in a.files:
        for n, line in enumerate(open(path), 1):
            if not line.strip():
                continue
            j = json.loads(line)
            r = j.get("result")
            if r is None:
                print(f"| {j.get('context')} x {j.get('batch')} | {j['variant']} | {j.get('decode', '')} "
                      f"| failed: {j.get('error', '?')} | | | | | | | |")
                continue
            floor = r.get("floor_ms") or (a.weights_gb * 1e9 + r["kv_bytes_allocated"]) / (a.copy_tbs * 1e12) * 1e3
            med = r.get("decode_ms_per_step_median", r["decode_ms_per_step"])
            print(f"| {r['context'] // 1024}k x {r['batch']} | {j['variant']} | {r.get('decode_mode', '')} "
                  f"| {med:.2f} | {r['decode_ms_per_step']:.2f} | {1e3 * r['batch'] / med:,.0f} | {floor:.1f} "
                  f"| {med / floor:.1f}x | {r['kv_bytes_per_token']:,} | {r['kv_bytes_allocated'] / 1e9:.2f} "
                  f"| {r['peak_memory_bytes'] / 2**30:.1f} |")


if __name__ == "__main__":
    sys.exit(main())
