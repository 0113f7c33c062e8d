#!/usr/bin/env python3
"""Runs the public mimalloc-bench programs under uslub and every peer, interleaved, and writes a
results file.  Normally started by bench/public/mimalloc_bench.sh, which builds the programs.

usage: run.py --bin DIR [--rounds N] [--quick] [--procs N] [--build DIR] [--only a,b]
              [--allocs x,y] [--out STEM] [NAME=/path/lib.so[:VAR=value...] ...]

--bin DIR     the built programs (mimalloc_bench.sh --bin; default /work/peers/build/mimalloc-bench)
--procs N     the thread count of the N programs (PROCS of mimalloc-bench's bench.sh; default 2)
--quick       the short form: fewer seconds for the timed programs, a fifth of the work for the
              others (the *-quick copies and input-quick built by mimalloc_bench.sh); 3 rounds
              unless --rounds is given
--only a,b    keeps the named tests (cfrac, larsonN, ...)
Allocators and NAME=path.so[:VAR=value] are those of bench/workloads/run.py (glibc, the Debian
jemalloc, tcmalloc and mimalloc 2.0, mimalloc3/snmalloc built under /work/peers, uslub from
--build DIR, default build-release).

Each round runs every (test, allocator) pair once in a fresh random order.  The time of a test is
the wall time of the process, except for the programs that run for a fixed time and report a rate,
whose time is derived from the rate as mimalloc-bench's bench.sh does (larson: 1e9 / ops/s;
xmalloc-test: its rtime = 100 / (M frees/s); rptest: 2e6 / (ops/CPU s); glibc-thread: 1e9 /
iterations).  Peak RSS is the child's ru_maxrss.  The table shows medians, the ratio of uslub to
mimalloc 2.0 ("mimalloc") and to the best peer, and the geometric mean of time relative to
mimalloc 2.0.  Writes bench/results/<date>-<STEM>-<commit>.{md,csv,svg} (STEM mimalloc-bench).
"""
import datetime
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))
import runlib  # noqa: E402

TIMEOUT = 600  # seconds; a run that takes longer is killed and counted as failed


def tests(procs, quick):
    """(name, argv, stdin file or None, metric, quick argv or None); argv[0] is in --bin."""
    p = str(procs)
    q = quick
    cfrac_n = "17545186520507317056371138836327" if q else "17545186520507317056371138836327483792789528"
    secs = "2" if q else "5"
    reps = "400000" if q else "2000000"
    return [
        ("cfrac", ["cfrac", cfrac_n], None, "wall"),
        ("espresso", ["espresso", "largest.espresso"], None, "wall"),
        ("barnes", ["barnes"], "input-quick" if q else "input", "wall"),
        ("larsonN", ["larson", secs, "8", "1000", "5000", "100", "4141", p], None, "larson"),
        ("larsonN-sized", ["larson-sized", secs, "8", "1000", "5000", "100", "4141", p], None, "larson"),
        ("alloc-test1", ["alloc-test-quick" if q else "alloc-test", "1"], None, "wall"),
        ("alloc-testN", ["alloc-test-quick" if q else "alloc-test", p], None, "wall"),
        ("xmalloc-testN", ["xmalloc-test", "-w", p, "-t", secs, "-s", "64"], None, "xmalloc"),
        ("cache-thrash1", ["cache-thrash", "1", "1000", "1", reps, p], None, "wall"),
        ("cache-thrashN", ["cache-thrash", p, "1000", "1", reps, p], None, "wall"),
        ("cache-scratch1", ["cache-scratch", "1", "1000", "1", reps, p], None, "wall"),
        ("cache-scratchN", ["cache-scratch", p, "1000", "1", reps, p], None, "wall"),
        ("malloc-large", ["malloc-large-quick" if q else "malloc-large"], None, "wall"),
        ("mstressN", ["mstress", p, "50", "25"], None, "wall"),
        ("rptestN", ["rptest", p, "0", "1", "2", "100" if q else "500", "1000", "100", "8", "16000"],
         None, "rptest"),
        ("glibc-simple", ["glibc-simple-quick" if q else "glibc-simple"], None, "wall"),
        ("glibc-thread", ["glibc-thread", p], None, "glibcthread"),
    ]


