"""What the side-by-side comparison scripts (bench/torch_*.py) share: importing Debian's torch,
timing a PyTorch callable, running amari's benchmark programs, and interleaving the two sides
round by round so that slow drifts of a shared machine hit both alike (medians over rounds)."""
import json
import os
import statistics
import subprocess
import sys
import time


def import_torch(script):
    """torch, or None after a message naming `script` when it is not importable."""
    try:
        import torch
        return torch
    except ImportError as e:
        print(f"{script}: PyTorch is not importable ({e}); nothing to compare. "
              "Run it with /usr/bin/python3 (Debian's python3-torch).")
        return None


def set_threads(torch):
    """PyTorch's intra-op threads = OMP_NUM_THREADS (1 when unset), which amari's programs read too."""
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    torch.set_num_threads(threads)
    return threads


def missing_programs(script, paths):
    """True (after a message) if one of `paths` is not an executable."""
    for path in paths:
        if not os.access(path, os.X_OK):
            print(f"{script}: {path} is not an executable; build it first.")
            return True
    return False


def time_call(fn, min_seconds, warmup=2):
    """Mean wall and calling-thread CPU seconds per call of fn over at least min_seconds and 3 calls,
    after `warmup` calls."""
    for _ in range(warmup):
        fn()
    calls, wall0, cpu0 = 0, time.perf_counter(), time.thread_time()
    while True:
        fn()
        calls += 1
        wall = time.perf_counter() - wall0
        if wall >= min_seconds and calls >= 3:
            return wall / calls, (time.thread_time() - cpu0) / calls


def run_benchmarks(program, name_filter, min_seconds):
    """The "benchmarks" list of a Google Benchmark program's JSON output for `name_filter`."""
    res = subprocess.run([program, f"--benchmark_filter={name_filter}", "--benchmark_format=json",
                          f"--benchmark_min_time={min_seconds}"], check=True, capture_output=True, text=True)
    return json.loads(res.stdout)["benchmarks"]


def interleaved(rounds, sides):
    """Runs every side once per round, in order; `sides` maps a name to a callable returning a dict of
    measurements. Returns name -> list of those dicts, one per round."""
    runs = {name: [] for name in sides}
    for r in range(rounds):
        for name, side in sides.items():
            runs[name].append(side())
        print(f"round {r + 1}/{rounds} done", file=sys.stderr)
    return runs


def median(runs, key, index=None):
    """The median over rounds of run[key] (or of run[key][index])."""
    return statistics.median(run[key] if index is None else run[key][index] for run in runs)


def loss_callables(torch, model, x, y):
    """The forward pass (mean cross-entropy, no graph) and the gradient (loss.backward()) of a
    classifier: the two measurements every comparison script makes the same way."""
    loss_fn = torch.nn.functional.cross_entropy

    def forward():
        with torch.no_grad():
            return loss_fn(model(x), y).item()

    def gradient():
        model.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        return loss.item()

    return forward, gradient
