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
import csv
import datetime
import glob
import math
import os
import random
import re
import resource
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

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


def debian_so(pkg, pattern):
    try:
        out = subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True).stdout
    except OSError:
        return None
    for line in out.splitlines():
        if re.search(pattern, line) and os.path.exists(line):
            return line
    return None


def allocators(build, extra):
    alloc = [("glibc", None)]
    for name, pkg, pat in [("jemalloc", "libjemalloc2", r"libjemalloc\.so\.2$"),
                           ("tcmalloc", "libtcmalloc-minimal4", r"libtcmalloc_minimal\.so\.4$"),
                           ("mimalloc", "libmimalloc2.0", r"libmimalloc\.so\.2")]:
        so = debian_so(pkg, pat)
        if so:
            alloc.append((name, so))
        else:
            print(f"note: {name} not installed ({pkg}); skipped", file=sys.stderr)
    peers = os.environ.get("USLUB_PEERS", "/work/peers")
    for name, pat in [("mimalloc3", "build/mimalloc*/libmimalloc.so"),
                      ("snmalloc", "build/snmalloc*/libsnmallocshim.so")]:
        hits = sorted(glob.glob(os.path.join(peers, pat)))
        if hits:
            alloc.append((name, hits[0]))
    so = os.path.join(build, "src", "libuslub.so")
    if os.path.exists(so):
        alloc.append(("uslub", so))
    for e in extra:
        name, spec = e.split("=", 1)
        path, *envs = spec.split(":")
        if path == "uslub":
            path = so
        elif path == "glibc":
            path = None
        env = dict(kv.split("=", 1) for kv in envs)
        alloc = [a for a in alloc if a[0] != name] + [(name, (path, env) if env else path)]
    return alloc


def run_one(prog, args, so):
    env = dict(os.environ)
    if isinstance(so, tuple):
        so, extra_env = so
        env.update(extra_env)
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


def svg_chart(rows, names, path):
    # One group of bars per workload: time relative to mimalloc (or glibc), lower is better.
    ref = "mimalloc" if "mimalloc" in names else names[0]
    colors = ["#888", "#d62728", "#2ca02c", "#1f77b4", "#9467bd", "#8c564b", "#ff7f0e", "#17becf"]
    w, bh, gap = 900, 10, 14
    h = 60 + len(rows) * (len(names) * bh + gap)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
             f'<text x="10" y="20" font-size="14">time relative to {ref} (lower is better), log scale</text>']
    y = 40
    for label, med in rows:
        parts.append(f'<text x="10" y="{y + 10}">{label}</text>')
        base = med.get(ref, {}).get("seconds")
        for i, n in enumerate(names):
            v = med.get(n, {}).get("seconds")
            if v and base:
                r = v / base
                x = 420 + 120 * math.log2(r)
                x0 = 420
                parts.append(f'<rect x="{min(x, x0):.1f}" y="{y}" width="{abs(x - x0) + 1:.1f}" height="{bh - 2}" fill="{colors[i % len(colors)]}"/>')
                parts.append(f'<text x="{max(x, x0) + 4:.1f}" y="{y + bh - 2}" font-size="9">{n} {r:.2f}</text>')
            y += bh
        y += gap
    parts.append(f'<line x1="420" y1="35" x2="420" y2="{h}" stroke="black"/>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts))


def main():
    argv = sys.argv[1:]
    if "-h" in argv or "--help" in argv:
        print(__doc__)
        return
    rounds, quick, build, only, extra = 5, False, os.path.join(ROOT, "build-release"), None, []
    keep, stem_name = None, "workloads"
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--rounds":
            rounds = int(argv[i + 1]); i += 1
        elif a == "--quick":
            quick = True
        elif a == "--build":
            build = argv[i + 1]; i += 1
        elif a == "--only":
            only = set(argv[i + 1].split(",")); i += 1
        elif a == "--allocs":
            keep = argv[i + 1].split(","); i += 1
        elif a == "--out":
            stem_name = argv[i + 1]; i += 1
        elif "=" in a:
            extra.append(a)
        i += 1
    bindir = os.path.join(build, "bench", "workloads")
    allocs = allocators(build, extra)
    if keep:
        allocs = [a for k in keep for a in allocs if a[0] == k]
    names = [n for n, _ in allocs]
    work = [w for w in WORKLOADS if not only or w[1] in only]
    results = {}  # (label, alloc) -> list of fields
    for r in range(rounds):
        jobs = [(w, a) for w in work for a in allocs]
        random.shuffle(jobs)
        for (label, prog, args, qargs), (name, so) in jobs:
            fields, err = run_one(os.path.join(bindir, "wl_" + prog), args + (qargs if quick else []), so)
            if err:
                print(f"warning: {label} under {name}: {err}", file=sys.stderr)
                continue
            results.setdefault((label, name), []).append(fields)
        print(f"round {r + 1}/{rounds} done", file=sys.stderr)

    def med(label, name, key):
        vals = [float(f[key]) for f in results.get((label, name), []) if key in f]
        return statistics.median(vals) if vals else None

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
    outdir = os.path.join(ROOT, "bench", "results")
    os.makedirs(outdir, exist_ok=True)
    stem = os.path.join(outdir, f"{datetime.date.today()}-{stem_name}")
    with open(stem + ".md", "w") as f:
        f.write(text + "\n")
    with open(stem + ".csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["workload", "allocator", "seconds", "maxrss_mb", "rss_after_free_mb"])
        w.writerows(csv_rows)
    svg_chart(rows, names, stem + ".svg")
    print(f"wrote {stem}.md .csv .svg", file=sys.stderr)


if __name__ == "__main__":
    main()
