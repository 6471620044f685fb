"""Mutation scores of the modules that decide the result: ``python docs/mutation_run.py``.

``mutmut run`` starts one pytest process per mutant; for the modules every fit calls
(``trainer.py``, ``held_refit.py``, ...) that is hours on 2 cores.  This script uses mutmut's
mutants (generated from ``[tool.mutmut]`` in ``pyproject.toml``) and runs them in ``--workers``
long-lived processes that call ``pytest.main`` once per mutant with ``MUTANT_UNDER_TEST`` set
(mutmut's own switch):

1. *Coverage*: each module's fast tests (:data:`TESTS`) run once unmutated with mutmut's
   ``stats`` switch, recording which tests call each mutated function (as ``mutmut run`` does).
   A function's tests are those of its module's selection that call it, plus the quick ones
   (:data:`BORROWED_SECONDS`) of other modules' selections that call it.  A test that calls none
   in its process (it runs a subprocess) counts as calling every function of its module.
2. *Mutants*: each mutant runs first the test that killed the last mutant of the same function,
   then, if that passed, every test that calls the function, fastest first (as timed in 1.),
   stopping at the first failure.

A mutant is *killed* when a test fails (or cannot be collected: a mutant that breaks an object the
test modules build on import), *timeout* when its tests run past ``--timeout`` seconds
(a mutant that never ends a loop), *no tests* when no selected test calls its function, else it
*survived*.  Results go to ``mutants/scores.json`` (mutant -> status) and the wall time per phase
to ``mutants/timing.json``; ``mutmut show NAME`` prints a mutant's diff.

    rm -rf mutants && python docs/mutation_run.py              # generate, then run all
    python docs/mutation_run.py --only trainer,search          # some modules, reusing mutants/
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "mutants"
SCORES = MUTANTS / "scores.json"
TIMING = MUTANTS / "timing.json"
# No traceback (formatting one costs seconds per killed mutant) and no unraisableexception plugin
# (its gc.collect() at the end of each session costs 0.3 s of a 0.4 s call).
PYTEST_ARGS = ["-q", "--tb=no", "-p", "no:cacheprovider", "-p", "no:unraisableexception", "-m", "not slow"]

#: Tests of test_elbo.py that take half a minute each (Monte Carlo averages of whole bounds).
ELBO_SLOW = ["--deselect=tests/test_elbo.py::test_minibatch_elbo_is_unbiased_for_the_full_one",
             "--deselect=tests/test_elbo.py::test_local_edge_gradient_is_exact_for_two_variables_where_straight_through_is_noisy"]

#: Whole fits of tests/test_order_search.py (20 s to minutes each): the order rounds' records and
#: defaults, and the complete DAG the penalty loop prunes.
ORDER_SEARCH_SLOW = [
    "--deselect=tests/test_order_search.py::test_fit_records_each_order_round_and_stops_at_the_first_not_kept",
    "--deselect=tests/test_order_search.py::test_order_refit_rounds_default_to_3_with_interventions_to_find_for_the_linear_density",
    "--deselect=tests/test_order_search.py::test_the_order_search_and_the_order_refit_recover_a_complete_dag_that_the_penalty_loop_prunes",
]

#: The fast tests of each module: its value tests and the single whole fits that check its rules.
TESTS: Dict[str, List[str]] = {
    "elbo": ["tests/test_values_elbo.py", "tests/test_values_elbo_extra.py", "tests/test_trace_elbo.py",
             "--deselect=tests/test_trace_elbo.py::test_readme_training_loop_runs_and_its_loss_falls"],
    "distributions": ["tests/test_values_distributions.py", "tests/test_two_cycles.py",
                      "--deselect=tests/test_two_cycles.py::test_local_edge_gradient_is_exact_for_the_two_cycle_free_law"],
    "priors": ["tests/test_values_priors.py"],
    "acyclicity": ["tests/test_values_acyclicity.py", "tests/test_acyclicity.py"],
    "metrics": ["tests/test_metrics.py"],
    "io": ["tests/test_values_io.py", "tests/test_io.py"],
    "trainer": ["tests/test_values_trainer.py", "tests/test_values_acceptance.py",
                "tests/test_fit.py::test_divergence_stops_and_keeps_the_last_good_state",
                "tests/test_fit.py::test_a_step_far_below_the_recent_elbos_updates_only_the_edges",
                "tests/test_fit.py::test_resuming_from_a_checkpoint_gives_the_same_result",
                "tests/test_checkpoint.py::test_checkpoints_hold_plain_data_only",
                "tests/test_checkpoint.py::test_sigint_waits_for_the_step_and_resume_gives_the_same_fit"],
    "preprocessing": ["tests/test_values_preprocessing.py", "tests/test_fit.py::test_bad_inputs_are_refused_with_the_place",
                      "tests/test_reliability.py::test_huge_values_standardise_like_ordinary_ones",
                      "tests/test_reliability.py::test_subnormal_and_nearly_constant_columns_are_refused",
                      "tests/test_reliability.py::test_the_api_refuses_what_the_cli_refuses",
                      "tests/test_reliability.py::test_dataframes_keep_their_names_and_tensors_may_require_grad"],
    "search": ["tests/test_search.py", "tests/test_values_acceptance.py::test_edge_search_refuses_a_neighbour_that_only_ties",
               "tests/test_config.py::test_the_edge_search_runs_by_default_on_two_variables_only"],
    "held_refit": ["tests/test_values_held.py", "tests/test_order_search.py", *ORDER_SEARCH_SLOW,
                   "tests/test_values_acceptance.py::test_fit_keeps_the_held_refit_only_when_its_bound_is_higher"],
    "likelihood": ["tests/test_elbo.py", "tests/test_values_elbo.py", "tests/test_densities.py", "tests/test_posterior.py",
                   *ELBO_SLOW],
    "densities.linear": ["tests/test_densities.py", "tests/test_elbo.py", "tests/test_values_elbo.py", *ELBO_SLOW],
    "densities.base": ["tests/test_densities.py", "tests/test_values_densities.py"],
    "densities.conditioner": ["tests/test_densities.py", "tests/test_values_densities.py"],
    "densities.mlp": ["tests/test_densities.py", "tests/test_values_densities.py"],
    "densities.flow": ["tests/test_densities.py", "tests/test_values_densities.py"],
    "config": ["tests/test_values_config.py",
               "tests/test_config.py::test_the_edge_prior_default_is_the_searchs_and_a_given_one_is_kept"],
    "order_search": ["tests/test_order_search.py", "tests/test_values_held.py", *ORDER_SEARCH_SLOW],
    "profile_mixture": ["tests/test_profile_mixture.py",
                        "--deselect=tests/test_profile_mixture.py::test_fit_moves_the_targets_in_the_first_order_refit_round_only_unless_turned_off"],
}


class _Record:
    """pytest plugin: the tests that ran and failed, and the mutated functions each test called."""

    def __init__(self):
        self.ran: List[str] = []
        self.failed: List[str] = []
        self.calls: Dict[str, set] = collections.defaultdict(set)
        self.seconds: Dict[str, float] = collections.defaultdict(float)
        self.current = None

    def pytest_runtest_logstart(self, nodeid, location):
        self.current = nodeid
        self.ran.append(nodeid)

    def pytest_runtest_logreport(self, report):
        self.seconds[report.nodeid] += report.duration
        if report.failed and report.nodeid not in self.failed:
            self.failed.append(report.nodeid)

    def hit(self, function: str, caller=None) -> None:
        if self.current is not None:
            self.calls[self.current].add(function)


def mutant_names(module: str) -> List[str]:
    """Every mutant of ``pyro_causal/<module>.py`` that mutmut generated."""
    meta = json.loads(_meta(module).read_text(encoding="utf-8"))
    return sorted(meta["exit_code_by_key"], key=lambda name: (_function(name), int(name.rsplit("_", 1)[1])))


def _meta(module: str) -> Path:
    """mutmut's record of ``module``'s mutants (``densities.linear`` -> ``densities/linear.py.meta``)."""
    return MUTANTS / "pyro_causal" / f"{module.replace('.', '/')}.py.meta"


def _module(mutant: str) -> str:
    """The module of :data:`TESTS` a mutant's name belongs to (``pyro_causal.<module>.<function>``)."""
    return next(m for m in sorted(TESTS, key=len, reverse=True) if mutant.startswith(f"pyro_causal.{m}."))


