#!/usr/bin/env python3
"""Latency distribution of malloc and free (and uslub's kmem_cache pair) under uslub and every
peer: runs bench/latency/latency.cpp (bench_latency) with LD_PRELOAD, prints a table and writes
bench/results/<date>-latency-<commit>.{md,csv,svg}.

usage: run.py [--rounds N] [--quick] [--build DIR] [--ops N] [--remote F] [--allocs x,y]
              [--out STEM] [NAME=/path/lib.so[:VAR=value...] ...]

Configurations: 1 thread, 2 threads, 4x and 16x oversubscription (4 and 16 threads per CPU),
each with --remote (default 0.25) of the frees made by another thread when there are several.
Allocators are those of bench/workloads/run.py (glibc, the Debian jemalloc, tcmalloc and
mimalloc 2.0, mimalloc3/snmalloc built under /work/peers, uslub from --build DIR, default
build-release, and NAME=path.so[:VAR=value]); "uslub kmem" is the kmem_cache_alloc/free pair on a
64-byte cache in the same loop (uslub only).  Each round runs every (configuration, allocator)
once in a fresh random order; a configuration's histograms are summed over the rounds, so
p99.99 is taken over rounds x --ops samples (--ops is per run, split among the threads; default
2000000, --quick 500000 and 2 rounds).  Percentiles are the upper edge of their histogram
bucket (within 3 %), in ns, after subtracting the timer's own cost.
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

SUB_BITS = 5
SUB = 1 << SUB_BITS
PCTS = [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999), ("p99.99", 0.9999)]
OPS = ["malloc", "free", "free_remote"]


def bucket_upper(i):
    """One past the largest value (cycles) of bucket i (latency.cpp's bucket_of)."""
    if i < SUB:
        return i + 1
    e = i // SUB + SUB_BITS - 1
    sub = i % SUB
    return ((SUB + sub) << (e - SUB_BITS)) + (1 << (e - SUB_BITS))


class Hist:
    def __init__(self):
        self.count, self.max, self.b = 0, 0, {}

    def add_line(self, count, mx, buckets):
        self.count += count
        self.max = max(self.max, mx)
        for i, c in buckets.items():
            self.b[i] = self.b.get(i, 0) + c

    def merged(self, other):
        h = Hist()
        h.add_line(self.count, self.max, self.b)
        h.add_line(other.count, other.max, other.b)
        return h

    def pct(self, q):
        """Upper edge of the bucket holding the q-quantile (cycles), at most the maximum."""
        if not self.count:
            return None
        need = q * self.count
        run = 0
        for i in sorted(self.b):
            run += self.b[i]
            if run >= need:
                return min(bucket_upper(i) - 1, self.max)
        return self.max

    def ccdf(self):
        """[(upper edge in cycles, fraction of samples above it)]"""
        out, run = [], 0
        for i in sorted(self.b):
            run += self.b[i]
            out.append((bucket_upper(i), (self.count - run) / self.count))
        return out


def run_one(prog, args, so):
    env, so = runlib.preload_env(so)
    if so:
        env["LD_PRELOAD"] = so
    p = subprocess.run([prog] + args, capture_output=True, text=True, env=env, timeout=900)
    if p.returncode != 0:
        return None, f"exit {p.returncode}: {p.stderr[-200:]}"
    head = re.search(r"^LATENCY (.*)$", p.stdout, re.M)
    if not head:
        return None, "no LATENCY line"
    info = dict(kv.split("=", 1) for kv in head.group(1).split())
    hists = {}
    for m in re.finditer(r"^HIST op=(\S+) count=(\d+) max=(\d+) buckets=(\S*)$", p.stdout, re.M):
        b = {}
        for kv in m.group(4).split(",") if m.group(4) else []:
            i, c = kv.split(":")
            b[int(i)] = int(c)
        hists[m.group(1)] = (int(m.group(2)), int(m.group(3)), b)
    return (info, hists), None


COLORS = ["#888888", "#d62728", "#2ca02c", "#1f77b4", "#9467bd", "#8c564b", "#000000",
          "#ff7f0e", "#17becf", "#e377c2"]


def svg_ccdf(panels, names, hz, path):
    """panels: [(title, {alloc: Hist})]; two columns (malloc, free), one row per configuration."""
    pw, ph, ml, mt = 460, 250, 60, 30
    cols = 2
    rows = (len(panels) + cols - 1) // cols
    legend_h = 24 + 16 * ((len(names) + 4) // 5)
    w, h = cols * (pw + ml + 20) + 20, legend_h + rows * (ph + mt + 40)
    x_lo, x_hi = 1.0, 8.0   # log10 ns: 10 ns .. 100 ms
    y_lo = -8.0             # log10 of the fraction slower: 1 .. 1e-8
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
             f'font-family="sans-serif" font-size="11">',
             f'<rect width="{w}" height="{h}" fill="white"/>',
             '<text x="10" y="16" font-size="13">Fraction of operations slower than x '
             '(log-log; further right and higher is worse)</text>']
    for k, n in enumerate(names):
        lx, ly = 10 + (k % 5) * 190, 34 + 16 * (k // 5)
        parts.append(f'<line x1="{lx}" y1="{ly - 4}" x2="{lx + 20}" y2="{ly - 4}" '
                     f'stroke="{COLORS[k % len(COLORS)]}" stroke-width="{3 if n.startswith("uslub") else 1.5}"/>')
        parts.append(f'<text x="{lx + 24}" y="{ly}">{n}</text>')
    for idx, (title, by_alloc) in enumerate(panels):
        r, c = divmod(idx, cols)
        x0 = 10 + c * (pw + ml + 20) + ml
        y0 = legend_h + r * (ph + mt + 40) + mt
        parts.append(f'<text x="{x0}" y="{y0 - 8}" font-size="12">{title}</text>')
        parts.append(f'<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="black"/>')

        def X(ns):
            v = math.log10(max(ns, 10 ** x_lo))
            return x0 + (min(v, x_hi) - x_lo) / (x_hi - x_lo) * pw

        def Y(frac):
            v = math.log10(max(frac, 10 ** y_lo))
            return y0 + (v / y_lo) * ph

        for d in range(int(x_lo), int(x_hi) + 1):
            xx = X(10 ** d)
            parts.append(f'<line x1="{xx:.1f}" y1="{y0}" x2="{xx:.1f}" y2="{y0 + ph}" stroke="#ddd"/>')
            lab = {1: "10ns", 2: "100ns", 3: "1us", 4: "10us", 5: "100us", 6: "1ms", 7: "10ms",
                   8: "100ms"}[d]
            parts.append(f'<text x="{xx - 12:.1f}" y="{y0 + ph + 14}" font-size="10">{lab}</text>')
        for d in range(0, int(-y_lo) + 1):
            yy = Y(10 ** -d)
            parts.append(f'<line x1="{x0}" y1="{yy:.1f}" x2="{x0 + pw}" y2="{yy:.1f}" stroke="#eee"/>')
            parts.append(f'<text x="{x0 - 40}" y="{yy + 4:.1f}" font-size="10">1e-{d}</text>')
        for k, n in enumerate(names):
            hst = by_alloc.get(n)
            if not hst or not hst.count:
                continue
            pts = [(X(10 ** x_lo), Y(1.0))]
            for up, frac in hst.ccdf():
                pts.append((X(up * 1e9 / hz), Y(frac)))
            d_attr = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            parts.append(f'<polyline fill="none" stroke="{COLORS[k % len(COLORS)]}" '
                         f'stroke-width="{2.5 if n.startswith("uslub") else 1.2}" points="{d_attr}"/>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts))


def main():
    tree = runlib.commit()  # the tree measured, whatever is committed while the run goes on
    opt = runlib.parse_args(sys.argv[1:], __doc__, "latency",
                            {"--ops": ("ops", int), "--remote": ("remote", float)},
                            {"ops": None, "remote": 0.25})
    if opt is None:
        return
    rounds, quick, build, keep = opt["rounds"], opt["quick"], opt["build"], opt["keep"]
    ops, remote = opt["ops"], opt["remote"]
    rounds = rounds or (2 if quick else 3)
    ops = ops or (500000 if quick else 2000000)
    build = os.path.abspath(build)
    prog = os.path.join(build, "bench", "latency", "bench_latency")
    if not os.access(prog, os.X_OK):
        sys.exit(f"run.py: no {prog} (build with -DUSLUB_BUILD_BENCH=ON)")
    allocs = runlib.chosen_allocators(build, opt["extra"], keep)
    runs = [(n, so, "malloc") for n, so in allocs]
    uslub = dict(allocs).get("uslub")
    if uslub and (not keep or "uslub kmem" in keep or "uslub" in keep):
        runs.append(("uslub kmem", uslub, "kmem"))
    names = [r[0] for r in runs]
    ncpu = os.cpu_count() or 1
    configs = [("1 thread", 1), ("2 threads", 2), (f"4x oversubscribed ({4 * ncpu} threads)", 4 * ncpu),
               (f"16x oversubscribed ({16 * ncpu} threads)", 16 * ncpu)]
    hists = {}  # (config, alloc, op) -> Hist
    hz_seen = []
    for r in range(rounds):
        for (clabel, threads), (name, so, api) in runlib.shuffled(configs, runs):
            args = ["--api", api, "--threads", str(threads), "--ops", str(ops), "--remote",
                    str(remote), "--seed", str(r + 1)]
            res, err = run_one(prog, args, so)
            if err:
                print(f"warning: {clabel} under {name}: {err}", file=sys.stderr)
                continue
            info, hs = res
            hz_seen.append(float(info["tsc_hz"]))
            for op, (count, mx, b) in hs.items():
                hists.setdefault((clabel, name, op), Hist()).add_line(count, mx, b)
        print(f"round {r + 1}/{rounds} done", file=sys.stderr)
    hz = sorted(hz_seen)[len(hz_seen) // 2] if hz_seen else 1e9

    def ns(c):
        return None if c is None else c * 1e9 / hz

    def fmt(v):
        if v is None:
            return "n/a"
        if v >= 1e6:
            return f"{v / 1e6:.1f} ms"
        if v >= 1e3:
            return f"{v / 1e3:.2f} us"
        return f"{v:.0f} ns"

    def get(clabel, name, op):
        if op == "free":  # every free: the thread's own and those handed to it
            a = hists.get((clabel, name, "free"))
            b = hists.get((clabel, name, "free_remote"))
            if a and b:
                return a.merged(b)
            return a or b
        return hists.get((clabel, name, op))

    cmd = "python3 bench/latency/run.py " + " ".join(sys.argv[1:])
    load = os.getloadavg()
    lines = [f"Command: `{cmd}`", "",
             f"uslub {tree}, {rounds} rounds of {ops} operations per configuration and "
             f"allocator, {remote:g} of the frees remote (several threads), "
             f"{datetime.date.today()}, {ncpu} CPUs, TSC {hz / 1e9:.3f} GHz, load average at the "
             f"end {load[0]:.1f}.", "",
             "Latency of one call in ns (upper edge of its 3 % histogram bucket, timer cost "
             "subtracted).  \"uslub kmem\" is kmem_cache_alloc / kmem_cache_free on a 64-byte "
             "cache; the others are malloc / free of 8 B - 4 KiB (1 in 1024: 4-64 KiB).  "
             "\"free\" is every free, \"free (remote)\" only those of blocks another thread "
             "allocated.", ""]
    csv_rows = []
    for op, title in [("malloc", "malloc"), ("free", "free"), ("free_remote", "free (remote)")]:
        lines += [f"### {title}", "",
                  "| configuration | allocator | " + " | ".join(p for p, _ in PCTS) + " | max | samples |",
                  "|" + " --- |" * (len(PCTS) + 4)]
        for clabel, _ in configs:
            for name in names:
                hst = get(clabel, name, op)
                if not hst or not hst.count:
                    continue
                vals = [ns(hst.pct(q)) for _, q in PCTS]
                mx = ns(hst.max)
                cell = " | ".join(f"**{fmt(v)}**" if name.startswith("uslub") else fmt(v)
                                  for v in vals + [mx])
                lines.append(f"| {clabel} | {name} | {cell} | {hst.count} |")
                csv_rows.append([clabel, name, op] + [f"{v:.1f}" for v in vals] + [f"{mx:.1f}", hst.count])
        lines.append("")
    # The best peer's p99.99 per configuration and op, for the targets.
    lines += ["### p99.99 of uslub against the best peer", "",
              "| configuration | op | uslub | uslub kmem | best peer | uslub / best peer |",
              "| --- | --- | --- | --- | --- | --- |"]
    for clabel, _ in configs:
        for op in ["malloc", "free"]:
            peers = {n: get(clabel, n, op) for n in names if not n.startswith("uslub")}
            peers = {n: ns(h.pct(0.9999)) for n, h in peers.items() if h and h.count}
            best = min(peers, key=peers.get) if peers else None
            us = get(clabel, "uslub", op)
            km = get(clabel, "uslub kmem", op)
            lines.append(f"| {clabel} | {op} | {fmt(ns(us.pct(0.9999))) if us else 'n/a'} | "
                         f"{fmt(ns(km.pct(0.9999))) if km else 'n/a'} | "
                         f"{best or 'n/a'} {fmt(peers[best]) if best else ''} | "
                         f"{ns(us.pct(0.9999)) / peers[best]:.2f} |" if us and best and peers[best]
                         else f"{best or 'n/a'} | n/a |")
    text = "\n".join(lines)
    print(text)
    stem = runlib.write_results(f"{opt['stem_name']}-{tree}", text,
                                ["configuration", "allocator", "op"] + [f"{p}_ns" for p, _ in PCTS]
                                + ["max_ns", "samples"], csv_rows)
    panels = []
    for clabel, _ in configs:
        for op in ["malloc", "free"]:
            panels.append((f"{op}, {clabel}", {n: get(clabel, n, op) for n in names}))
    svg_ccdf(panels, names, hz, stem + ".svg")
    print(f"wrote {stem}.md .csv .svg", file=sys.stderr)


if __name__ == "__main__":
    main()
