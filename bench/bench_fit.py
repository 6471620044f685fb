"""Seconds per SVI step and total time of a default linear fit (the setting of the core issue).

10-variable Erdos-Renyi DAG, one expected edge per node, linear Gaussian mechanisms, one
stochastic single-node intervention per variable, 10,000 rows, regimes hidden, default ``fit``.

    python bench/bench_fit.py [--seed 0] [--threads 2] [--density linear]

``--concurrent 3`` instead times, in one run, one fit alone and three at once (separate
processes started together, nothing set in their environment, as a user would run them), with
``fit``'s default threads and, with ``--compare-threads 2``, with that many threads (PyTorch's
default on a 2-core machine); ``--steps S`` times S steps per fit (one round, no held refit)
instead of whole fits.  ``--no-options`` times one fit with no options on data simulated with
``--mechanism`` (e.g. ``--density mlp --mechanism mlp``) and reports its Hamming distance.
``--baseline DIR`` times, in one run, the SVI steps of the default latent fit (``--density`` on
``--mechanism`` data) with this checkout's package and with the one in ``DIR`` (another
checkout, e.g. ``git worktree add DIR <commit>``), in alternating processes, and then one whole
default fit (one thread) with each, with the wall time of each of its phases; the steps are
those of the default fit, on its default rows per step (``resources.choose_batch_size``): the
penalty loop's and the order refit's (one order held, the exact local edge gradient where the
density provides it).  Every table records the load average before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from functools import partial

import torch

from pyro_causal import AfterTraining, FitConfig, PenaltySchedule, Trainer, TrainingConfig, fit, simulate
from pyro_causal.api import prepare_data
from pyro_causal.densities import ConditionalDensity
from pyro_causal.held_refit import order_config, order_held, random_order
from pyro_causal.metrics import hamming_distance
from pyro_causal.model import LatentInterventionModel
from pyro_causal.resources import choose_batch_size
from timing import median_step_seconds

STEPS = ("penalty", "order")


def seconds_per_step(x: torch.Tensor, density: str, repeats: int = 30, table: bool = False) -> float:
    """Median seconds of one SVI step; ``table=True`` forces the generic ``(K, n, d)`` likelihood
    table (``ConditionalDensity.component_log_prob``) instead of the density's own closed form."""
    model = LatentInterventionModel(x.shape[1], density=density)
    if table:
        model.density.component_log_prob = partial(ConditionalDensity.component_log_prob, model.density)
    trainer = Trainer(model, x, config=TrainingConfig())
    return median_step_seconds(trainer, warmup=5, repeats=repeats)


def machine() -> str:
    """The machine line of every table (imported here: a ``--baseline`` worker may run an older package)."""
    from pyro_causal.resources import cpu_description

    return f"{platform.machine()}, {cpu_description()}, {os.cpu_count()} CPUs, torch {torch.__version__}"


def load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def one_fit(args) -> dict:
    """One fit in this process (``--worker``): seconds, steps, threads and batch size used."""
    data = simulate(num_variables=10, edges_per_node=1.0, num_samples=10000, mechanism=args.mechanism, seed=args.seed)
    threads = None if args.worker_threads == "default" else int(args.worker_threads)
    config = FitConfig(num_threads=threads)
    if args.steps:
        config = FitConfig(num_threads=threads, after_training=AfterTraining(held_refit=False),
                           training=TrainingConfig(schedule=PenaltySchedule(first_round_steps=args.steps, max_rounds=1)))
    steps, spans = {}, {}  # per phase (one trainer each): the last step count, first and last event time

    def count(event) -> None:
        steps[event.phase] = max(steps.get(event.phase, 0), event.step)
        now = time.perf_counter() - start
        spans[event.phase] = (spans.get(event.phase, (now,))[0], now)

    start = time.perf_counter()
    result = fit(data.x, density=args.density, seed=args.seed, config=config, callbacks=[count])
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "steps": sum(steps.values()), "threads": result.settings["num_threads"],
            "batch_size": result.settings["training"]["batch_size"], "stop": result.stop_reason,
            "hamming": hamming_distance(data.adjacency, result.adjacency),
            "phases": {phase: [round(a, 1), round(b, 1), steps[phase]] for phase, (a, b) in spans.items()}}