def _function(mutant: str) -> str:
    """The mutated function of a mutant's name (the name mutmut's ``stats`` switch records)."""
    return mutant.split("__mutmut_")[0]


def _pytest(args: List[str], record: _Record) -> int:
    import pytest

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return int(pytest.main([*PYTEST_ARGS, *args], plugins=[record]))


def _enter_mutants() -> None:
    os.chdir(MUTANTS)
    sys.path.insert(0, str(MUTANTS))
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def coverage(module: str, out_file: str) -> None:
    """Run ``module``'s tests unmutated; write each test's seconds and the mutated functions it calls."""
    _enter_mutants()
    import mutmut.mutation.trampoline as trampoline

    record = _Record()
    trampoline.record_trampoline_hit = record.hit
    os.environ["MUTANT_UNDER_TEST"] = "stats"
    code = _pytest([f"--basetemp={MUTANTS / f'tmp_{module}'}", *TESTS[module]], record)
    if code != 0:
        raise SystemExit(f"the tests of {module} fail without a mutant (pytest exit {code})")
    calls = {test: sorted(record.calls[test]) for test in record.ran}
    Path(out_file).write_text(json.dumps({"seconds": record.seconds, "calls": calls}, indent=0), encoding="utf-8")


#: Seconds under which a test of another module's selection is also run for a function it calls.
BORROWED_SECONDS = 2.0


