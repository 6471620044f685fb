"""How the cost of one training step grows with rows n, components K and variables d.

Usage::

    python bench/bench_scaling.py timing [--repeats 10] [--plot docs/scaling.png]
    python bench/bench_scaling.py quality --variables 50 --edges-per-node 1 --samples 5000 \\
        --batch-size 1024 --first-round-steps 1500 --round-steps 300 --max-rounds 8

``timing`` measures, for each configuration in its own fresh process (one torch thread), the
median wall time of a :meth:`Trainer.step` after warm-up and the peak resident memory added by
training (``ru_maxrss`` after the steps minus the resident size before them), full batch and with
``--batch-size 1024``; it prints a Markdown table and the log-log slopes, and draws a plot.
The data are standard normal: the per-step cost of the closed-form ELBO does not depend on them.
``quality`` fits one simulated problem and prints its structural Hamming distance.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Dict, List, Optional

import numpy as np

BASE = dict(n=4000, K=12, d=10)
BATCHES = (None, 1024)


def grid() -> List[Dict[str, int]]:
    """One factor at a time around ``BASE``; ``d`` also at its default ``K = min(d + 2, 32)``."""
    points = [dict(BASE, n=n) for n in (1000, 4000, 16000)]
    points += [dict(BASE, K=K) for K in (4, 32)]
    points += [dict(BASE, d=d) for d in (50, 100)]
    points += [dict(BASE, d=d, K=min(d + 2, 32)) for d in (50, 100)]
    return points


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(n: int, K: int, d: int, batch: Optional[int], repeats: int, assignment: str = "optimal", warmup: int = 3) -> dict:
    """Median step seconds and peak extra memory (MiB) of one configuration (run in a fresh process)."""
    import torch

    from pyro_causal import LatentInterventionModel, Trainer, TrainingConfig
    from timing import median_step_seconds

    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.randn(n, d)
    model = LatentInterventionModel(d, truncation=K)
    with torch.no_grad():  # the tabled setting: edges start at the prior's logit
        model.guide.edge_logits.fill_(-2.0)
    trainer = Trainer(model, x, config=TrainingConfig(batch_size=batch, assignment=assignment))
    base, peak_before = _rss_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    seconds = median_step_seconds(trainer, warmup=warmup, repeats=repeats)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "n": n, "K": K, "d": d, "batch": batch, "assignment": assignment, "seconds": seconds,
        "memory_mib": max(peak - base, 0) / 2**20, "memory_exact": peak > peak_before,
    }


def run_grid(repeats: int, assignment: str) -> List[dict]:
    rows = []
    for point in grid():
        for batch in BATCHES:
            spec = json.dumps(dict(point, batch=batch, repeats=repeats, assignment=assignment))
            done = subprocess.run([sys.executable, __file__, "_one", spec], capture_output=True, text=True,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"# {rows[-1]}", file=sys.stderr)
    return rows


def slope(rows: List[dict], key: str, batch: Optional[int], **fixed) -> float:
    """Least-squares slope of log(seconds) on log(key) over rows matching ``fixed`` and ``batch``."""
    chosen = [r for r in rows if r["batch"] == batch and all(r[k] == v for k, v in fixed.items())]
    xs = np.log([r[key] for r in chosen])
    ys = np.log([r["seconds"] for r in chosen])
    return float(np.polyfit(xs, ys, 1)[0])


SERIES = {  # key: the other factors held fixed
    "n": dict(K=BASE["K"], d=BASE["d"]),
    "K": dict(n=BASE["n"], d=BASE["d"]),
    "d": dict(n=BASE["n"], K=BASE["K"]),
}


def markdown(rows: List[dict]) -> str:
    lines = ["| n | K | d | batch | ms / step | peak extra memory (MiB) |", "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        batch = "full" if r["batch"] is None or r["batch"] >= r["n"] else r["batch"]
        mark = "" if r["memory_exact"] else " *"
        lines.append(f"| {r['n']} | {r['K']} | {r['d']} | {batch} | {1e3 * r['seconds']:.2f} | {r['memory_mib']:.1f}{mark} |")
    lines += ["", "| factor | slope, full batch | slope, batch 1024 |", "|---|---:|---:|"]
    for key, fixed in SERIES.items():
        lines.append(f"| {key} | {slope(rows, key, None, **fixed):.2f} | {slope(rows, key, 1024, **fixed):.2f} |")
    return "\n".join(lines)


def plot(rows: List[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    for ax, (key, fixed) in zip(axes, SERIES.items()):
        for batch, style in zip(BATCHES, ("o-", "s--")):
            chosen = sorted((r for r in rows if r["batch"] == batch and all(r[k] == v for k, v in fixed.items())),
                            key=lambda r: r[key])
            label = f"{'full batch' if batch is None else f'batch {batch}'} (slope {slope(rows, key, batch, **fixed):.2f})"
            ax.loglog([r[key] for r in chosen], [1e3 * r["seconds"] for r in chosen], style, label=label)
        others = ", ".join(f"{k}={v}" for k, v in fixed.items())
        ax.set(xlabel=f"{key} (log scale)", ylabel="ms per step (log scale)", title=f"step time vs {key} ({others})")
        ax.set_xticks(sorted({r[key] for r in rows if all(r[k] == v for k, v in fixed.items())}))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.legend(fontsize=8)
    ax = axes[3]
    for batch, style in zip(BATCHES, ("o-", "s--")):
        chosen = sorted((r for r in rows if r["batch"] == batch and r["K"] == BASE["K"] and r["d"] == BASE["d"]),
                        key=lambda r: r["n"])
        ax.plot([r["n"] for r in chosen], [r["memory_mib"] for r in chosen], style,
                label="full batch" if batch is None else f"batch {batch}")
    ax.set(xlabel="n", ylabel="peak extra memory (MiB)", title=f"memory vs n (K={BASE['K']}, d={BASE['d']})")
    ax.set_xticks([1000, 4000, 16000])
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def machine() -> str:
    import torch

    from pyro_causal.resources import cpu_description

    return f"{cpu_description()}, {os.cpu_count()} cores visible, Python {platform.python_version()}, torch {torch.__version__}, 1 thread"


def _fit_from(x, init_edge_logit: float, seed: int, callbacks, *, batch_size, config):
    """``fit`` (linear density, defaults) with ``q(A)`` started at ``sigmoid(init_edge_logit)`` instead of 1/2."""
    import pyro
    import torch

    from dataclasses import replace

    from pyro_causal import LatentInterventionModel, Trainer
    from pyro_causal.api import prepare_data

    data, _, _ = prepare_data(x)
    pyro.set_rng_seed(seed)
    model = LatentInterventionModel(data.shape[1])
    with torch.no_grad():
        model.guide.edge_logits.fill_(init_edge_logit)
    training = replace(config.training, batch_size=batch_size)
    trainer = Trainer(model, torch.as_tensor(data, dtype=torch.float32), config=training, callbacks=callbacks)
    stop = trainer.run()
    return model.guide.edge_probs().detach().numpy(), trainer.step_count, stop, trainer.h_trace[-1]


def quality(args) -> dict:
    import torch

    from pyro_causal import FitConfig, PenaltySchedule, TrainingConfig, dag_from_probabilities, fit, simulate
    from pyro_causal.metrics import evaluate

    torch.set_num_threads(args.threads)
    data = simulate(num_variables=args.variables, edges_per_node=args.edges_per_node, num_samples=args.samples,
                    seed=args.seed)
    schedule = PenaltySchedule(first_round_steps=args.first_round_steps, round_steps=args.round_steps,
                               max_rounds=args.max_rounds)
    rounds = []
    record = lambda event: rounds.append((event.step, f"{event.h:.3g}", f"{event.penalty:.0e}")) if event.kind == "round" else None  # noqa: E731
    options = dict(batch_size=args.batch_size, config=FitConfig(training=TrainingConfig(
        schedule=schedule, learning_rate=args.learning_rate, assignment=args.assignment)))
    start = time.perf_counter()
    if args.init_edge_logit is None:
        result = fit(data.x, seed=args.seed, callbacks=[record], **options)
        edge_probs, steps, stop, h_last = result.edge_probs, len(result.elbo_trace), result.stop_reason, result.h_trace[-1:].sum() if len(result.h_trace) else float("nan")
    else:
        edge_probs, steps, stop, h_last = _fit_from(data.x, args.init_edge_logit, args.seed, [record], **options)
    adjacency = dag_from_probabilities(edge_probs)
    metrics = evaluate(data.adjacency, adjacency)
    probs = edge_probs[~np.eye(args.variables, dtype=bool)]
    return {"d": args.variables, "edges_per_node": args.edges_per_node, "n": args.samples,
            "true_edges": int(data.adjacency.sum()), "estimated_edges": int(adjacency.sum()), "steps": steps,
            "stop": stop, "seconds": round(time.perf_counter() - start, 1), "final_h": float(h_last),
            "learning_rate": args.learning_rate, "assignment": args.assignment, "init_edge_logit": args.init_edge_logit, "max_edge_prob": float(probs.max()),
            "mean_edge_prob": float(probs.mean()), "rounds (step, h, penalty)": rounds,
            **{k: metrics[k] for k in ("shd", "hamming", "tp", "fp", "fn", "reversed", "f1")}}


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    timing = commands.add_parser("timing")
    timing.add_argument("--repeats", type=int, default=10)
    timing.add_argument("--assignment", default="optimal", choices=("optimal", "amortized"))
    timing.add_argument("--plot", default="docs/scaling.png")
    timing.add_argument("--json", help="also write the measurements here")
    timing.add_argument("--from-json", help="plot and tabulate saved measurements instead of measuring")
    one = commands.add_parser("_one")
    one.add_argument("spec")
    q = commands.add_parser("quality")
    q.add_argument("--variables", type=int, default=50)
    q.add_argument("--edges-per-node", type=float, default=1.0)
    q.add_argument("--samples", type=int, default=5000)
    q.add_argument("--batch-size", type=int, default=1024)
    q.add_argument("--first-round-steps", type=int, default=1500)
    q.add_argument("--round-steps", type=int, default=300)
    q.add_argument("--max-rounds", type=int, default=8)
    q.add_argument("--learning-rate", type=float, default=1e-2)
    q.add_argument("--assignment", default="optimal", choices=("optimal", "amortized"))
    q.add_argument("--init-edge-logit", type=float, help="start q(A) here instead of fit's default (logit 0)")
    q.add_argument("--threads", type=int, default=1)
    q.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "_one":
        print(json.dumps(measure(**json.loads(args.spec))))
    elif args.command == "timing":
        if args.from_json:
            with open(args.from_json) as handle:
                rows = json.load(handle)
        else:
            rows = run_grid(args.repeats, args.assignment)
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(rows, handle, indent=1)
        plot(rows, args.plot)
        print(f"Machine: {machine()}\n\n{markdown(rows)}")
    else:
        print(json.dumps(quality(args)))


if __name__ == "__main__":
    main()
