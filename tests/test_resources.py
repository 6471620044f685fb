"""Threads, automatic mini-batches and progress of a fit (pyro_causal.resources, the CLI's bar and log)."""
import json
import os
import resource
import statistics
import subprocess
import sys

import pytest
import torch

from pyro_causal import AfterTraining, EdgeSearch, FitConfig, PenaltySchedule, TrainingConfig, fit, simulate
from pyro_causal.densities import DeepSigmoidalFlow, LinearGaussian, MLPGaussian
from pyro_causal.distributed import threads_per_process
from pyro_causal import resources
from pyro_causal.resources import (AUTO_BATCH_ABOVE, AUTO_BATCH_SIZES, THREADS_PAY_ABOVE, available_cores,
                                   choose_batch_size, choose_num_threads, freed_memory_kept)

TINY = PenaltySchedule(first_round_steps=20, round_steps=5, max_rounds=1)
CLI_TINY = ["--first-round-steps", "20", "--round-steps", "5", "--max-rounds", "1"]


@pytest.fixture(scope="module")
def tiny():
    return simulate(num_variables=3, edges_per_node=1.0, num_samples=200, seed=1)


@pytest.fixture
def two_threads_outside():
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(1)


def test_fit_sets_its_threads_and_restores_them(tiny, two_threads_outside):
    seen = []
    result = fit(tiny.x, callbacks=[lambda e: seen.append(torch.get_num_threads())],
                 config=FitConfig(training=TrainingConfig(schedule=TINY), num_threads=3))
    assert seen and set(seen) == {3} and result.settings["num_threads"] == 3
    assert torch.get_num_threads() == 2
    seen.clear()
    result = fit(tiny.x, callbacks=[lambda e: seen.append(torch.get_num_threads())],
                 config=FitConfig(training=TrainingConfig(schedule=TINY)))
    assert set(seen) == {1} and result.settings["num_threads"] == 1  # small steps: one thread
    assert torch.get_num_threads() == 2
    with pytest.raises(ValueError, match="num_threads must be an int >= 1 or None, got 0"):
        FitConfig(num_threads=0)


def test_threads_are_restored_when_the_fit_raises(tiny, two_threads_outside):
    class Stop(Exception):
        pass

    def stop(event):
        raise Stop

    with pytest.raises(Stop):
        fit(tiny.x, callbacks=[stop], config=FitConfig(training=TrainingConfig(schedule=TINY), num_threads=1))
    assert torch.get_num_threads() == 2


