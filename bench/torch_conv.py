#!/usr/bin/python3
"""amari's conv2d against PyTorch on the two convolution layers of the example CNN (batch 128,
float32): conv 1->32 3x3 pad 1 on 28x28 and conv 32->64 3x3 pad 1 on 14x14.

PyTorch runs NCHW float32 as its users run it (oneDNN underneath); amari runs NHWC
(bench/conv_bench.cpp). Both measure the forward pass, and forward + backward for the gradients of
x and w (the bias is a constant on both sides). The two are interleaved: each round runs amari's
conv_bench once as a subprocess and then times PyTorch, and the table reports medians over the
rounds, so slow drifts of a shared machine hit both sides alike. Wall-clock times; with one thread
the CPU-time ratio (the calling thread's CPU time, insensitive to descheduling) is shown too.

    OMP_NUM_THREADS=1 /usr/bin/python3 bench/torch_conv.py --amari build/conv/bench/conv_bench
    OMP_NUM_THREADS=2 /usr/bin/python3 bench/torch_conv.py --amari build/conv/bench/conv_bench

Use /usr/bin/python3 (Debian's, with torch). Exits 0 with a message when torch is not importable.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

LAYERS = [  # (name, C_in, C_out, H = W), 3x3 kernels, padding 1, batch 128
    ("conv1 1->32 28x28", 1, 32, 28),
    ("conv2 32->64 14x14", 32, 64, 14),
]
BATCH = 128


def flops(c_in, c_out, hw):
    return 2.0 * BATCH * hw * hw * c_out * 9 * c_in


def time_torch(torch, fn, min_seconds):
    """Mean wall and thread-CPU seconds per call of fn over at least min_seconds (after warm-up)."""
    for _ in range(3):
        fn()
    calls, wall0, cpu0 = 0, time.perf_counter(), time.thread_time()
    while True:
        fn()
        calls += 1
        wall = time.perf_counter() - wall0
        if wall >= min_seconds and calls >= 3:
            return wall / calls, (time.thread_time() - cpu0) / calls


def torch_round(torch, problems, min_seconds):
    out = {}
    for (name, _, _, _), (x, w, b, ybar) in zip(LAYERS, problems):
        def forward():
            with torch.no_grad():
                return torch.nn.functional.conv2d(x, w, b, padding=1)

        def forward_backward():
            y = torch.nn.functional.conv2d(x, w, b, padding=1)
            return torch.autograd.grad(y, (x, w), ybar)

        out[(name, "forward")] = time_torch(torch, forward, min_seconds)
        out[(name, "forward+backward")] = time_torch(torch, forward_backward, min_seconds)
    return out


def amari_round(program, min_seconds):
    res = subprocess.run([program, "--benchmark_filter=BM_conv", "--benchmark_format=json",
                          f"--benchmark_min_time={min_seconds}"], check=True, capture_output=True, text=True)
    out = {}
    for bench in json.loads(res.stdout)["benchmarks"]:
        # BM_conv_forward/<layer>/real_time, BM_conv_forward_backward/<layer>/real_time
        kind, layer = bench["name"].split("/")[:2]
        mode = "forward+backward" if kind.endswith("forward_backward") else "forward"
        scale = {"ms": 1e-3, "us": 1e-6, "ns": 1e-9, "s": 1.0}[bench["time_unit"]]
        out[(LAYERS[int(layer)][0], mode)] = (bench["real_time"] * scale, bench["cpu_time"] * scale)
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--amari", default=os.path.join(here, "..", "build", "conv", "bench", "conv_bench"),
                        help="path to amari's conv_bench program")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (medians are reported)")
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds per measurement")
    args = parser.parse_args()

    try:
        import torch
    except ImportError as e:
        print(f"torch_conv.py: PyTorch is not importable ({e}); nothing to compare. "
              "Run it with /usr/bin/python3 (Debian's python3-torch).")
        return 0
    if not os.access(args.amari, os.X_OK):
        print(f"torch_conv.py: {args.amari} is not an executable; build the conv_bench target first.")
        return 1

    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    problems = []
    for _, c_in, c_out, hw in LAYERS:
        x = torch.randn(BATCH, c_in, hw, hw, requires_grad=True)
        w = torch.randn(c_out, c_in, 3, 3, requires_grad=True)
        b = torch.randn(c_out)
        ybar = torch.randn(BATCH, c_out, hw, hw)
        problems.append((x, w, b, ybar))

    amari_runs, torch_runs = [], []
    for r in range(args.rounds):
        amari_runs.append(amari_round(args.amari, args.min_time))
        torch_runs.append(torch_round(torch, problems, args.min_time))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    def median(runs, key, i):
        return statistics.median(run[key][i] for run in runs)

    print(f"conv2d, batch {BATCH}, float32, {threads} thread(s), medians of {args.rounds} interleaved rounds; "
          f"torch {torch.__version__} (NCHW), amari NHWC")
    header = f"{'layer':<20} {'mode':<17} {'amari ms':>9} {'torch ms':>9} {'ratio':>6}  {'amari GF/s':>10} {'torch GF/s':>10}"
    if threads == 1:
        header += f"  {'cpu ratio':>9}"
    print(header)
    for name, c_in, c_out, hw in LAYERS:
        for mode, mult in (("forward", 1), ("forward+backward", 3)):
            key = (name, mode)
            a, t = median(amari_runs, key, 0), median(torch_runs, key, 0)
            f = mult * flops(c_in, c_out, hw)
            line = f"{name:<20} {mode:<17} {a * 1e3:9.2f} {t * 1e3:9.2f} {a / t:6.2f}  {f / a * 1e-9:10.1f} {f / t * 1e-9:10.1f}"
            if threads == 1:
                line += f"  {median(amari_runs, key, 1) / median(torch_runs, key, 1):9.2f}"
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
