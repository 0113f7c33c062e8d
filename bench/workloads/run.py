#!/usr/bin/env python3
"""Runs every workload under every allocator (LD_PRELOAD), interleaved, and prints a table.

usage: run.py [--rounds N] [--quick] [--build DIR] [--only a,b] [--allocs x,y] [--out STEM]
              [NAME=/path/lib.so[:VAR=value...] ...]

Allocators: glibc (no preload), jemalloc, tcmalloc, mimalloc (Debian packages, when installed),
uslub (DIR/src/libuslub.so), mimalloc3 and snmalloc when built by scripts/build-peers.sh under
/work/peers (or USLUB_PEERS), plus any NAME=path.so given.  Each round runs every
(workload, allocator) once in a fresh random order; the table shows medians of time and of
peak RSS (ru_maxrss of the child) and ratios to mimalloc and to the best peer.  Writes
bench/results/<date>-<STEM>.{md,csv,svg} (STEM "workloads" unless --out).

NAME=path.so:VAR=value runs that library with extra environment (e.g. uslub-FZPU=uslub:USLUB_DEBUG=FZPU,
where the path "uslub" means this build's libuslub.so and "glibc" no preload); --allocs keeps
only the named allocators (after adding the extra ones).
"""
import datetime
import math
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))
import runlib  # noqa: E402

WORKLOADS = [  # (label, program, args, quick args)
    ("pair 64 B, 1 thread", "pair", ["--size", "64", "--threads", "1"], ["--scale", "0.2"]),
    ("pair 64 B, 2 threads", "pair", ["--size", "64", "--threads", "2"], ["--scale", "0.2"]),
    ("pair 256 B, 1 thread", "pair", ["--size", "256", "--threads", "1"], ["--scale", "0.2"]),
    ("larson, 2 threads", "larson", ["--threads", "2"], ["--scale", "0.2"]),
    ("xmalloc, 2 threads", "xmalloc", ["--threads", "2"], ["--scale", "0.2"]),
    ("cache-scratch, 2 threads", "cache_scratch", ["--threads", "2"], ["--scale", "0.2"]),
    ("alloc-test, 2 threads", "alloc_test", ["--threads", "2"], ["--scale", "0.2"]),
    ("mstress, 8 threads", "mstress", ["--threads", "8"], ["--scale", "0.2"]),
    ("large 64K-8M", "large", ["--threads", "1"], ["--scale", "0.2"]),
    ("memory return 1 GiB", "memory_return", [], ["--scale", "0.25"]),
]


def run_one(prog, args, so):
    env, so = runlib.preload_env(so)
    if so:
        env["LD_PRELOAD"] = so
    p = subprocess.Popen([prog] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out = b""
    err = b""
    _, status, ru = os.wait4(p.pid, 0)
    out = p.stdout.read()
    err = p.stderr.read()
    if status != 0:
        return None, f"exit {status}: {err.decode(errors='replace')[:200]}"
    m = re.search(r"RESULT (.*)", out.decode())
    if not m:
        return None, "no RESULT line"
    fields = dict(kv.split("=", 1) for kv in m.group(1).split())
    fields["maxrss_mb"] = ru.ru_maxrss / 1024.0
    return fields, None


def main():
    opt = runlib.parse_args(sys.argv[1:], __doc__, "workloads", runlib.ONLY_OPT, {"rounds": 5},
                            strict=False)
    if opt is None:
        return
    rounds, quick, build, only = opt["rounds"], opt["quick"], opt["build"], opt["only"]
    bindir = os.path.join(build, "bench", "workloads")
    allocs = runlib.chosen_allocators(build, opt["extra"], opt["keep"])
    names = [n for n, _ in allocs]
    work = [w for w in WORKLOADS if not only or w[1] in only]
    results = {}  # (label, alloc) -> list of fields
    for r in range(rounds):
        for (label, prog, args, qargs), (name, so) in runlib.shuffled(work, allocs):
            fields, err = run_one(os.path.join(bindir, "wl_" + prog), args + (qargs if quick else []), so)
            if err:
                print(f"warning: {label} under {name}: {err}", file=sys.stderr)
                continue
            results.setdefault((label, name), []).append(fields)
        print(f"round {r + 1}/{rounds} done", file=sys.stderr)

    def med(label, name, key):
        return runlib.median(results.get((label, name), []), key)

    cmd = "./scripts/bench-workloads.sh " + " ".join(sys.argv[1:])
    lines = [f"Command: `{cmd}` ({rounds} rounds{', quick' if quick else ''}, "
             f"{datetime.date.today()}, {os.cpu_count()} CPUs)", "",
             "Time (s, median) and ratio to mimalloc; peak RSS (MiB, median).", ""]
    head = "| workload | " + " | ".join(names) + " | uslub / mimalloc | uslub / best peer |"
    lines += [head, "|" + " --- |" * (len(names) + 3)]
    rows, csv_rows, geo = [], [], {n: [] for n in names}
    for label, prog, _, _ in work:
        medians = {}
        cells = []
        for n in names:
            t = med(label, n, "seconds")
            rss = med(label, n, "maxrss_mb")
            extra_kv = ""
            if prog == "memory_return":
                ra = med(label, n, "rss_after_free_mb")
                extra_kv = f", after free {ra:.0f}" if ra is not None else ""
            medians[n] = {"seconds": t, "rss": rss}
            cells.append(f"{t:.3f} s / {rss:.0f} MiB{extra_kv}" if t is not None else "n/a")
            csv_rows.append([label, n, t, rss, med(label, n, "rss_after_free_mb")])
        rows.append((label, medians))
        ref = medians.get("mimalloc", {}).get("seconds")
        us = medians.get("uslub", {}).get("seconds")
        peers = [v["seconds"] for k, v in medians.items()
                 if not k.startswith("uslub") and v["seconds"]]  # uslub variants are not peers
        r1 = f"{us / ref:.2f}" if us and ref else "n/a"
        r2 = f"{us / min(peers):.2f}" if us and peers else "n/a"
        for n in names:
            if medians[n]["seconds"] and ref:
                geo[n].append(medians[n]["seconds"] / ref)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {r1} | {r2} |")
    lines.append("")
    lines.append("Geometric mean of time relative to mimalloc: " + ", ".join(
        f"{n} {math.exp(sum(map(math.log, v)) / len(v)):.2f}" for n, v in geo.items() if v))
    text = "\n".join(lines)
    print(text)
    stem = runlib.write_results(opt["stem_name"], text,
                                ["workload", "allocator", "seconds", "maxrss_mb",
                                 "rss_after_free_mb"], csv_rows)
    runlib.svg_chart(rows, names, stem + ".svg")
    print(f"wrote {stem}.md .csv .svg", file=sys.stderr)


if __name__ == "__main__":
    main()