def metric(kind, out, wall):
    """The time of one run, or None when the program's report is missing."""
    if kind == "wall":
        return wall
    pats = {"larson": r"relative time: ([0-9.]+)s", "xmalloc": r"rtime: ([0-9.]+)",
            "rptest": r"([0-9]+) memory ops", "glibcthread": r"([0-9]+) iterations"}
    m = re.search(pats[kind], out)
    if not m:
        return None
    v = float(m.group(1))
    if kind == "rptest":
        return 2e6 / v if v else None
    if kind == "glibcthread":
        return 1e9 / v if v else None
    return v


TIME = "/usr/bin/time"  # GNU time: the program's own peak RSS (see run_one)


def run_one(bindir, argv, stdin, kind, so):
    env, so = runlib.preload_env(so)
    env.pop("LD_PRELOAD", None)
    prog = [os.path.join(bindir, argv[0])] + argv[1:]
    if so:
        prog = ["/usr/bin/env", f"LD_PRELOAD={so}"] + prog
    # The peak RSS of a child that Python starts includes Python's own (a vfork child's exec
    # records the old mm's high-water mark in ru_maxrss), so the program is started as
    # mimalloc-bench's bench.sh does: time forks a copy of its small self, which execs env,
    # which sets LD_PRELOAD and execs the program; time reports that child's ru_maxrss.
    use_time = os.access(TIME, os.X_OK)
    with tempfile.TemporaryFile() as out, tempfile.NamedTemporaryFile("r") as rss, \
            (open(os.path.join(bindir, stdin)) if stdin else open(os.devnull)) as fin:
        if use_time:
            prog = [TIME, "-f", "%M", "-o", rss.name] + prog
        t0 = time.monotonic()
        p = subprocess.Popen(prog, cwd=bindir, stdin=fin, stdout=out, stderr=subprocess.STDOUT,
                             env=env)
        killer = threading.Timer(TIMEOUT, p.kill)
        killer.start()
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.monotonic() - t0
        timed_out = not killer.is_alive()
        killer.cancel()
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
        maxrss_kb = ru.ru_maxrss
        if use_time:
            lines = rss.read().split()
            maxrss_kb = int(lines[-1]) if lines and lines[-1].isdigit() else None
    if timed_out:
        return None, f"killed after {TIMEOUT} s"
    if p.returncode != 0:
        return None, f"exit {p.returncode}: {text[-300:]}"
    t = metric(kind, text, wall)
    if t is None or maxrss_kb is None:
        return None, "no result in its output"
    return {"time": t, "wall": wall, "maxrss_mb": maxrss_kb / 1024.0}, None


