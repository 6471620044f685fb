"""Mutation scores of the modules whose functions every fit calls: ``python docs/mutation_run.py``.

``mutmut run`` starts one pytest process per mutant and runs every selected test that touches the
mutated function; for ``trainer.py``, ``search.py``, ``held_refit.py`` and ``preprocessing.py``
(about 1300 mutants, most functions touched by every test that trains) that is hours on 2 cores.
This script uses mutmut's mutants (``mutmut.__main__.create_mutants``, configured in
``pyproject.toml``) and runs each module's mutants against that module's own fast tests
(:data:`TESTS`), in ``--workers`` long-lived processes that call ``pytest.main`` once per mutant
with ``MUTANT_UNDER_TEST`` set (mutmut's own switch).  A mutant is *killed* when a test fails,
*timeout* when the tests run past ``--timeout`` seconds (a mutant that never ends a loop), else it
*survived*.  Results go to ``mutants/scores.json``; ``mutmut show NAME`` prints a mutant's diff.

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

#: The fast tests of each module, run for each of its mutants (stops at the first failure).
TESTS: Dict[str, List[str]] = {
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
    "held_refit": ["tests/test_values_held.py", "tests/test_order_search.py",
                   "--deselect=tests/test_order_search.py::test_fit_records_each_order_round_and_stops_at_the_first_not_kept",
                   "--deselect=tests/test_order_search.py::test_order_refit_runs_by_default_only_where_regimes_are_given",
                   "tests/test_values_acceptance.py::test_fit_keeps_the_held_refit_only_when_its_bound_is_higher"],
}


def mutant_names(module: str) -> List[str]:
    """Every mutant of ``pyro_causal/<module>.py`` that mutmut generated."""
    meta = json.loads((MUTANTS / "pyro_causal" / f"{module}.py.meta").read_text(encoding="utf-8"))
    return sorted(meta["exit_code_by_key"], key=lambda name: (name.split("__mutmut_")[0], int(name.rsplit("_", 1)[1])))


def worker(names_file: str, out_file: str, timeout: float) -> None:
    """Run the mutants listed in ``names_file`` one after another in this process."""
    os.chdir(MUTANTS)
    sys.path.insert(0, str(MUTANTS))
    os.environ["OMP_NUM_THREADS"] = "1"
    import pytest
    import torch

    torch.set_num_threads(1)

    def alarm(signum, frame):
        raise TimeoutError(f"mutant ran past {timeout} s")

    signal.signal(signal.SIGALRM, alarm)
    done = {}
    for name in json.loads(Path(names_file).read_text(encoding="utf-8")):
        os.environ["MUTANT_UNDER_TEST"] = name
        start = time.time()
        signal.alarm(int(timeout))
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                code = int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-m", "not slow", *TESTS[name.split(".")[1]]]))
        except TimeoutError:
            code = -1
        finally:
            signal.alarm(0)
        done[name] = "timeout" if code == -1 else "survived" if code == 0 else "killed" if code == 1 else f"pytest exit {code}"
        Path(out_file).write_text(json.dumps(done, indent=0, ensure_ascii=False), encoding="utf-8")
        print(f"{done[name]:>9} {time.time() - start:5.1f}s {name}", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated modules of TESTS (default all)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds per mutant")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(*args.worker, args.timeout)
        return 0
    os.chdir(ROOT)
    modules = args.only.split(",") if args.only else list(TESTS)
    if not all((MUTANTS / "pyro_causal" / f"{m}.py.meta").exists() for m in modules):
        from mutmut.__main__ import create_mutants

        create_mutants(args.workers)
    names = [name for module in modules for name in mutant_names(module)]
    parts = []
    for i in range(args.workers):
        listed, out = MUTANTS / f"worker{i}.json", MUTANTS / f"worker{i}_results.json"
        listed.write_text(json.dumps(names[i::args.workers]), encoding="utf-8")
        parts.append((out, subprocess.Popen([sys.executable, __file__, "--timeout", str(args.timeout),
                                             "--worker", str(listed), str(out)])))
    scores = json.loads(SCORES.read_text(encoding="utf-8")) if SCORES.exists() else {}
    for out, process in parts:
        process.wait()
        scores.update(json.loads(out.read_text(encoding="utf-8")) if out.exists() else {})
    SCORES.write_text(json.dumps(scores, indent=0, ensure_ascii=False), encoding="utf-8")
    counts = collections.defaultdict(collections.Counter)
    for name, status in scores.items():
        counts[name.split(".")[1]][status] += 1
    for module, count in sorted(counts.items()):
        print(f"{module}: {sum(count.values())} mutants, " + ", ".join(f"{v} {k}" for k, v in sorted(count.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
