"""What the benchmark runners (bench/workloads/run.py, bench/latency/run.py,
bench/public/run.py) share: the allocators to compare and how one is preloaded, the common
command-line options, the interleaved rounds, medians, the results files and the bar chart.

Allocators: glibc (no preload), jemalloc, tcmalloc, mimalloc (Debian packages, when installed),
mimalloc3 and snmalloc when built by scripts/build-peers.sh under /work/peers (or USLUB_PEERS),
uslub (BUILD/src/libuslub.so), plus any NAME=path.so[:VAR=value...] given: the path "uslub" means
this build's libuslub.so and "glibc" no preload; the VAR=value pairs are extra environment.  An
allocator is (name, so) where so is a path, None (glibc) or (path, {VAR: value}).
"""
import csv
import datetime
import glob
import math
import os
import random
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def chosen_allocators(build, extra, keep):
    """allocators(build, extra), only those named in keep (in keep's order) when keep is set."""
    allocs = allocators(build, extra)
    if keep:
        allocs = [a for k in keep for a in allocs if a[0] == k]
    return allocs


def preload_env(so):
    """(environment, library path or None) to run a program under the allocator so."""
    env = dict(os.environ)
    if isinstance(so, tuple):
        so, extra_env = so
        env.update(extra_env)
    return env, so


# The options every runner takes: {flag: (key, convert)}, convert None for a flag without value.
COMMON_OPTS = {
    "--rounds": ("rounds", int),
    "--quick": ("quick", None),
    "--build": ("build", str),
    "--allocs": ("keep", lambda v: v.split(",")),
    "--out": ("stem_name", str),
}
ONLY_OPT = {"--only": ("only", lambda v: set(v.split(",")))}


def parse_args(argv, doc, stem_name, opts=None, defaults=None, strict=True):
    """The command line as a dict: rounds (None), quick, build (ROOT/build-release), keep (the
    --allocs names or None), only (None), stem_name, extra (the NAME=... arguments), and the
    runner's own opts with their defaults.  An unknown argument exits (strict) or is ignored.
    With -h or --help, prints doc and returns None."""
    if "-h" in argv or "--help" in argv:
        print(doc)
        return None
    opts = {**COMMON_OPTS, **(opts or {})}
    args = {"rounds": None, "quick": False, "build": os.path.join(ROOT, "build-release"),
            "keep": None, "only": None, "stem_name": stem_name, "extra": [], **(defaults or {})}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in opts:
            key, convert = opts[a]
            if convert is None:
                args[key] = True
            else:
                args[key] = convert(argv[i + 1]); i += 1
        elif "=" in a:
            args["extra"].append(a)
        elif strict:
            sys.exit(f"run.py: unknown argument {a} (see --help)")
        i += 1
    return args


def shuffled(work, allocs):
    """One round: every (work item, allocator) pair once, in a fresh random order."""
    jobs = [(w, a) for w in work for a in allocs]
    random.shuffle(jobs)
    return jobs


def median(runs, key):
    """The median of field key over runs (dicts), None when no run has it."""
    vals = [float(f[key]) for f in runs if key in f]
    return statistics.median(vals) if vals else None


def commit():
    try:
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_results(stem_name, text, header, rows):
    """Writes bench/results/<date>-<stem_name>.md (text) and .csv (header, rows); returns the
    path without extension."""
    outdir = os.path.join(ROOT, "bench", "results")
    os.makedirs(outdir, exist_ok=True)
    stem = os.path.join(outdir, f"{datetime.date.today()}-{stem_name}")
    with open(stem + ".md", "w") as f:
        f.write(text + "\n")
    with open(stem + ".csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return stem


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
