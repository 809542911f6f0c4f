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

Use /usr/bin/python3 (Debian's python3-torch). Exits 0 with a message when torch is not importable.
"""
import argparse
import os
import sys

from torch_compare import import_torch, interleaved, median, missing_programs, run_benchmarks, set_threads, time_call

LAYERS = [  # (name, C_in, C_out, H = W), 3x3 kernels, padding 1, batch 128
    ("conv1 1->32 28x28", 1, 32, 28),
    ("conv2 32->64 14x14", 32, 64, 14),
]
BATCH = 128


def flops(c_in, c_out, hw):
    return 2.0 * BATCH * hw * hw * c_out * 9 * c_in


def torch_round(torch, problems, min_seconds):
    out = {}
    for (name, _, _, _), (x, w, b, ybar) in zip(LAYERS, problems):
        def forward():
            with torch.no_grad():
                return torch.nn.functional.conv2d(x, w, b, padding=1)

        def forward_backward():
            y = torch.nn.functional.conv2d(x, w, b, padding=1)
            return torch.autograd.grad(y, (x, w), ybar)

        out[(name, "forward")] = time_call(forward, min_seconds, warmup=3)
        out[(name, "forward+backward")] = time_call(forward_backward, min_seconds, warmup=3)
    return out


def amari_round(program, min_seconds):
    out = {}
    for bench in run_benchmarks(program, "BM_conv", min_seconds):
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

    torch = import_torch("torch_conv.py")
    if torch is None:
        return 0
    if missing_programs("torch_conv.py", [args.amari]):
        return 1

    threads = set_threads(torch)
    torch.manual_seed(0)
    problems = []
    for _, c_in, c_out, hw in LAYERS:
        x = torch.randn(BATCH, c_in, hw, hw, requires_grad=True)
        w = torch.randn(c_out, c_in, 3, 3, requires_grad=True)
        b = torch.randn(c_out)
        ybar = torch.randn(BATCH, c_out, hw, hw)
        problems.append((x, w, b, ybar))

    runs = interleaved(args.rounds, {"amari": lambda: amari_round(args.amari, args.min_time),
                                     "torch": lambda: torch_round(torch, problems, args.min_time)})
    amari_runs, torch_runs = runs["amari"], runs["torch"]

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
