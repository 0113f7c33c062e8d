#!/usr/bin/env python3
"""Large and big blocks under every malloc (issue: memory that fits the request).

1. Sweep: 100 blocks of each size from 32 KiB to 64 MiB, each written in full (wl_large_sweep):
   VmRSS with all of them live, and the time to allocate and write them.
2. Big blocks that come and go: 20 live blocks of 5-25 MiB, one replaced at random per step,
   written in full (wl_big_blocks): time (wall and CPU: user + system), page faults per new block, RSS live and 1 s after
   everything was freed.

Allocators are run interleaved, --rounds times; medians are printed as Markdown tables (and
written to --out).  Usage: python3 bench/workloads/large_blocks.py --build build-rel --rounds 5
[--only sweep|big] [--out bench/results/<file>.md] [NAME=path[:VAR=value...]]...
"""
import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from run import run_one  # noqa: E402
from runlib import allocators  # noqa: E402

SIZES = [32 << 10, 40000, 100000, 256 << 10, 600000, (1 << 20) + 64, 3000000, 4 << 20,
         (4 << 20) + 4096, 6 << 20, 16 << 20, 64 << 20]


def fmt_size(s):
    if s % (1 << 20) == 0:
        return f"{s >> 20} MiB"
    if s % 1024 == 0:
        return f"{s >> 10} KiB"
    return f"{s:,}".replace(",", " ")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build-rel")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", choices=["sweep", "big"])
    ap.add_argument("--out")
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("extra", nargs="*")
    a = ap.parse_args()
    allocs = allocators(a.build, a.extra)
    names = [n for n, _ in allocs]
    wl = os.path.join(a.build, "bench", "workloads")
    out = [f"Command: `python3 bench/workloads/large_blocks.py {' '.join(sys.argv[1:])}`", ""]

    if a.only != "big":
        rss = {(s, n): [] for s in SIZES for n in names}
        sec = {(s, n): [] for s in SIZES for n in names}
        for _ in range(a.rounds):
            for s in SIZES:
                for n, so in allocs:
                    f, err = run_one(os.path.join(wl, "wl_large_sweep"),
                                     ["--size", str(s), "--count", str(a.count)], so)
                    if err:
                        print(f"{n} {s}: {err}", file=sys.stderr)
                        continue
                    rss[(s, n)].append(int(f["rss_kib"]))
                    sec[(s, n)].append(float(f["seconds"]))
        out += [f"### Sweep: {a.count} blocks, each written in full; VmRSS (KiB, median of "
                f"{a.rounds}) and uslub / glibc", "",
                "| block size | " + " | ".join(names) + " | uslub / glibc | uslub / best |",
                "| --- |" + " --- |" * (len(names) + 2)]
        for s in SIZES:
            med = {n: statistics.median(rss[(s, n)]) if rss[(s, n)] else None for n in names}
            row = [fmt_size(s)] + [f"{med[n]:,.0f}".replace(",", " ") if med[n] else "-"
                                   for n in names]
            u, g = med.get("uslub"), med.get("glibc")
            best = min(v for k, v in med.items() if v and k != "uslub" and not k.startswith("uslub"))
            row += [f"{u / g:.2f}x" if u and g else "-", f"{u / best:.2f}x" if u else "-"]
            out.append("| " + " | ".join(row) + " |")
        out += ["", f"Time to allocate and write the {a.count} blocks (ms, median):", "",
                "| block size | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
        for s in SIZES:
            out.append("| " + fmt_size(s) + " | " + " | ".join(
                f"{statistics.median(sec[(s, n)]) * 1e3:.1f}" if sec[(s, n)] else "-"
                for n in names) + " |")
        out.append("")

    if a.only != "sweep":
        keys = ["seconds", "cpu_seconds", "faults_per_block", "rss_live_mb", "rss_freed_mb",
                "live_mb"]
        res = {n: {k: [] for k in keys} for n in names}
        for _ in range(a.rounds):
            for n, so in allocs:
                f, err = run_one(os.path.join(wl, "wl_big_blocks"), ["--steps", str(a.steps)], so)
                if err:
                    print(f"{n}: {err}", file=sys.stderr)
                    continue
                for k in keys:
                    res[n][k].append(float(f[k]))
        med = {n: {k: statistics.median(v) if v else None for k, v in res[n].items()} for n in names}
        best = min(med[n]["seconds"] for n in names
                   if med[n]["seconds"] and not n.startswith("uslub"))
        best_cpu = min(med[n]["cpu_seconds"] for n in names
                       if med[n]["cpu_seconds"] and not n.startswith("uslub"))
        out += [f"### Big blocks: 20 live blocks of 5-25 MiB, {a.steps} replacements written in "
                f"full (medians of {a.rounds})", "",
                "| allocator | time (s) | / best peer | CPU (s) | / best peer | faults per block | "
                "RSS live (MiB) | live bytes (MiB) | RSS 1 s after freeing all (MiB) |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for n in names:
            m = med[n]
            if m["seconds"] is None:
                continue
            out.append(f"| {n} | {m['seconds']:.3f} | {m['seconds'] / best:.2f}x | "
                       f"{m['cpu_seconds']:.3f} | {m['cpu_seconds'] / best_cpu:.2f}x | "
                       f"{m['faults_per_block']:.1f} | {m['rss_live_mb']:.0f} | {m['live_mb']:.0f} | "
                       f"{m['rss_freed_mb']:.1f} |")
        out.append("")
    text = "\n".join(out)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
