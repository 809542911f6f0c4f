#!/usr/bin/python3
"""amari's MLP products against PyTorch on the same machine, in the same run: the forward pass (the
mean loss), the gradient, a forward-mode JVP, a GGN-vector product and a Hessian-vector product.

The model is bench/mlp_configs.hpp's mnist configuration: a tanh MLP 784-256-256-10 with softmax
cross-entropy, batch 128, float32, the direction v a random parameter-space vector. PyTorch computes
each product by its best available method (torch 1.13 with functorch):
  forward   loss under torch.no_grad()
  gradient  loss.backward()
  jvp       functorch.jvp of the loss in the parameters (forward mode)
  ggn-vp    functorch.jvp of the logits (J v), the softmax Hessian in closed form
            (H_L a = p * a - p (p . a), divided by N), then functorch.vjp of the logits (J^T):
            the same JVP -> H_L -> VJP pipeline as amari, with no Jacobian formed
  hvp       reverse-over-reverse: torch.autograd.grad of <grad, v> (create_graph=True)
amari's figures come from its own benchmark programs (autodiff_bench BM_ratios, curvature_bench
BM_curvature_ratios, configuration 1 = mnist, float): each of their products includes recording
the forward pass, as PyTorch's do. The two sides are interleaved: each round runs both amari
programs once as subprocesses and then times PyTorch, and the table reports medians over rounds, so
slow drifts of a shared machine hit both sides alike.

    OMP_NUM_THREADS=1 /usr/bin/python3 bench/torch_mlp.py --amari-dir build/release/bench
    OMP_NUM_THREADS=1 /usr/bin/python3 bench/torch_mlp.py --amari-dir build/release/bench \
        --amari-dir-avx2 build/avx2/bench      # adds amari built with -mno-avx512f

Use /usr/bin/python3 (Debian's python3-torch) with Debian's OpenBLAS installed
(libopenblas0-openmp): Debian's torch calls whichever libblas.so.3 the system provides, and with the
reference BLAS of a bare system its matrix products are about 10x slower. Exits 0 with a message
when torch is not importable.
"""
import argparse
import os
import sys

from torch_compare import import_torch, interleaved, loss_callables, median, missing_programs, run_benchmarks, set_threads, time_call

BATCH, SIZES = 128, (784, 256, 256, 10)
PRODUCTS = ("forward", "gradient", "jvp", "ggn-vp", "hvp")


def torch_products(torch, functorch):
    """The five PyTorch callables on one fixed problem."""
    torch.manual_seed(0)
    nn = torch.nn
    layers = []
    for i in range(len(SIZES) - 1):
        layers.append(nn.Linear(SIZES[i], SIZES[i + 1]))
        if i + 2 < len(SIZES):
            layers.append(nn.Tanh())
    model = nn.Sequential(*layers)
    x = torch.randn(BATCH, SIZES[0])
    y = torch.randint(0, SIZES[-1], (BATCH,))
    fmodel, params = functorch.make_functional(model)
    params = tuple(p.detach() for p in params)
    v = tuple(torch.randn_like(p) for p in params)
    loss_fn = torch.nn.functional.cross_entropy

    def logits_of(*ps):
        return fmodel(ps, x)

    def loss_of(*ps):
        return loss_fn(fmodel(ps, x), y)

    forward, gradient = loss_callables(torch, model, x, y)

    def jvp():
        return functorch.jvp(loss_of, params, v)[1].item()

    def ggn_vp():
        z, jv = functorch.jvp(logits_of, params, v)
        p = torch.softmax(z, dim=1)
        hjv = (p * jv - p * (p * jv).sum(dim=1, keepdim=True)) / BATCH
        _, pullback = functorch.vjp(logits_of, *params)
        return pullback(hjv)

    def hvp():
        ps = tuple(p.clone().requires_grad_(True) for p in params)
        g = torch.autograd.grad(loss_of(*ps), ps, create_graph=True)
        dot = sum((gi * vi).sum() for gi, vi in zip(g, v))
        return torch.autograd.grad(dot, ps)

    return {"forward": forward, "gradient": gradient, "jvp": jvp, "ggn-vp": ggn_vp, "hvp": hvp}


def amari_round(bench_dir, min_seconds):
    a = run_benchmarks(os.path.join(bench_dir, "autodiff_bench"), "^BM_ratios<float>/1$", min_seconds)[0]
    c = run_benchmarks(os.path.join(bench_dir, "curvature_bench"), "^BM_curvature_ratios<float>/1$", min_seconds)[0]
    f = a["f_us"] * 1e-6
    fc = c["f_us"] * 1e-6  # each program's products are relative to its own forward pass
    return {"forward": f, "gradient": f * a["vjp_over_f"], "jvp": f * a["jvp_over_f"],
            "ggn-vp": fc * c["ggn_over_f"], "hvp": fc * c["hvp_over_f"]}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--amari-dir", default=os.path.join(here, "..", "build", "release", "bench"),
                        help="folder with amari's autodiff_bench and curvature_bench programs")
    parser.add_argument("--amari-dir-avx2", default="",
                        help="optional second folder, amari configured with -DCMAKE_CXX_FLAGS=-mno-avx512f")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (medians are reported)")
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds per measurement")
    args = parser.parse_args()
    torch = import_torch("torch_mlp.py")
    if torch is None:
        return 0
    import functorch
    dirs = {"amari": args.amari_dir}
    if args.amari_dir_avx2:
        dirs["amari avx2"] = args.amari_dir_avx2
    if missing_programs("torch_mlp.py", [os.path.join(d, p) for d in dirs.values()
                                         for p in ("autodiff_bench", "curvature_bench")]):
        return 1

    threads = set_threads(torch)
    products = torch_products(torch, functorch)
    sides = {name: (lambda d=d: amari_round(d, args.min_time)) for name, d in dirs.items()}
    sides["torch"] = lambda: {k: time_call(fn, args.min_time)[0] for k, fn in products.items()}
    runs = interleaved(args.rounds, sides)
    med = {name: {k: median(rs, k) for k in PRODUCTS} for name, rs in runs.items()}
    print(f"mnist MLP {'-'.join(map(str, SIZES))}, batch {BATCH}, float32, {threads} thread(s), medians of "
          f"{args.rounds} interleaved rounds; torch {torch.__version__}")
    header = f"| product | {' | '.join(f'{n} ms' for n in runs)} | " + \
        " | ".join(f"{n} / torch" for n in dirs) + " | " + " | ".join(f"{n} / its f" for n in runs) + " |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for k in PRODUCTS:
        cells = [f"{med[n][k] * 1e3:.3f}" for n in runs]
        cells += [f"{med[n][k] / med['torch'][k]:.2f}" for n in dirs]
        cells += [f"{med[n][k] / med[n]['forward']:.2f}" for n in runs]
        print(f"| {k} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
