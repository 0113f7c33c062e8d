#!/usr/bin/env python3
"""Where the resident memory of bench/workloads/large_blocks.py's sweep goes, uslub against glibc.

For each block size: the request, the kmalloc class (<= 32 KiB) or the pages an exact large
block takes (alloc_pages_exact, 32 KiB - 4 MiB) or the mapping of a huge block (> 4 MiB), and
the resident KiB per block under glibc and uslub (VmRSS with all blocks live minus VmRSS before
the first, divided by the count); then VmRSS before the first block, and how each mapping group
(a file's mappings, anonymous memory) differs between the two at that point.

Usage: python3 tools/large_breakdown.py [--build build-rel] [--count 100] [--sizes 32768,40000]
"""
import argparse
import os
import subprocess
import sys

SWEEP = [32 << 10, 40000, 100000, 256 << 10, 600000, (1 << 20) + 64, 3000000, 4 << 20]
PAGE = 4096
MAX_CACHE = 32768
MAX_ORDER_BYTES = 4 << 20


def kmalloc_classes():
    """The class table of src/kmalloc/kmalloc.cpp (build_classes)."""
    sizes = [8] + list(range(16, 129, 16))
    base = 128
    while base < MAX_CACHE:
        sizes += [base + base // 4 * q for q in range(1, 5)]
        base *= 2
    return sizes


def placement(size):
    if size <= MAX_CACHE:
        c = next(s for s in kmalloc_classes() if s >= size)
        return f"kmalloc-{c}", c
    if size <= MAX_ORDER_BYTES:
        nr = -(-size // PAGE)
        return f"exact, {nr} pages", nr * PAGE
    nr = -(-size // PAGE)
    return f"huge mmap, {nr} pages", nr * PAGE


def run(wl, size, count, preload):
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if preload:
        env["LD_PRELOAD"] = preload
    p = subprocess.run([wl, "--size", str(size), "--count", str(count), "--smaps", "1"],
                       env=env, capture_output=True, text=True, check=True)
    res = dict(kv.split("=", 1) for kv in p.stdout.split() if "=" in kv)
    groups = {"base": {}, "live": {}}
    for line in p.stderr.splitlines():
        if line.startswith("smaps "):
            _, when, kib, name = line.split(" ", 3)
            groups[when][os.path.basename(name)] = int(kib)
    return res, groups


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build-rel")
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--sizes", help="comma-separated block sizes (default: the sweep up to 4 MiB)")
    a = ap.parse_args()
    wl = os.path.join(a.build, "bench", "workloads", "wl_large_sweep")
    lib = os.path.join(a.build, "src", "libuslub.so")
    sizes = [int(s) for s in a.sizes.split(",")] if a.sizes else SWEEP
    print(f"Command: `python3 tools/large_breakdown.py {' '.join(sys.argv[1:])}`\n")
    print(f"### Per block ({a.count} blocks, each written in full)\n")
    print("| request (B) | uslub places it as | bytes taken | resident KiB / block, glibc | "
          "uslub | VmRSS before, glibc | uslub | VmRSS live, glibc | uslub | uslub / glibc |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    base_groups = None
    for s in sizes:
        g, gg = run(wl, s, a.count, None)
        u, ug = run(wl, s, a.count, lib)
        where, taken = placement(s)
        gb, ub = int(g["base_kib"]), int(u["base_kib"])
        gr, ur = int(g["rss_kib"]), int(u["rss_kib"])
        print(f"| {s} | {where} | {taken} | {(gr - gb) / a.count:.1f} | {(ur - ub) / a.count:.1f} "
              f"| {gb} | {ub} | {gr} | {ur} | {ur / gr:.2f}x |")
        if base_groups is None:
            base_groups = (gg["base"], ug["base"])
    gbase, ubase = base_groups
    print("\n### Before the first block: resident KiB by mapping group\n")
    print("| mapping | glibc | uslub | uslub - glibc |")
    print("| --- | --- | --- | --- |")
    names = sorted(set(gbase) | set(ubase), key=lambda n: -(ubase.get(n, 0) - gbase.get(n, 0)))
    for n in names:
        gv, uv = gbase.get(n, 0), ubase.get(n, 0)
        print(f"| {n} | {gv} | {uv} | {uv - gv:+d} |")
    print(f"| total | {sum(gbase.values())} | {sum(ubase.values())} | "
          f"{sum(ubase.values()) - sum(gbase.values()):+d} |")


if __name__ == "__main__":
    main()