def tests_by_function(modules: List[str]) -> Dict[str, List[str]]:
    """``{function: tests}`` from the coverage passes, fastest first: the tests of the function's
    module that call it, the tests of other modules' selections that call it and take under
    :data:`BORROWED_SECONDS`, and the tests of its module that call no mutated function in their
    process (they run a subprocess); ``"<module>.*"``: those alone."""
    passes = {m: json.loads((MUTANTS / f"coverage_{m}.json").read_text(encoding="utf-8")) for m in modules}
    seconds = {t: v for p in passes.values() for t, v in p["seconds"].items()}
    result = {}
    for module, own in passes.items():
        prefix = f"pyro_causal.{module}."
        silent = {t for t, functions in own["calls"].items() if not functions}
        callers: Dict[str, set] = collections.defaultdict(lambda: set(silent))
        for other, p in passes.items():
            for test, functions in p["calls"].items():
                if other == module or seconds[test] < BORROWED_SECONDS:
                    for function in functions:
                        if function.startswith(prefix):
                            callers[function].add(test)
        result[f"{prefix}*"] = sorted(silent, key=seconds.get)
        result.update({f: sorted(tests, key=seconds.get) for f, tests in callers.items()})
    return result


def worker(names_file: str, out_file: str, timeout: float) -> None:
    """Run the mutants listed in ``names_file`` one after another in this process."""
    _enter_mutants()

    def alarm(signum, frame):
        raise TimeoutError(f"mutant ran past {timeout} s")

    signal.signal(signal.SIGALRM, alarm)
    tests = json.loads((MUTANTS / "coverage.json").read_text(encoding="utf-8"))
    basetemp = f"--basetemp={Path(out_file).with_suffix('.tmp')}"  # one per worker: no shared clean-up
    killer: Dict[str, str] = {}
    done = {}
    for name in json.loads(Path(names_file).read_text(encoding="utf-8")):
        module, function = _module(name), _function(name)
        calling = tests.get(function, tests[f"pyro_causal.{module}.*"])
        os.environ["MUTANT_UNDER_TEST"] = name
        start = time.time()
        signal.alarm(int(timeout))
        status = "no tests" if not calling else "survived"
        try:
            first = [killer[function]] if function in killer else []
            for selection in first, [test for test in calling if test not in first]:
                if not selection or status == "killed":
                    continue
                record = _Record()
                code = _pytest(["-x", basetemp, *selection], record)
                if code == 1:
                    status, killer[function] = "killed", record.failed[0] if record.failed else selection[0]
                elif code in (2, 4):  # the tests, collected unmutated, cannot be collected: killed
                    status = "killed"
                elif code != 0:
                    status = f"pytest exit {code}"
        except TimeoutError:
            status = "timeout"
        except Exception as error:  # pytest itself failed (not a test): recorded, the run goes on
            status = f"error: {type(error).__name__}"
        finally:
            signal.alarm(0)
        done[name] = status
        Path(out_file).write_text(json.dumps(done, indent=0, ensure_ascii=False), encoding="utf-8")
        print(f"{status:>9} {time.time() - start:5.1f}s {name}", flush=True)


