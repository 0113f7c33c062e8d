#!/usr/bin/env python3
"""kmem_cache (uslub) next to the peers' malloc of the same size, interleaved, medians.

usage: bench/slab/run.py [--rounds N] [--quick] [--build DIR] [NAME=/path/lib.so ...]
"""
import os
import random
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from runlib import allocators  # noqa: E402

LABELS = {"pair-64-1t": "pair 64 B, 1 thread", "pair-64-2t": "pair 64 B, 2 threads",
          "pair-256-1t": "pair 256 B, 1 thread", "pair-256-2t": "pair 256 B, 2 threads",
          "bulk16-64": "bulk 16 x 64 B (per object)", "bulk64-64": "bulk 64 x 64 B (per object)",
          "prodcons-64": "producer/consumer 64 B"}


def main():
    args = sys.argv[1:]
    if "-h" in args or "--help" in args:
        print(__doc__)
        return
    rounds, quick, build, extra = 5, False, os.path.join(ROOT, "build-release"), []
    i = 0
    while i < len(args):
        if args[i] == "--rounds":
            rounds = int(args[i + 1]); i += 1
        elif args[i] == "--quick":
            quick = True
        elif args[i] == "--build":
            build = args[i + 1]; i += 1
        else:
            extra.append(args[i])
        i += 1
    exe = os.path.join(build, "bench", "bench_slab_slab_bench")
    variants = [("uslub kmem_cache", None, [])] + [(f"{n} malloc", so, ["--malloc"]) for n, so in allocators(build, extra)]
    res = {}
    for r in range(rounds):
        random.shuffle(variants)
        for name, so, flags in variants:
            env = dict(os.environ)
            if so:
                env["LD_PRELOAD"] = so
            out = subprocess.run([exe] + flags + (["--quick"] if quick else []), env=env,
                                 capture_output=True, text=True).stdout
            for line in out.splitlines():
                k, v = line.split()
                res.setdefault((k, name), []).append(float(v))
        print(f"round {r + 1}/{rounds}", file=sys.stderr)
    names = ["uslub kmem_cache"] + sorted(n for n, _, _ in variants if n != "uslub kmem_cache")
    print(f"Command: `python3 bench/slab/run.py {' '.join(args)}` ({rounds} rounds, ns per operation, medians)\n")
    print("| measure | " + " | ".join(names) + " | kmem_cache / mimalloc |")
    print("|" + " --- |" * (len(names) + 2))
    for k, label in LABELS.items():
        med = {n: statistics.median(res[(k, n)]) for n in names if (k, n) in res}
        ref = med.get("mimalloc malloc")
        ratio = f"{med['uslub kmem_cache'] / ref:.2f}" if ref else "n/a"
        print(f"| {label} | " + " | ".join(f"{med.get(n, float('nan')):.2f}" for n in names) + f" | {ratio} |")


if __name__ == "__main__":
    main()
