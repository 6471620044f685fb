"""Seconds and achieved matmul throughput of ``log_prob`` forward + backward for every density family.

Usage::

    python bench/bench_densities.py [--n 8000 --d 10 --k 12 --h 32 --threads 2]

FLOPs are counted analytically from the matrix products only (elementwise work such as
activations, log-sigmoids and log-sum-exps is free in this count), forward plus backward:
each product ``(m, k) @ (k, p)`` costs ``2 m k p`` forward, the same again for the weight
gradient, and once more for the input gradient unless the input is the data ``x``.  The
fraction is relative to a large ``torch.mm`` measured in the same run.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from pyro_causal.densities import make_density
from pyro_causal.densities.conditioner import StackedConditioner

FAMILIES = ("linear", "mlp", "flow")


def conditioner_flops(net: StackedConditioner, n: int, components: int) -> float:
    """Forward + backward FLOPs of the stacked networks on an ``(n, d)`` x."""
    d, h, hidden, m = net.num_variables, net.embedding_dim, net.hidden, net.out_features
    data = 2 * n * d * d * hidden * 2  # x needs no gradient
    context = 2 * components * d * h * hidden * 3
    deep = 2 * components * n * d * hidden * hidden * (net.layers - 1) * 3
    out = 2 * components * n * d * hidden * m * 3
    return data + context + deep + out


def density_flops(density: torch.nn.Module, n: int, components: int) -> float:
    if hasattr(density, "conditioner"):
        return conditioner_flops(density.conditioner, n, components)
    d = density.num_variables  # LinearGaussian: embedding MLP plus one (n, d) @ (d, d) per component
    first, last = density.net[0], density.net[-1]
    embedding = 2 * components * (first.in_features * first.out_features + last.in_features * last.out_features)
    return embedding * 3 + 2 * components * n * d * d * 2


def describe(density: torch.nn.Module) -> str:
    if not hasattr(density, "conditioner"):
        return f"embedding network width {density.net[0].out_features}"
    net = density.conditioner
    text = f"hidden {net.hidden} x {net.layers} layers"
    if hasattr(density, "flow_units"):
        text += f", F = {density.flow_units}, L = {density.flow_layers}"
    return text


def median_seconds(step, repeats: int, warmup: int) -> tuple[float, float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def matmul_peak(size: int, repeats: int) -> float:
    """Achieved float32 ``torch.mm`` GFLOP/s on ``(size, size)`` matrices."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    seconds, _ = median_seconds(lambda: torch.mm(a, b), repeats, warmup=2)
    return 2 * size**3 / seconds / 1e9


def bench_family(name: str, n: int, d: int, k: int, h: int, repeats: int, warmup: int, threads: int) -> dict:
    """Run in a fresh process: the peak resident memory then belongs to this family alone."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    density = make_density(name, d, h)
    x = torch.randn(n, d)
    mask = torch.triu(torch.bernoulli(torch.full((d, d), 0.5)), 1).requires_grad_()  # straight-through graph
    embeddings = torch.randn(k, h, requires_grad=True)

    def step() -> None:
        density.zero_grad(set_to_none=True)
        density.log_prob(x, mask, embeddings).sum().backward()

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seconds, fastest = median_seconds(step, repeats, warmup)
    flops = density_flops(density, n, k)
    return {
        "configuration": describe(density),
        "peak_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) / 1024,
        "name": name,
        "parameters": sum(p.numel() for p in density.parameters()),
        "seconds": seconds,
        "fastest": fastest,
        "gflop": flops / 1e9,
        "gflops": flops / seconds / 1e9,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8000)
    parser.add_argument("--d", type=int, default=10)
    parser.add_argument("--k", type=int, default=12, help="mixture components C")
    parser.add_argument("--h", type=int, default=32, help="embedding size")
    parser.add_argument("--threads", type=int, nargs="+", default=[2], help="one table block per count")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--mm-size", type=int, default=2048)
    parser.add_argument("--output", type=Path, default=Path("docs/benchmarks_densities.md"))
    args = parser.parse_args(argv)

    lines = [
        "| threads | density | configuration | parameters | s / fwd+bwd (median) | fastest | GFLOP (matmul) "
        "| GFLOP/s | % of mm peak | extra peak RSS (MiB) |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        load = os.getloadavg()[0]
        peak = matmul_peak(args.mm_size, args.repeats)
        options = (args.n, args.d, args.k, args.h, args.repeats, args.warmup, threads)
        with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
            rows = [pool.apply(bench_family, (name, *options)) for name in FAMILIES]
        peak_after = matmul_peak(args.mm_size, args.repeats)  # a drift means a noisy machine
        notes.append(
            f"- {threads} thread(s): `torch.mm` {peak:.1f} GFLOP/s before the densities (the reference), "
            f"{peak_after:.1f} after; 1-minute load average at the start {load:.2f}"
        )
        for row in rows:
            lines.append(
                f"| {threads} | {row['name']} | {row['configuration']} | {row['parameters']} | "
                f"{row['seconds']:.4f} | {row['fastest']:.4f} | {row['gflop']:.3f} | {row['gflops']:.2f} | "
                f"{100 * row['gflops'] / peak:.1f}% | {row['peak_mib']:.0f} |"
            )
    table, notes = "\n".join(lines), "\n".join(notes)
    command = "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    report = f"""# Density benchmarks: `log_prob` forward + backward

n = {args.n}, d = {args.d}, C = K = {args.k}, h = {args.h}; default hyper-parameters of each family
(column "configuration"); random DAG mask with straight-through gradient; float32; median of
{args.repeats} repeats after {args.warmup} warm-up steps; each family in a fresh process (extra peak
RSS = peak resident memory of the steps above the set-up).

{table}

GFLOP counts only the matrix products, forward + backward (see the docstring of
`bench/bench_densities.py`); activations, log-sigmoids and log-sum-exps are memory-bound
elementwise work outside the count, which is why the fraction of the float32 `torch.mm`
({args.mm_size} x {args.mm_size}) throughput is small:

{notes}

On a shared machine (load average above the core count) every OpenMP region waits for its
descheduled threads, so 2 threads can be slower than 1: compare the blocks and the load.

- machine: {platform.platform()}, `{cpu_model()}`, os.cpu_count() = {os.cpu_count()}
- python {platform.python_version()}, torch {torch.__version__}
- command: `{command}`
"""
    print(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)


if __name__ == "__main__":
    main()