def test_the_thread_rule():
    assert choose_num_threads(10_000, 10, 12) == 1  # the default linear fit of docs/benchmarks.md
    assert choose_num_threads(1_000, 10, 12) == 1
    big = THREADS_PAY_ABOVE // (10 * 12) + 1
    assert choose_num_threads(big, 10, 12) == available_cores()
    assert choose_num_threads(big * 2, 10, 12, processes=2) == max(1, available_cores() // 2)
    assert threads_per_process([[0.0] * 10] * 50, {"config": FitConfig(num_threads=4)}, 2) == 2
    assert threads_per_process([[0.0] * 10] * 50, {"config": FitConfig(num_threads=1)}, 2) == 1  # never below one
    assert threads_per_process([[0.0] * 10] * 50, {}, 2) == 1


def test_the_batch_size_rule():
    large, small = AUTO_BATCH_ABOVE + 1, AUTO_BATCH_ABOVE
    assert choose_batch_size("linear", 10_000) == 1000 and choose_batch_size("linear", small) is None
    assert (choose_batch_size("mlp", large), choose_batch_size("flow", large)) == (500, 500)
    assert AUTO_BATCH_SIZES == {"linear": 1000, "mlp": 500, "flow": 500} and AUTO_BATCH_ABOVE == 2000
    assert choose_batch_size("mlp", small) is None and choose_batch_size("flow", small) is None
    assert choose_batch_size(LinearGaussian(3, 4), large) == 1000
    assert choose_batch_size("a density of the user's", large) is None  # unknown families: full batch
    assert choose_batch_size(MLPGaussian(3, 4), large) == 500
    assert choose_batch_size(DeepSigmoidalFlow(3, 4), large) == 500


def test_the_batch_size_used_is_recorded():
    data = simulate(num_variables=3, edges_per_node=1.0, num_samples=AUTO_BATCH_ABOVE + 100, seed=1)
    short = PenaltySchedule(first_round_steps=5, round_steps=5, max_rounds=1)
    mlp = fit(data.x, density="mlp",
              config=FitConfig(training=TrainingConfig(schedule=short), after_training=AfterTraining(held_refit=False)))
    assert mlp.settings["training"]["batch_size"] == AUTO_BATCH_SIZES["mlp"]
    linear = fit(data.x,
                 config=FitConfig(training=TrainingConfig(schedule=short), after_training=AfterTraining(held_refit=False)))
    assert linear.settings["training"]["batch_size"] == AUTO_BATCH_SIZES["linear"]
    small = fit(data.x[:AUTO_BATCH_ABOVE],
                config=FitConfig(training=TrainingConfig(schedule=short), after_training=AfterTraining(held_refit=False)))
    assert small.settings["training"]["batch_size"] is None  # full batch
    full = fit(data.x,
               density="mlp",
               batch_size=len(data.x),
               config=FitConfig(training=TrainingConfig(schedule=short), after_training=AfterTraining(held_refit=False)))
    assert full.settings["training"]["batch_size"] == len(data.x)


def test_callbacks_hear_every_phase(tiny):
    events = []
    fit(tiny.x,
        restarts=2,
        callbacks=[events.append],
        config=FitConfig(search="order", training=TrainingConfig(schedule=TINY), after_training=AfterTraining(edge_search=EdgeSearch(rounds=1, restarts=1))))
    phases = {event.phase for event in events}
    assert {"restart 1/2: random order", "restart 2/2: random order", "restart 1/2: order refit 1/3",
            "restart 1/2: held refit"} <= phases
    events.clear()
    fit(tiny.x, callbacks=[events.append], config=FitConfig(search="penalty", training=TrainingConfig(schedule=TINY)))
    loop_phases = {event.phase for event in events}  # the order refit stops at its first round not kept
    assert {"penalty", "order refit 1/3", "held refit"} <= loop_phases
    assert loop_phases <= {"penalty", "held refit", "order refit 1/3", "order refit 2/3", "order refit 3/3"}
    held = [event for event in events if event.phase.endswith("held refit")]
    assert held and all(event.total == TINY.first_round_steps for event in held)
    assert any(phase.startswith("edge search fit 1: ") for phase in phases)


def _csv(tiny, tmp_path):
    from pyro_causal.io import write_csv

    path = tmp_path / "data.csv"
    write_csv(path, tiny.names, tiny.x.tolist())
    return str(path)


def test_cli_threads_verbose_and_quiet(tiny, tmp_path, capsys):
    from pyro_causal.cli import main

    csv = _csv(tiny, tmp_path)
    for bad in ("0", "-2"):
        assert main(["fit", csv, "--out", str(tmp_path / "bad"), "--threads", bad, *CLI_TINY]) == 2
        err = capsys.readouterr().err
        assert "--threads" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()
    assert main(["fit", csv, "--out", str(tmp_path / "quiet"), "--quiet", "--threads", "1", *CLI_TINY]) == 0
    assert capsys.readouterr().err == ""
    assert json.loads((tmp_path / "quiet" / "summary.json").read_text())["settings"]["num_threads"] == 1
    assert main(["fit", csv, "--out", str(tmp_path / "verbose"), "-v", *CLI_TINY]) == 0
    err = capsys.readouterr().err
    assert "pyro_causal.api: fit: 200 rows, 3 variables" in err and "held refit" in err
    assert main(["fit", csv, "--out", str(tmp_path / "plain"), *CLI_TINY]) == 0
    assert "pyro_causal.api" not in capsys.readouterr().err  # the log only with -v


def fresh_buffer_faults(cycles: int = 5, mib: int = 16) -> int:
    """Minor page faults of allocating, writing and freeing a ``mib`` MiB tensor ``cycles`` times."""
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(cycles):
        torch.empty(mib << 18).fill_(1.0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start


needs_glibc = pytest.mark.skipif(resources._glibc() is None, reason="glibc's mallopt only")


@needs_glibc
def test_freed_memory_is_kept_inside_the_block_and_given_back_after():
    with freed_memory_kept():
        pass  # the thresholds every fit leaves behind
    outside = fresh_buffer_faults()
    if outside < 1000:
        pytest.skip("this kernel maps large buffers without a fault per 4 KiB page (huge pages)")
    with freed_memory_kept():
        fresh_buffer_faults(1)  # the heap grows once
        inside = [fresh_buffer_faults(1) for _ in range(7)]
        with freed_memory_kept():
            pass  # a nested block ends: the memory stays kept
        after_nested = [fresh_buffer_faults(1) for _ in range(7)]
    # Outside, each buffer is mapped afresh; inside, the typical buffer reuses the freed memory
    # (glibc may still place a buffer anew now and then, where small allocations split a freed
    # chunk of a fragmented heap: the median, not every buffer).
    one_buffer = outside / 5
    assert statistics.median(inside) < one_buffer / 10 and statistics.median(after_nested) < one_buffer / 10
    # The outermost block ended: the kept memory went back to the system, so the next buffer
    # faults its pages in again (whether glibc maps it or places it in a trimmed hole of the heap).
    assert fresh_buffer_faults(1) > one_buffer / 2


@needs_glibc
def test_fit_trains_with_freed_memory_kept(tiny):
    with freed_memory_kept():
        pass
    outside = fresh_buffer_faults(2)
    if outside < 1000:
        pytest.skip("this kernel maps large buffers without a fault per 4 KiB page (huge pages)")
    seen = []
    fit(tiny.x, callbacks=[lambda event: seen.append(fresh_buffer_faults(2))],
        config=FitConfig(training=TrainingConfig(schedule=TINY, log_every=5)))
    # Most events reuse the kept memory (the heap may still grow once when a phase's buffers change
    # shape); without the block every event maps its buffers afresh.
    assert len(seen) > 3 and sorted(seen[1:])[len(seen[1:]) // 2] < outside / 10


def test_cpu_description_names_the_processor_and_the_kernels_capability():
    name, capability = resources.cpu_description().rsplit(", ", 1)
    assert capability == torch.backends.cpu.get_cpu_capability()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            expected = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    except OSError:
        expected = ""
    assert name == (expected or resources.platform.processor() or resources.platform.machine())
    # the capability is ATen's dispatch, which the environment can lower (and with it the rounding)
    lowered = subprocess.run([sys.executable, "-c", "from pyro_causal.resources import cpu_description; print(cpu_description())"],
                             capture_output=True, text=True, check=True, env={**os.environ, "ATEN_CPU_CAPABILITY": "default"})
    assert lowered.stdout.strip() == f"{name}, DEFAULT"
