#!/usr/bin/python3
"""amari's train_cnn model against the same network in PyTorch, batch 128, float32: the forward
pass (the mean loss), the loss and gradient, and a whole Adam step.

The model is examples/cnn_models.hpp's small_cnn: conv 1->32 3x3 pad 1, ReLU, 2x2 max-pool, conv
32->64 3x3 pad 1, ReLU, 2x2 max-pool, flatten, Linear 3136->128, ReLU, Linear 128->10, softmax
cross-entropy. PyTorch runs it NCHW as its users do (oneDNN underneath); amari NHWC
(bench/cnn_bench.cpp, BM_cnn_ratios). The two are interleaved: each round runs amari's cnn_bench
once as a subprocess and then times PyTorch, and the table reports medians over the rounds, so slow
drifts of a shared machine hit both sides alike.

    OMP_NUM_THREADS=1 /usr/bin/python3 bench/torch_cnn.py --amari build/release/bench/cnn_bench
    OMP_NUM_THREADS=2 /usr/bin/python3 bench/torch_cnn.py --amari build/release/bench/cnn_bench

Use /usr/bin/python3 (Debian's python3-torch) with Debian's OpenBLAS installed (libopenblas0-openmp:
torch's Linear layers call the system's libblas.so.3, which is the slow reference BLAS otherwise).
PyTorch's CPU tensors come from glibc's malloc, which may hand large freed blocks back to the
system, so that in some processes every step pays page faults for its buffers (its gradient was
measured at 140-253 ms in such processes against 51-52 ms otherwise, bench/RESULTS.md). To compare
the arithmetic, keep freed memory in both processes (amari's benchmark inherits the setting):

    OMP_NUM_THREADS=1 GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4294967295:glibc.malloc.trim_threshold=4294967295 \
        /usr/bin/python3 bench/torch_cnn.py --amari build/release/bench/cnn_bench
Exits 0 with a message when torch is not importable.
"""
import argparse
import os
import sys

from torch_compare import import_torch, interleaved, loss_callables, median, missing_programs, run_benchmarks, set_threads, time_call

BATCH = 128


def torch_round(torch, model, opt, x, y, min_seconds):
    loss_fn = torch.nn.functional.cross_entropy

    forward, gradient = loss_callables(torch, model, x, y)

    def adam_step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    return {"forward": time_call(forward, min_seconds)[0], "gradient": time_call(gradient, min_seconds)[0],
            "adam step": time_call(adam_step, min_seconds)[0]}


def amari_round(program, min_seconds):
    b = run_benchmarks(program, "BM_cnn_ratios", min_seconds)[0]
    f = b["f_ms"] * 1e-3
    return {"forward": f, "gradient": f * b["vjp_over_f"], "adam step": b["adam_step_ms"] * 1e-3,
            "jvp": f * b["jvp_over_f"], "ggn-vp": f * b["ggn_over_f"]}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--amari", default=os.path.join(here, "..", "build", "release", "bench", "cnn_bench"),
                        help="path to amari's cnn_bench program")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (medians are reported)")
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds per measurement")
    args = parser.parse_args()
    torch = import_torch("torch_cnn.py")
    if torch is None:
        return 0
    if missing_programs("torch_cnn.py", [args.amari]):
        return 1

    threads = set_threads(torch)
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-6)
    x = torch.randn(BATCH, 1, 28, 28)
    y = torch.randint(0, 10, (BATCH,))

    runs = interleaved(args.rounds, {"amari": lambda: amari_round(args.amari, args.min_time),
                                     "torch": lambda: torch_round(torch, model, opt, x, y, args.min_time)})
    amari_runs, torch_runs = runs["amari"], runs["torch"]

    print(f"train_cnn model, batch {BATCH}, float32, {threads} thread(s), medians of {args.rounds} interleaved "
          f"rounds; torch {torch.__version__} (NCHW), amari NHWC")
    print(f"{'':<12} {'amari ms':>9} {'torch ms':>9} {'amari/torch':>12}")
    for key in ("forward", "gradient", "adam step"):
        a, t = median(amari_runs, key), median(torch_runs, key)
        print(f"{key:<12} {a * 1e3:9.2f} {t * 1e3:9.2f} {a / t:12.2f}")
    for key in ("jvp", "ggn-vp"):
        a, f = median(amari_runs, key), median(amari_runs, "forward")
        print(f"{key:<12} {a * 1e3:9.2f} {'':>9} {'':>12}   ({a / f:.2f} x amari's forward)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