def step_worker(args) -> dict:
    """Median seconds of one step of the default latent fit (``--step-worker``), one thread, on the
    default rows per step: of the penalty loop (``--step penalty``) or of an order-refit round
    (``--step order``: a random order held, the exact local edge gradient where the density has it)."""
    torch.set_num_threads(1)
    data = simulate(num_variables=10, edges_per_node=1.0, num_samples=10000, mechanism=args.mechanism, seed=args.seed)
    x = torch.as_tensor(prepare_data(data.x)[0], dtype=torch.float32)
    torch.manual_seed(args.seed)
    model = LatentInterventionModel(x.shape[1], density=args.density)
    config = TrainingConfig(batch_size=choose_batch_size(args.density, x.shape[0]))
    if args.step == "penalty":
        trainer = Trainer(model, x, config=config)
        return {"seconds": median_step_seconds(trainer, warmup=10, repeats=args.repeats)}
    with order_held(model, random_order(x.shape[1], args.seed)):
        trainer = Trainer(model, x, config=order_config(model, config))
        return {"seconds": median_step_seconds(trainer, warmup=10, repeats=args.repeats)}


def baseline(args) -> list:
    """Step times of this checkout against ``--baseline``'s, alternating processes, then one fit each."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trees = {"this checkout": here, "baseline": os.path.abspath(args.baseline)}
    times = {(name, step): [] for name in trees for step in STEPS}
    before = load()
    for _ in range(args.rounds):
        for (name, step) in times:  # this script, each tree's package (the baseline must take the same calls)
            env = dict(os.environ, PYTHONPATH=trees[name], OMP_NUM_THREADS="1")
            command = [sys.executable, os.path.abspath(__file__), "--step-worker", "--step", step, "--seed", str(args.seed),
                       "--repeats", str(args.repeats), "--density", args.density, "--mechanism", args.mechanism]
            out = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env, cwd=trees[name], check=True).stdout
            times[name, step].append(json.loads(out.strip().splitlines()[-1])["seconds"])
    middle = {key: sorted(v)[len(v) // 2] for key, v in times.items()}
    fits = {}
    for name, tree in trees.items():  # one whole default fit per tree, one thread, back to back
        env = dict(os.environ, PYTHONPATH=tree, OMP_NUM_THREADS="1")
        command = [sys.executable, os.path.abspath(__file__), "--worker", "--worker-threads", "1", "--seed", str(args.seed),
                   "--density", args.density, "--mechanism", args.mechanism]
        out = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env, cwd=tree, check=True).stdout
        fits[name] = json.loads(out.strip().splitlines()[-1])
    here_fit, base_fit = fits["this checkout"], fits["baseline"]
    lines = [
        f"Machine: {machine()}. Command: "
        f"`python bench/bench_fit.py --baseline {args.baseline} --rounds {args.rounds} --repeats {args.repeats} "
        f"--density {args.density} --mechanism {args.mechanism} --seed {args.seed}` (default latent fit, "
        f"{args.density} density, {args.mechanism} data, d = 10, n = 10,000, one thread; steps on the default rows "
        f"per step, each process the median of {args.repeats} steps, {args.rounds} alternating processes per tree "
        f"and step; then one whole default fit per tree, back to back).",
        "",
        "| | s per step, penalty loop | s per step, order refit | whole default fit (s) | steps | batch size | Hamming |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, report in fits.items():
        lines.append(f"| {name} | {middle[name, 'penalty']:.4f} | {middle[name, 'order']:.4f} | {report['seconds']:.1f} "
                     f"| {report['steps']} | {report['batch_size'] or 'all'} | {report['hamming']} |")
    lines += ["", "Phases of the whole fits (s from the fit's start to the phase's first and last progress event, steps):", "",
              "| phase | " + " | ".join(fits) + " |", "|---|" + "---|" * len(fits)]
    phases = list(dict.fromkeys(phase for report in fits.values() for phase in report["phases"]))
    for phase in phases:
        cells = [("%.1f-%.1f, %d" % tuple(report["phases"][phase])) if phase in report["phases"] else "-" for report in fits.values()]
        lines.append(f"| {phase} | " + " | ".join(cells) + " |")
    lines += ["", f"Ratios, this checkout / baseline: penalty-loop step {middle['this checkout', 'penalty'] / middle['baseline', 'penalty']:.2f}x, "
              f"order-refit step {middle['this checkout', 'order'] / middle['baseline', 'order']:.2f}x, whole fit "
              f"{here_fit['seconds'] / base_fit['seconds']:.2f}x. Load average before {before}, after {load()}."]
    return lines


def run_workers(args, how_many: int, threads: str) -> list:
    """``how_many`` fits in separate processes started together; their reports."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    command = [sys.executable, __file__, "--worker", "--worker-threads", threads, "--seed", str(args.seed),
               "--density", args.density, "--mechanism", args.mechanism, "--steps", str(args.steps)]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) for _ in range(how_many)]
    return [json.loads(worker.communicate()[0].strip().splitlines()[-1]) for worker in workers]


