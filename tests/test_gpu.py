"""Fits on a CUDA device (skipped on machines without one)."""
import json

import numpy as np
import pytest
import torch

from pyro_causal import FitConfig, PenaltySchedule, TrainingConfig, fit, simulate

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

SCHEDULE = PenaltySchedule(first_round_steps=20, round_steps=5, max_rounds=2)
CLI_SCHEDULE = ["--first-round-steps", "20", "--round-steps", "5", "--max-rounds", "1", "--quiet"]


@pytest.fixture
def data():
    return simulate(num_variables=4, num_samples=400, seed=5)


@pytest.mark.parametrize("batch_size", [None, 64])
def test_fit_on_cuda(data, batch_size):
    seen = []
    result = fit(data.x, device="cuda", batch_size=batch_size, callbacks=[seen.append],
                 config=FitConfig(training=TrainingConfig(schedule=SCHEDULE)))
    assert all(p.device.type == "cuda" for p in result.model.parameters())
    assert all(b.device.type == "cuda" for b in result.model.buffers())
    assert result.settings["device"].startswith("cuda")
    assert result.edge_probs.shape == (4, 4) and np.isfinite(result.edge_probs).all()
    assert np.isfinite(result.elbo_trace).all() and len(result.elbo_trace) == 25
    assert result.assignment_probs().shape == (400, result.model.truncation)
    assert seen  # progress events came through


def test_cli_device_cuda(tmp_path, data):
    from pyro_causal.cli import main
    from pyro_causal.simulate import write_simulation

    csv = write_simulation(data, tmp_path / "sim.csv")["data"]
    assert main(["fit", str(csv), "--out", str(tmp_path / "out"), "--device", "cuda", *CLI_SCHEDULE]) == 0
    check_cli_outputs(tmp_path / "out", "cuda", len(data.x))


def check_cli_outputs(out, device, rows):
    """The files agree with each other: the DAG of the edge probabilities, the summary's counts."""
    from pyro_causal.acyclicity import dag_from_probabilities

    def matrix(name, named_rows=True):  # the header and the rows' names dropped
        lines = (out / name).read_text(encoding="utf-8").splitlines()[1:]
        return np.array([[float(cell) for cell in line.split(",")[int(named_rows):]] for line in lines])

    probs, adjacency = matrix("edge_probs.csv"), matrix("adjacency.csv")
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    np.testing.assert_array_equal(adjacency, dag_from_probabilities(probs))
    assert summary["settings"]["device"].startswith(device) and summary["num_edges"] == adjacency.sum()
    assignments = matrix("assignments.csv", named_rows=False)
    assert len(assignments) == rows
    np.testing.assert_allclose(assignments.sum(1), 1.0, atol=1e-4)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_nccl_two_gpus_match_one(data):
    from pyro_causal.distributed import fit_distributed

    one = fit(data.x, seed=2, device="cuda", batch_size=200,
              config=FitConfig(training=TrainingConfig(schedule=SCHEDULE)))
    two = fit_distributed(data.x, processes=2, seed=2, device="cuda", batch_size=200,
                          config=FitConfig(training=TrainingConfig(schedule=SCHEDULE)))
    assert two.settings["backend"] == "nccl"
    np.testing.assert_allclose(two.edge_probs, one.edge_probs, rtol=1e-4, atol=1e-6)