def _run_all(commands: List[List[str]], workers: int) -> None:
    """Run the commands, at most ``workers`` at once; raise if one fails."""
    pending, running = list(commands), []
    while pending or running:
        while pending and len(running) < workers:
            running.append(subprocess.Popen([sys.executable, __file__, *pending.pop(0)]))
        time.sleep(0.5)
        for process in [p for p in running if p.poll() is not None]:
            running.remove(process)
            if process.returncode != 0:
                raise SystemExit(f"{' '.join(process.args[2:])} failed (exit {process.returncode})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated modules of TESTS (default all)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds per mutant")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--coverage", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(*args.worker, args.timeout)
        return 0
    if args.coverage:
        coverage(*args.coverage)
        return 0
    os.chdir(ROOT)
    modules = args.only.split(",") if args.only else list(TESTS)
    unknown = sorted(set(modules) - set(TESTS))
    if unknown:
        parser.error(f"unknown module(s) {unknown}; choose from {', '.join(TESTS)}")
    timing = json.loads(TIMING.read_text(encoding="utf-8")) if TIMING.exists() else {}
    start = time.time()
    from mutmut.__main__ import create_mutants
    from mutmut.utils.file_utils import copy_also_copy_files, copy_src_dir

    with contextlib.redirect_stdout(io.StringIO()):
        copy_src_dir()
        copy_also_copy_files()  # the tests and pyproject.toml as they are now
        # every module's mutants: the coverage pass below records calls only through their trampolines
        if not all(_meta(m).exists() for m in TESTS):
            create_mutants(args.workers)
    timing["generate"] = round(time.time() - start, 1)
    start = time.time()
    # every module's selection, also with --only: the tests borrowed are then the same as in a whole run
    _run_all([["--coverage", m, str(MUTANTS / f"coverage_{m}.json")] for m in TESTS], args.workers)
    (MUTANTS / "coverage.json").write_text(json.dumps(tests_by_function(list(TESTS)), indent=0), encoding="utf-8")
    timing["coverage"] = round(time.time() - start, 1)
    names = [name for module in modules for name in mutant_names(module)]
    start = time.time()
    outs = [(MUTANTS / f"worker{i}.json", MUTANTS / f"worker{i}_results.json") for i in range(args.workers)]
    for i, (listed, out) in enumerate(outs):
        listed.write_text(json.dumps(names[i::args.workers]), encoding="utf-8")
        out.unlink(missing_ok=True)
    try:
        _run_all([["--timeout", str(args.timeout), "--worker", str(listed), str(out)] for listed, out in outs], args.workers)
    finally:
        scores = json.loads(SCORES.read_text(encoding="utf-8")) if SCORES.exists() else {}
        for _, out in outs:
            scores.update(json.loads(out.read_text(encoding="utf-8")) if out.exists() else {})
        SCORES.write_text(json.dumps(scores, indent=0, ensure_ascii=False), encoding="utf-8")
    timing["mutants"] = round(time.time() - start, 1)
    timing["modules"], timing["workers"] = modules, args.workers
    TIMING.write_text(json.dumps(timing, indent=0), encoding="utf-8")
    counts = collections.defaultdict(collections.Counter)
    for name, status in scores.items():
        counts[_module(name)][status] += 1
    for module, count in sorted(counts.items()):
        print(f"{module}: {sum(count.values())} mutants, " + ", ".join(f"{v} {k}" for k, v in sorted(count.items())))
    print("seconds: " + ", ".join(f"{k} {timing[k]}" for k in ("generate", "coverage", "mutants")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