def concurrent(args) -> list:
    """Table rows: for each thread setting, one fit alone then ``--concurrent`` at once."""
    what = f"{args.steps} steps per fit" if args.steps else "whole default fits"
    lines = [
        f"Machine: {machine()}. Command: "
        f"`python bench/bench_fit.py --concurrent {args.concurrent} --compare-threads {args.compare_threads} "
        f"--steps {args.steps} --density {args.density} --seed {args.seed}` ({what}, {args.density} density).",
        "",
        "| threads | fits at once | threads used | steps | s per fit (each) | s per step (mean) | vs alone | load before | load after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    settings = ["default"] + ([str(args.compare_threads)] if args.compare_threads else [])
    for threads in settings:
        alone = None
        for how_many in (1, args.concurrent):
            before = load()
            reports = run_workers(args, how_many, threads)
            per_step = sum(r["seconds"] / r["steps"] for r in reports) / len(reports)
            alone = alone or per_step
            lines.append(
                f"| {threads} | {how_many} | {reports[0]['threads']} | {', '.join(str(r['steps']) for r in reports)} | "
                f"{', '.join('%.1f' % r['seconds'] for r in reports)} | {per_step:.4f} | {per_step / alone:.2f}x | "
                f"{before} | {load()} |")
            print(lines[-1], flush=True)
    return lines


def no_options(args) -> list:
    before = load()
    report = one_fit(args)
    return [
        f"Machine: {machine()}. Command: "
        f"`python bench/bench_fit.py --no-options --density {args.density} --mechanism {args.mechanism} --seed {args.seed}` "
        f"(`fit(x, density={args.density!r})`, nothing else set).",
        "",
        "| density | data | batch size used | threads used | steps | stop | total fit (s) | Hamming | load before | load after |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {args.density} | simulate(10, 1.0, 10000, {args.mechanism!r}, seed={args.seed}) | {report['batch_size']} | "
        f"{report['threads']} | {report['steps']} | {report['stop']} | {report['seconds']:.1f} | {report['hamming']} | "
        f"{before} | {load()} |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--density", default="linear")
    parser.add_argument("--mechanism", default="linear")
    parser.add_argument("--concurrent", type=int, default=0)
    parser.add_argument("--compare-threads", type=int, default=0)
    parser.add_argument("--steps", type=int, default=0)
    parser.add_argument("--no-options", action="store_true")
    parser.add_argument("--baseline", help="another checkout whose SVI step to time against this one's")
    parser.add_argument("--rounds", type=int, default=3, help="alternating processes per tree with --baseline")
    parser.add_argument("--repeats", type=int, default=100, help="steps timed per process with --baseline")
    parser.add_argument("--step-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--step", default="penalty", choices=STEPS, help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-threads", default="default", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="docs/history/benchmarks_fit.md")
    args = parser.parse_args()
    if args.worker or args.step_worker:
        print(json.dumps(one_fit(args) if args.worker else step_worker(args)))
        return
    if args.concurrent or args.no_options or args.baseline:
        lines = concurrent(args) if args.concurrent else no_options(args) if args.no_options else baseline(args)
        print("\n".join(lines))
        with open(args.out, "a", encoding="utf-8") as handle:
            handle.write("\n" + "\n".join(lines) + "\n")
        return
    torch.set_num_threads(args.threads)
    data = simulate(num_variables=10, edges_per_node=1.0, num_samples=10000, seed=args.seed)
    x = torch.as_tensor(prepare_data(data.x)[0], dtype=torch.float32)
    step = seconds_per_step(x, args.density)
    table_step = seconds_per_step(x, args.density, table=True)
    start = time.perf_counter()
    result = fit(data.x, density=args.density, seed=args.seed, config=FitConfig(num_threads=args.threads))
    total = time.perf_counter() - start
    start = time.perf_counter()
    fit(data.x, density=args.density, seed=args.seed,
        config=FitConfig(after_training=AfterTraining(held_refit=False), num_threads=args.threads))
    without_refit = time.perf_counter() - start
    refit = result.records["held_refit"]
    refit_note = (f"{result.settings['training']['schedule']['first_round_steps']}-step held refit, {'kept' if refit['kept'] else 'not kept'}"
                  if refit else "no held refit")
    lines = [
        f"Machine: {machine()}, {args.threads} threads. "
        f"Command: `python bench/bench_fit.py --seed {args.seed} --threads {args.threads} --density {args.density}`.",
        "",
        "| density | n | d | K | s per SVI step (median) | same, (K, n, d) table path | steps | total fit (s) | "
        "without the held refit (s) | stop | Hamming |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {args.density} | 10000 | 10 | {result.model.truncation} | {step:.4f} | {table_step:.4f} ({table_step / step:.1f}x) | "
        f"{len(result.elbo_trace)} + {refit_note} | "
        f"{total:.1f} | {without_refit:.1f} ({total / without_refit:.2f}x) | {result.stop_reason} | "
        f"{hamming_distance(data.adjacency, result.adjacency)} |",
    ]
    print("\n".join(lines))
    with open(args.out, "a", encoding="utf-8") as handle:
        handle.write("\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