def main():
    tree = runlib.commit()  # the tree measured, whatever is committed while the run goes on
    opt = runlib.parse_args(sys.argv[1:], __doc__, "mimalloc-bench",
                            {**runlib.ONLY_OPT, "--bin": ("bindir", str), "--procs": ("procs", int)},
                            {"bindir": "/work/peers/build/mimalloc-bench", "procs": 2})
    if opt is None:
        return
    rounds, quick, build, only = opt["rounds"], opt["quick"], opt["build"], opt["only"]
    bindir, procs = opt["bindir"], opt["procs"]
    if rounds is None:
        rounds = 3 if quick else 5
    build = os.path.abspath(build)
    if not os.path.exists(os.path.join(build, "src", "libuslub.so")):
        print(f"note: no {build}/src/libuslub.so; uslub is not run", file=sys.stderr)
    allocs = runlib.chosen_allocators(build, opt["extra"], opt["keep"])
    names = [n for n, _ in allocs]
    work = []
    for t in tests(procs, quick):
        if only and t[0] not in only:
            continue
        if not os.access(os.path.join(bindir, t[1][0]), os.X_OK):
            print(f"note: {t[0]}: no {t[1][0]} in {bindir}; skipped", file=sys.stderr)
            continue
        work.append(t)
    results, failures = {}, {}
    t_start = time.monotonic()
    # SIGTERM or ^C stops after the current run and writes the rounds completed so far.
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    planned, done = rounds, 0
    for r in range(rounds):
        for (name, targv, stdin, kind), (aname, so) in runlib.shuffled(work, allocs):
            if stop:
                break
            fields, err = run_one(bindir, targv, stdin, kind, so)
            if err:
                print(f"warning: {name} under {aname}: {err}", file=sys.stderr)
                failures.setdefault((name, aname), []).append(err.splitlines()[0] if err else err)
                continue
            results.setdefault((name, aname), []).append(fields)
        if stop:
            print(f"stopped during round {r + 1}; writing the {done} complete rounds", file=sys.stderr)
            # Keep complete rounds only, so that every allocator has the same number of runs.
            for k in results:
                results[k] = results[k][:done]
            break
        done += 1
        print(f"round {r + 1}/{rounds} done ({time.monotonic() - t_start:.0f} s)", file=sys.stderr)
    rounds = done

    def med(name, aname, key):
        return runlib.median(results.get((name, aname), []), key)

    bench_commit = "unknown"
    try:
        bench_commit = open(os.path.join(bindir, "COMMIT")).read().strip()
    except OSError:
        pass
    cmd = "bench/public/mimalloc_bench.sh " + " ".join(a for a in sys.argv[1:])
    load = os.getloadavg()
    lines = [f"Command: `{cmd}`", "",
             f"mimalloc-bench {bench_commit}, uslub {tree}, {rounds} rounds"
             f"{'' if rounds == planned else f' (of {planned} planned; stopped)'}"
             f"{' (short form)' if quick else ''}, PROCS={procs}, {datetime.date.today()}, "
             f"{os.cpu_count()} CPUs, load average at the end {load[0]:.1f}.", "",
             "Time (s, median; for larson, xmalloc-test, rptest and glibc-thread the time derived "
             "from their rate as bench.sh does) and peak RSS (MiB, median).  \"mimalloc\" is "
             "Debian's mimalloc 2.0.", ""]
    head = "| test | " + " | ".join(names) + " | uslub / mimalloc | uslub / best peer | best peer |"
    lines += [head, "|" + " --- |" * (len(names) + 4)]
    rows, csv_rows = [], []
    geo = {n: [] for n in names}
    worst = []
    for name, _, _, _ in work:
        medians, cells = {}, []
        for n in names:
            t, rss = med(name, n, "time"), med(name, n, "maxrss_mb")
            nrun = len(results.get((name, n), []))
            medians[n] = {"seconds": t, "rss": rss}
            if t is None:
                cells.append("fail")
            else:
                cells.append(f"{t:.3f} / {rss:.0f}" + (f" ({nrun} runs)" if nrun != rounds else ""))
            csv_rows.append([name, n, t, rss, med(name, n, "wall"), nrun,
                             "; ".join(failures.get((name, n), []))])
        rows.append((name, medians))
        ref = medians.get("mimalloc", {}).get("seconds")
        us = medians.get("uslub", {}).get("seconds")
        peers = {k: v["seconds"] for k, v in medians.items()
                 if not k.startswith("uslub") and v["seconds"]}
        best = min(peers, key=peers.get) if peers else None
        r1 = f"{us / ref:.2f}" if us and ref else "n/a"
        r2 = f"{us / peers[best]:.2f}" if us and best else "n/a"
        if us and best:
            worst.append((us / peers[best], name))
        if ref:
            for n in names:
                if medians[n]["seconds"]:
                    geo[n].append(medians[n]["seconds"] / ref)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {r1} | {r2} | {best or 'n/a'} |")
    lines.append("")
    full = [n for n in names if len(geo[n]) == len(work)]
    lines.append("Geometric mean of time relative to mimalloc 2.0 (over the tests every allocator "
                 "finished): " + ", ".join(
                     f"{n} {math.exp(statistics.fmean(map(math.log, geo[n]))):.2f}"
                     for n in names if geo[n] and n in full)
                 + ("" if len(full) == len(names) else
                    "; incomplete: " + ", ".join(
                        f"{n} {math.exp(statistics.fmean(map(math.log, geo[n]))):.2f} over "
                        f"{len(geo[n])}" for n in names if geo[n] and n not in full)))
    worst.sort(reverse=True)
    over = [f"{w} {r:.2f}x" for r, w in worst if r > 1.25]
    lines.append("")
    lines.append("Tests where uslub is more than 1.25x the best peer: " + (", ".join(over) or "none"))
    if failures:
        lines.append("")
        lines.append("Failed runs: " + "; ".join(
            f"{k[0]} under {k[1]}: {len(v)}x {v[0]}" for k, v in sorted(failures.items())))
    text = "\n".join(lines)
    print(text)
    stem = runlib.write_results(f"{opt['stem_name']}-{tree}", text,
                                ["test", "allocator", "time_s", "maxrss_mb", "wall_s", "runs",
                                 "failures"], csv_rows)
    runlib.svg_chart(rows, names, stem + ".svg")
    print(f"wrote {stem}.md .csv .svg", file=sys.stderr)


if __name__ == "__main__":
    main()
