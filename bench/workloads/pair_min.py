#!/usr/bin/env python3
"""Interleaved wl_pair_min runs (pair_min.cpp): medians of N rounds of the fastest-batch
malloc+free pair, under each allocator by LD_PRELOAD.

usage: pair_min.py [--rounds N] [--build DIR] [--configs 64x1,64x2,...] NAME=lib.so[:VAR=v...] ...

NAME=uslub means DIR/src/libuslub.so; a path "glibc" means no preload.  Each round runs every
(size, threads, allocator) once in a fresh random order.  Prints a markdown table with the
ratio of the first allocator to the best of the allocators whose names do not start with it.
"""
import argparse
import os
import random
import re
import statistics
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

ap = argparse.ArgumentParser()
ap.add_argument("--rounds", type=int, default=5)
ap.add_argument("--build", default=os.path.join(ROOT, "build-rel"))
ap.add_argument("--configs", default="64x1,64x2,256x1,256x2")
ap.add_argument("allocs", nargs="+")
a = ap.parse_args()

prog = os.path.join(a.build, "bench", "workloads", "wl_pair_min")
allocs = {}
for spec in a.allocs:
    name, rest = spec.split("=", 1)
    parts = rest.split(":")
    lib = os.path.join(a.build, "src", "libuslub.so") if parts[0] == "uslub" else parts[0]
    env = dict(p.split("=", 1) for p in parts[1:])
    allocs[name] = (lib, env)
cfgs = [tuple(int(x) for x in c.split("x")) for c in a.configs.split(",")]

res = {}
for _ in range(a.rounds):
    jobs = [(c, n) for c in cfgs for n in allocs]
    random.shuffle(jobs)
    for (size, threads), name in jobs:
        lib, extra = allocs[name]
        env = dict(os.environ, **extra)
        if lib != "glibc":
            env["LD_PRELOAD"] = lib
        out = subprocess.run([prog, "--size", str(size), "--threads", str(threads)], env=env,
                             capture_output=True, text=True, check=True).stdout
        res.setdefault((size, threads, name), []).append(
            float(re.search(r"ns_per_pair=([0-9.]+)", out).group(1)))

names = list(allocs)
first = names[0]
peers = [n for n in names if not n.startswith(first)]
print(f"pair (fastest batch), ns per malloc+free, medians of {a.rounds} interleaved rounds; "
      f"load average {os.getloadavg()[0]:.1f} at the end")
print("| size, threads | " + " | ".join(names) + f" | {first} / best peer |")
print("| --- |" + " --- |" * (len(names) + 1))
for size, threads in cfgs:
    med = {n: statistics.median(res[(size, threads, n)]) for n in names}
    best = min(med[n] for n in peers) if peers else float("nan")
    print(f"| {size} B, {threads} | " + " | ".join(f"{med[n]:.2f}" for n in names) +
          f" | {med[first] / best:.2f}x |")
