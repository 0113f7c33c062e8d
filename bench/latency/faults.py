#!/usr/bin/env python3
"""Page faults of bench_latency under uslub and every peer, and where uslub takes its own.

usage: faults.py [--rounds N] [--build DIR] [--allocs x,y] [--threads N] [--ops N]
                 [--out STEM] [NAME=/path/lib.so[:VAR=value...] ...]

Each round runs bench_latency (--threads, default 2; --ops, default 2000000) once under every
allocator of bench/runlib.py, in a fresh random order, counting the process's page faults with
perf stat's software page-faults event (this VM has no PMU, software events work); prints the
median and every run.  Then, once under uslub, perf record -e page-faults -c 1 records every
fault with the function that touched the page: a fault taken inside malloc is part of that
call's latency (bench/latency/run.py).  bench/latency/fault_cost.c, built with cc, times one
fault on this machine.  Writes bench/results/<date>-latency-faults-<commit>.{md,csv}.
Default 5 rounds.
"""
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import runlib  # noqa: E402


def run_env(so):
    env, lib = runlib.preload_env(so)
    if lib:
        env["LD_PRELOAD"] = lib
    return env


def faults(cmd, so):
    out = subprocess.run(["perf", "stat", "-x,", "-e", "page-faults", *cmd], env=run_env(so),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True).stderr
    for line in out.splitlines():
        if "page-faults" in line and line.split(",")[0].isdigit():
            return int(line.split(",")[0])
    return None


def by_function(cmd, so, tmp):
    data = os.path.join(tmp, "pf.data")
    subprocess.run(["perf", "record", "-q", "-c", "1", "-e", "page-faults", "-o", data, *cmd],
                   env=run_env(so), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--stdio", "--sort",
                          "sym", "-g", "none"], capture_output=True, text=True).stdout
    rows = []
    for line in rep.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[0].endswith("%") and float(parts[0][:-1]) >= 1:
            rows.append((parts[0], parts[2].removeprefix("[.] ").removeprefix("[k] ")))
    return rows


def fault_cost(tmp):
    exe = os.path.join(tmp, "fault_cost")
    if subprocess.run(["cc", "-O2", "-o", exe, os.path.join(HERE, "fault_cost.c")]).returncode:
        return []
    return [line for pages in (1, 16, 64)
            for line in subprocess.run([exe, str(pages)], capture_output=True,
                                       text=True).stdout.splitlines()]


def main():
    a = runlib.parse_args(sys.argv[1:], __doc__, f"latency-faults-{runlib.commit()}",
                          {"--threads": ("threads", int), "--ops": ("ops", int)},
                          {"threads": 2, "ops": 2000000})
    if a is None:
        return
    bench = os.path.join(a["build"], "bench", "latency", "bench_latency")
    if not os.path.exists(bench):
        sys.exit(f"faults.py: {bench} not built")
    rounds = a["rounds"] or 5
    cmd = [bench, "--threads", str(a["threads"]), "--ops", str(a["ops"])]
    allocs = runlib.chosen_allocators(a["build"], a["extra"], a["keep"])
    runs = {name: [] for name, _ in allocs}
    for _ in range(rounds):
        for _, (name, so) in runlib.shuffled([None], allocs):
            n = faults(cmd, so)
            if n is not None:
                runs[name].append(n)
    uslub = dict(allocs).get("uslub")
    with tempfile.TemporaryDirectory() as tmp:
        funcs = by_function(cmd, uslub, tmp) if uslub else []
        cost = fault_cost(tmp)
    text = [f"Command: `python3 bench/latency/faults.py {' '.join(sys.argv[1:])}`", "",
            f"uslub {runlib.commit()}, bench_latency --threads {a['threads']} --ops {a['ops']}, "
            f"{rounds} rounds, {os.cpu_count()} CPUs.", "",
            "| allocator | page faults per run (median) | all runs |", "| --- | --- | --- |"]
    rows = []
    for name, vals in runs.items():
        if vals:
            med = runlib.median([{"n": v} for v in vals], "n")
            text.append(f"| {name} | {med:.0f} | {' '.join(map(str, vals))} |")
            rows.append([name, f"{med:.0f}", " ".join(map(str, vals))])
    if cost:
        text += ["", "One page fault on this machine (bench/latency/fault_cost.c, 64 MiB, 3 times "
                 "each):", ""] + ["    " + line for line in cost]
    if funcs:
        text += ["", "uslub's faults by the function that touched the page (one run):", "",
                 "| share | function |", "| --- | --- |"] + [f"| {s} | {f} |" for s, f in funcs]
    print("\n".join(text))
    stem = runlib.write_results(a["stem_name"], "\n".join(text), ["allocator", "median", "runs"],
                                rows)
    print(f"wrote {stem}.md .csv")


if __name__ == "__main__":
    main()
