#!/usr/bin/env python3
"""Counts the cost of uslub's fast paths from the disassembly (tcmalloc's fast_path golden).

For each entry point it follows the straight-line path from the function's entry, assuming
every conditional branch falls through (the fast path is laid out that way with
USLUB_LIKELY) and following unconditional jumps inside the function, until the first `ret`
or a jump out of the function (a tail call, counted as a call).  It reports instructions,
conditional branches, loads/stores (memory operands), locked instructions and calls on that
path, for kmem_cache_alloc/free and the drop-in malloc/free.

usage: fastpath_cost.py OBJECT_OR_LIB [--golden FILE] [--check]
  --check: fail if a fast path has a locked instruction or a call (or tail call), or if its
           instruction count differs from the golden file's by more than 2.
"""
import re
import subprocess
import sys

ENTRIES = ["kmem_cache_alloc", "kmem_cache_free", "malloc", "free"]
TOLERANCE = 2  # instructions


def disasm(path, fn):
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", f"--disassemble={fn}", path],
                         capture_output=True, text=True, check=True).stdout
    insns = []
    for line in out.splitlines():
        m = re.match(r"\s*([0-9a-f]+):\s+([a-z].*)$", line)
        if m:
            insns.append((int(m.group(1), 16), m.group(2).strip()))
    return insns


def straight_path(insns):
    by_addr = {a: i for i, (a, _) in enumerate(insns)}
    i, seen, path = 0, set(), []
    while i < len(insns) and i not in seen:
        seen.add(i)
        addr, text = insns[i]
        path.append(text)
        op = text.split()[0]
        if op.startswith("ret"):
            break
        if op == "jmp":
            m = re.match(r"jmp\s+([0-9a-f]+)", text)
            if m and int(m.group(1), 16) in by_addr:
                i = by_addr[int(m.group(1), 16)]
                continue
            path.append("call (tail jump) " + text)  # a tail call: counted as a call
            break
        i += 1
    return path


def count(path):
    c = {"instructions": 0, "branches": 0, "memory": 0, "locked": 0, "calls": 0}
    for t in path:
        if t.startswith("call (tail jump)"):
            c["calls"] += 1
            continue
        c["instructions"] += 1
        op = t.split()[0]
        if op.startswith("j") and op != "jmp":
            c["branches"] += 1
        if "(" in t and not op.startswith("lea") and not op.startswith("nop"):
            c["memory"] += 1
        if op == "lock" or t.startswith("lock") or op.startswith("xchg"):
            c["locked"] += 1
        if op.startswith("call"):
            c["calls"] += 1
    return c


def main():
    path = sys.argv[1]
    golden = None
    if "--golden" in sys.argv:
        golden = sys.argv[sys.argv.index("--golden") + 1]
    rows = {}
    for fn in ENTRIES:
        rows[fn] = count(straight_path(disasm(path, fn)))
    lines = ["| entry | instructions | cond. branches | memory operands | locked | calls |",
             "| --- | --- | --- | --- | --- | --- |"]
    for fn, c in rows.items():
        lines.append(f"| {fn} | {c['instructions']} | {c['branches']} | {c['memory']} | "
                     f"{c['locked']} | {c['calls']} |")
    print("\n".join(lines))
    ok = True
    if "--check" in sys.argv:
        for fn, c in rows.items():
            if c["locked"] or c["calls"]:
                print(f"FAIL: {fn} fast path has {c['locked']} locked instructions and "
                      f"{c['calls']} calls or tail calls (must be 0)")
                ok = False
        if golden:
            want = {}
            for line in open(golden):
                m = re.match(r"\|\s*(\w+)\s*\|\s*(\d+)\s*\|", line)
                if m and m.group(1) in rows:
                    want[m.group(1)] = int(m.group(2))
            for fn, n in want.items():
                have = rows[fn]["instructions"]
                if abs(have - n) > TOLERANCE:
                    print(f"FAIL: {fn}: {have} instructions, golden {n}: update {golden} "
                          "in the commit that changes the fast path")
                    ok = False
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
