#!/usr/bin/env python3
"""The static instruction mix of a kernel's loops, from `cuobjdump -sass` output (no profiler needed).

For every function whose mangled name contains FILTER (default: all): its instruction count, spill loads/stores, and
each loop (a backward branch: its target to the branch) with its length and its most frequent opcodes, largest
first. A loop's count is its static body, every path included (a loop unrolled by k holds k passes): it says what a
pass costs when the code in it runs, which the profiler's executed counts (profile_kernel.sh, sass_mix.py) then
confirm or not.

  python3 scripts/device/sass_loops.py build-device/wgmma.sass [--filter mla_decode_wgmma] [--loops 4] [--top 12]

wgmma.sh runs it on the wgmma kernel's SASS. Session 38 read the producer's loop this way (375 instructions a tile,
54 of them copies between register sets; a mask and an OR in two LOP3s), before changing it.
"""
import argparse
import collections
import re
import sys

INSN = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
TARGET = re.compile(r"\bBRA\s+(?:`\()?(?:\S+\s+)?0x([0-9a-f]+)")


def opcode(text):
    words = text.split()
    if words and words[0].startswith("@"):  # a predicate guard
        words = words[1:]
    return words[0] if words else "?"


def functions(path):
    name, body = None, []
    with open(path, errors="replace") as f:
        for line in f:
            if "Function :" in line:
                if name is not None:
                    yield name, body
                name, body = line.split("Function :", 1)[1].strip(), []
                continue
            m = INSN.search(line)
            if m and name is not None:
                body.append((int(m.group(1), 16), m.group(2)))
    if name is not None:
        yield name, body


def mix(insns, top):
    c = collections.Counter(opcode(t) for _, t in insns)
    return ", ".join(f"{op} {n}" for op, n in c.most_common(top))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sass", help="cuobjdump -sass output")
    ap.add_argument("--filter", default="", help="keep functions whose name contains this")
    ap.add_argument("--loops", type=int, default=4, help="loops a function to list, largest first")
    ap.add_argument("--top", type=int, default=12, help="opcodes a loop to list")
    args = ap.parse_args()
    found = 0
    for name, body in functions(args.sass):
        if args.filter not in name or not body:
            continue
        found += 1
        spills = sum(1 for _, t in body if opcode(t).startswith(("STL", "LDL")))
        print(f"{name}\n  {len(body)} instructions, {spills} local loads/stores (spills); {mix(body, args.top)}")
        index = {addr: i for i, (addr, _) in enumerate(body)}
        # ptxas puts slow paths (a barrier's retry, say) after the last EXIT, branching back into the body: those
        # are not loops
        last_exit = max((addr for addr, t in body if opcode(t) == "EXIT"), default=body[-1][0])
        loops = []
        for i, (addr, text) in enumerate(body):
            m = TARGET.search(text)
            if not m or addr > last_exit:
                continue
            target = int(m.group(1), 16)
            if target <= addr and target in index:
                loops.append(body[index[target]:i + 1])
        loops.sort(key=len, reverse=True)
        for loop in loops[:args.loops]:
            print(f"  loop 0x{loop[0][0]:x}-0x{loop[-1][0]:x}: {len(loop)} instructions; {mix(loop, args.top)}")
    if not found:
        sys.exit(f"sass_loops.py: no function in {args.sass} has '{args.filter}' in its name")


if __name__ == "__main__":
    main()
