"""Checkpoint and resume: a run interrupted by a real SIGINT and resumed equals an uninterrupted one."""
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_causal import AfterTraining, FitConfig, PenaltySchedule, TrainingConfig, fit, simulate
from pyro_causal.checkpoint import CHECKPOINT_FILE, Checkpointing, TrainingInterrupted, load_checkpoint
from pyro_causal.cli import main
from pyro_causal.io import DataError, write_csv

# log_every is 100: the callback that sends SIGINT runs at step 100, inside the penalty loop's
# second round, or inside the first (and only) round of training in a random order.
SCHEDULE = PenaltySchedule(first_round_steps=60, round_steps=60, max_rounds=3)
SCHEDULES = {"penalty": SCHEDULE, "order": PenaltySchedule(first_round_steps=150)}


@pytest.fixture(scope="module")
def data():
    return simulate(num_variables=3, edges_per_node=1.0, num_samples=120, seed=4)


def test_checkpoints_hold_plain_data_only(data, tmp_path):
    fit(data.x,
        config=FitConfig(search="penalty", training=TrainingConfig(schedule=SCHEDULE),
                         checkpoint=Checkpointing(tmp_path, every=50), after_training=AfterTraining(held_refit=False)))
    state = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    assert state["step_count"] == 180 and state["lagrangian_stop"] == "budget"
    assert set(state["rng"]) == {"torch", "python", "numpy"} and len(state["elbo_trace"]) == 180
    assert isinstance(state["recent_elbos"], list) and "optimizer" in state and "last_good" in state

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    torch.save({"model": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(DataError, match="evil.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(DataError, match="nowhere.pt: no checkpoint there"):
        load_checkpoint(tmp_path / "nowhere.pt")


@pytest.mark.parametrize("search", ["penalty", "order"])
def test_sigint_waits_for_the_step_and_resume_gives_the_same_fit(data, tmp_path, search):
    def config(**kwargs):
        return FitConfig(search=search, training=TrainingConfig(schedule=SCHEDULES[search]), **kwargs)

    straight = fit(data.x, seed=3, config=config())

    def interrupt(event):
        if event.kind == "step":  # at step 100, inside step(): a real signal in the middle of a step
            os.kill(os.getpid(), signal.SIGINT)

    folder = tmp_path / "run"
    with pytest.raises(TrainingInterrupted, match=f"interrupted at step 100; checkpoint saved in {folder}"):
        fit(data.x, seed=3, callbacks=[interrupt],
            config=config(checkpoint=Checkpointing(folder, every=7)))
    assert torch.load(folder / CHECKPOINT_FILE, weights_only=True)["step_count"] == 100
    resumed = fit(data.x, seed=3, config=config(checkpoint=Checkpointing(folder, resume=folder)))
    np.testing.assert_array_equal(resumed.edge_probs, straight.edge_probs)
    np.testing.assert_array_equal(resumed.elbo_trace, straight.elbo_trace)
    np.testing.assert_array_equal(resumed.assignment_probs(), straight.assignment_probs())
    assert resumed.elbo == straight.elbo
    assert resumed.records["held_refit"] == straight.records["held_refit"]
    assert resumed.records["order_refit"] == straight.records["order_refit"]
    with pytest.raises(ValueError, match="written by a fit of other data or options"):
        fit(data.x, seed=4, config=config(checkpoint=Checkpointing(folder, resume=folder)))
    other = "penalty" if search == "order" else "order"
    with pytest.raises(ValueError, match="written by a fit of other data or options"):  # another search
        fit(data.x, seed=3, config=replace(config(checkpoint=Checkpointing(folder, resume=folder)), search=other))
    with pytest.raises(ValueError, match="checkpoint covers a single fit"):
        fit(data.x, restarts=2, config=FitConfig(checkpoint=Checkpointing(folder)))
    with pytest.raises(ValueError, match="every must be an integer >= 1"):
        Checkpointing(folder, every=0)


@pytest.mark.slow
def test_cli_resumes_after_a_real_sigint(data, tmp_path, capsys):
    csv = tmp_path / "data.csv"
    write_csv(csv, data.names, data.x.tolist())
    options = ["--first-round-steps", "600", "--round-steps", "50", "--max-rounds", "2", "--quiet", "--seed", "2"]
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]), OMP_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, "-m", "pyro_causal.cli", "fit", str(csv), "--out", str(out),
                                "--checkpoint-every", "5", *options], env=env, stderr=subprocess.PIPE, text=True)
    try:  # the first checkpoint (step 5) says training has started: SIGINT then lands mid-training
        deadline = time.monotonic() + 600
        while not (out / CHECKPOINT_FILE).exists() and process.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint after 10 minutes"
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, err
    assert "interrupted at step" in err and f"--resume {out}" in err and "Traceback" not in err
    step = torch.load(out / CHECKPOINT_FILE, weights_only=True)["step_count"]
    assert 5 <= step < 650 and not (out / "summary.json").exists()

    assert main(["fit", str(csv), "--out", str(out), "--resume", str(out), *options]) == 0
    assert main(["fit", str(csv), "--out", str(tmp_path / "straight"), *options]) == 0
    for name in ("adjacency.csv", "edge_probs.csv", "assignments.csv", "targets.csv"):
        assert (out / name).read_bytes() == (tmp_path / "straight" / name).read_bytes(), name
    summaries = [json.loads((folder / "summary.json").read_text()) for folder in (out, tmp_path / "straight")]
    for summary in summaries:
        summary.pop("wall_time_seconds")
    assert summaries[0] == summaries[1]
    capsys.readouterr()
    assert main(["fit", str(csv), "--out", str(tmp_path / "other"), "--resume", str(out), "--seed", "9",
                 *options[:-2]]) == 1
    assert "written by a fit of other data or options" in capsys.readouterr().err
    assert main(["fit", str(csv), "--out", str(tmp_path / "other"), "--resume", str(tmp_path)]) == 1
    assert f"--resume {tmp_path}: no checkpoint.pt there" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


def test_checkpoint_options_are_refused_where_they_do_not_apply(data, tmp_path, capsys):
    csv = tmp_path / "data.csv"
    write_csv(csv, data.names, data.x.tolist())
    out = tmp_path / "out"
    assert main(["fit", str(csv), "--out", str(out), "--checkpoint-every", "5", "--restarts", "2"]) == 1
    assert "--checkpoint-every/--resume cover one fit in one process" in capsys.readouterr().err
    out.mkdir()
    (out / CHECKPOINT_FILE).write_bytes(b"another run's")
    assert main(["fit", str(csv), "--out", str(out), "--checkpoint-every", "5"]) == 1
    assert "already holds results (checkpoint.pt)" in capsys.readouterr().err
    assert (out / CHECKPOINT_FILE).read_bytes() == b"another run's"
    assert main(["fit", str(csv), "--out", str(out), "--resume", str(out)]) == 1
    assert f"{out / CHECKPOINT_FILE}: not a readable checkpoint" in capsys.readouterr().err
