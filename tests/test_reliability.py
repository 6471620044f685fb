"""Bad inputs, divergence and output safety: each is refused with one line, or handled correctly."""
import json
import os

import numpy as np
import pytest
import torch

from pyro_causal import AfterTraining, FitConfig, PenaltySchedule, TrainingConfig, fit, simulate
from pyro_causal.preprocessing import prepare_data
from pyro_causal.checks import MAX_TRUNCATION
from pyro_causal.cli import main
from pyro_causal.io import DataError, DataWarning, OutputError, atomic_write_text, write_csv, write_outputs
from pyro_causal.preprocessing import Standardizer
from pyro_causal.result import strict_json

TINY = PenaltySchedule(first_round_steps=10, round_steps=5, max_rounds=1)
TINY_CLI = ["--first-round-steps", "10", "--round-steps", "5", "--max-rounds", "1", "--quiet", "--no-held-refit"]


@pytest.fixture(scope="module")
def data():
    return simulate(num_variables=3, edges_per_node=1.0, num_samples=120, seed=2)


@pytest.fixture
def csv_file(data, tmp_path):
    path = tmp_path / "data.csv"
    write_csv(path, data.names, data.x.tolist())
    return path


def one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err
    return err


# ----------------------------------------------------------------------------- resources
def test_regime_labels_with_gaps_give_one_component_per_label(data):
    regimes = np.repeat([0, 5, 1_000_000], 40)
    result = fit(data.x,
                 regimes=regimes,
                 config=FitConfig(training=TrainingConfig(schedule=TINY, graph_estimator="local"), after_training=AfterTraining(held_refit=False)))
    assert result.variant == "unknown" and result.model.truncation == 3
    targets = np.array([[0, 0, 0]] + [[0, 0, 0]] * 4 + [[1, 0, 0]])
    known = fit(data.x,
                regimes=np.repeat([0, 1, 5], 40),
                targets=targets,
                config=FitConfig(training=TrainingConfig(schedule=TINY, graph_estimator="local"), after_training=AfterTraining(held_refit=False)))
    assert known.model.truncation == 3
    np.testing.assert_array_equal(known.target_probs, targets[[0, 1, 5]])


def test_truncation_is_bounded_by_the_rows_and_the_maximum(data, csv_file, tmp_path, capsys):
    with pytest.raises(ValueError, match="truncation 51 is more components than the 50 rows"):
        fit(data.x[:50], truncation=51)
    for bad in (0, 2.5, True, "3"):
        with pytest.raises(ValueError, match="truncation must be"):
            fit(data.x, truncation=bad)
    big = np.random.default_rng(0).normal(size=(MAX_TRUNCATION + 20, 2))
    with pytest.raises(ValueError, match=f"the maximum, {MAX_TRUNCATION}"):
        fit(big, truncation=MAX_TRUNCATION + 1)
    assert main(["fit", str(csv_file), "--out", str(tmp_path / "o"), "--truncation", "1000", *TINY_CLI]) == 1
    one_line_error(capsys, f"--truncation 1000: more components than the maximum, {MAX_TRUNCATION}")
    assert not (tmp_path / "o").exists()


def test_processes_above_the_cores_need_an_explicit_override(csv_file, tmp_path, capsys):
    many = str((os.cpu_count() or 1) + 1)
    assert main(["fit", str(csv_file), "--out", str(tmp_path / "o"), "--processes", many, *TINY_CLI]) == 1
    one_line_error(capsys, f"--processes {many} is more than the", "--oversubscribe")
    assert not (tmp_path / "o").exists()
    from pyro_causal.distributed import fit_distributed

    with pytest.raises(ValueError, match="CPU cores; pass oversubscribe=True"):
        fit_distributed(np.zeros((20, 2)), processes=int(many))


# ----------------------------------------------------------------------------- writes stay inside --out
def test_write_outputs_refuses_links_and_leaves_no_scratch(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "graph.png").symlink_to(outside)
    (folder / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    for name in ("graph.png", "dangling.png"):
        with pytest.raises(OutputError, match=f"{name}: is a symbolic link"):
            write_outputs(folder, {"a.txt": lambda p: p.write_text("a"), name: lambda p: p.write_text("x")})
    assert outside.read_text() == "precious" and not (tmp_path / "nowhere.png").exists()
    assert sorted(p.name for p in folder.iterdir()) == ["dangling.png", "graph.png"]

    def fails(path):
        path.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="b.txt: cannot be written \\(No space left on device\\)"):
        write_outputs(folder, {"a.txt": lambda p: p.write_text("a"), "b.txt": fails})
    assert sorted(p.name for p in folder.iterdir()) == ["dangling.png", "graph.png"]  # all or nothing
    with pytest.raises(OutputError, match="symbolic link"):
        atomic_write_text(folder / "graph.png", "x")


def test_cli_refuses_links_in_out_and_posterior_links_before_the_fit(csv_file, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "graph.png").symlink_to(tmp_path / "elsewhere.png")
    assert main(["fit", str(csv_file), "--out", str(out), "--plots", *TINY_CLI]) == 1
    one_line_error(capsys, "graph.png: is a symbolic link")
    assert not (tmp_path / "elsewhere.png").exists() and not (out / "summary.json").exists()
    (tmp_path / "post.nc").symlink_to(tmp_path / "target.nc")
    assert main(["fit", str(csv_file), "--out", str(tmp_path / "o2"), "--posterior", str(tmp_path / "post.nc"),
                 *TINY_CLI]) == 1
    one_line_error(capsys, "post.nc: is a symbolic link")
    assert main(["fit", str(csv_file), "--out", str(tmp_path / "o2"), "--posterior", str(tmp_path), *TINY_CLI]) == 1
    one_line_error(capsys, f"{tmp_path}: is a folder; name a file")
    assert not (tmp_path / "o2").exists() and not (tmp_path / "target.nc").exists()


def test_overwrite_removes_the_figures_of_an_earlier_fit(csv_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["fit", str(csv_file), "--out", str(out), "--plots", *TINY_CLI]) == 0
    assert (out / "graph.png").exists() and not list(out.glob(".*"))
    assert main(["fit", str(csv_file), "--out", str(out), *TINY_CLI]) == 1
    one_line_error(capsys, "already holds results")
    assert main(["fit", str(csv_file), "--out", str(out), "--overwrite", *TINY_CLI]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["adjacency.csv", "assignments.csv", "edge_probs.csv",
                                                      "summary.json", "targets.csv"]


# ----------------------------------------------------------------------------- silent garbage
def test_huge_values_standardise_like_ordinary_ones(data):
    x = data.x
    huge = Standardizer.fit(x * 1e200)(x * 1e200)
    np.testing.assert_allclose(huge, Standardizer.fit(x)(x), rtol=1e-9, atol=1e-9)
    assert np.isfinite(prepare_data(x * 1e200)[0]).all()
    with pytest.raises(DataError, match="column 'X1'.* exceed float32"):
        prepare_data(x * np.array([1.0, 1e300, 1.0]), standardize=False)


def test_subnormal_and_nearly_constant_columns_are_refused(data):
    x = data.x.copy()
    x[:, 1] *= 1e-310
    with pytest.raises(DataError, match="column 'X1': every value is below 2.2e-308"):
        fit(x)
    x = data.x.copy()
    x[:, 2] = 1e6 + 1e-9 * x[:, 2]
    with pytest.raises(DataError, match="column 'X2': nearly constant"):
        fit(x)


def test_duplicate_and_collinear_columns_are_reported(data, tmp_path, capsys):
    x = np.column_stack([data.x, data.x[:, 0]])
    with pytest.warns(DataWarning, match="columns 'X0' and 'X3' are identical") as caught:
        prepare_data(x)
    assert [w.filename for w in caught] == [__file__]  # the user's line, not the package's
    with pytest.warns(DataWarning, match="columns 'X1' and 'X3' are exactly collinear"):
        prepare_data(np.column_stack([data.x, 3.0 - 2.0 * data.x[:, 1]]))
    path = tmp_path / "dup.csv"
    write_csv(path, ["a", "b", "c", "d"], x.tolist())
    assert main(["fit", str(path), "--out", str(tmp_path / "o"), *TINY_CLI]) == 0
    err = capsys.readouterr().err
    assert "pyro-causal: warning: data: columns 'a' and 'd' are identical" in err and "Traceback" not in err


def test_divergence_is_a_failure_and_nothing_claims_to_be_a_fit(data, csv_file, tmp_path, capsys):
    result = fit(data.x, config=FitConfig(training=TrainingConfig(learning_rate=1e30, schedule=TINY)))
    assert result.stop_reason == "diverged" and "non-finite" in result.records["diverged"]
    text = json.dumps(result.summary(), allow_nan=False)  # strict JSON even here
    assert "NaN" not in text and "Infinity" not in text
    assert main(["fit", str(csv_file), "--out", str(tmp_path / "o"), "--learning-rate", "1e30", *TINY_CLI]) == 1
    one_line_error(capsys, "training diverged (non-finite", "no results written", "--learning-rate")
    assert not (tmp_path / "o").exists()
    assert main(["fit", str(csv_file), "--out", str(tmp_path / "o"), "--learning-rate", "inf", *TINY_CLI]) == 2
    one_line_error(capsys, "--learning-rate: must be a finite number > 0, got inf")


def test_strict_json_replaces_non_finite_numbers():
    value = {"a": float("nan"), "b": [np.float32(1.5), float("inf")], "c": np.int64(3), "d": (True, None)}
    assert json.dumps(strict_json(value), allow_nan=False) == '{"a": null, "b": [1.5, null], "c": 3, "d": [true, null]}'


def test_the_api_refuses_what_the_cli_refuses(data):
    x = data.x
    with pytest.raises(ValueError, match="supervision_weight must be a finite number >= 0, got -1"):
        fit(x, config=FitConfig(training=TrainingConfig(supervision_weight=-1)))
    with pytest.raises(DataError, match="names: 'a' is given twice"):
        fit(x, names=["a", "b", "a"])
    with pytest.raises(DataError, match="real numbers, got complex"):
        fit(x + 1j)
    with pytest.raises(ValueError, match="seed must be an integer in 0..4294967295, got -1"):
        fit(x, seed=-1)
    with pytest.raises(DataError, match="regimes must be integers.*got <U1 values such as 'a'"):
        fit(x, regimes=np.array(list("ab") * 60))


def test_dataframes_keep_their_names_and_tensors_may_require_grad(data):
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame(data.x, columns=["p", "q", "r"])
    assert prepare_data(frame)[1] == ["p", "q", "r"]
    tensor = torch.tensor(data.x, requires_grad=True)
    result = fit(tensor,
                 regimes=torch.as_tensor(data.regimes),
                 config=FitConfig(training=TrainingConfig(schedule=TINY, graph_estimator="local"), after_training=AfterTraining(held_refit=False)))
    assert result.edge_probs.shape == (3, 3)


# ----------------------------------------------------------------------------- tracebacks become one line
@pytest.mark.parametrize("device, message", [
    ("bogus", "--device bogus: "),
    pytest.param("cuda", "--device cuda: CUDA is not available", marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason="CUDA present")),
])
def test_an_absent_device_is_refused_before_anything_is_created(csv_file, tmp_path, capsys, device, message):
    assert main(["fit", str(csv_file), "--out", str(tmp_path / "o"), "--device", device, *TINY_CLI]) == 1
    one_line_error(capsys, message)
    assert not (tmp_path / "o").exists()


def test_evaluate_names_a_folder_or_file_in_the_wrong_place(csv_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["fit", str(csv_file), "--out", str(out), *TINY_CLI]) == 0
    assert main(["evaluate", str(out), "--truth", str(tmp_path)]) == 1
    one_line_error(capsys, f"{tmp_path}: is a folder; expected an adjacency CSV file")
    assert main(["evaluate", str(csv_file), "--truth", str(out / "adjacency.csv")]) == 1
    one_line_error(capsys, f"{csv_file}: is a file; expected the --out folder")


# ----------------------------------------------------------------------------- smaller
def test_errors_found_inside_fit_leave_no_folder(csv_file, tmp_path, capsys):
    targets = tmp_path / "targets.csv"
    write_csv(targets, ["X0", "X1", "X2"], [[0, 0, 0]])
    lines = csv_file.read_text().splitlines()
    labelled = tmp_path / "labelled.csv"
    labelled.write_text("\n".join([lines[0] + ",regime"] + [f"{row},{i % 2}" for i, row in enumerate(lines[1:])]) + "\n")
    assert main(["fit", str(labelled), "--regime-column", "regime", "--targets", str(targets),
                 "--out", str(tmp_path / "o"), *TINY_CLI]) == 1
    one_line_error(capsys, "targets has 1 rows but regimes go up to 1")
    assert not (tmp_path / "o").exists()


def test_scoring_uses_chunks_of_reasonable_size(data, monkeypatch):
    from pyro_causal import problem

    sizes = []
    real = problem.mean_elbo

    def recording(*args, **kwargs):
        sizes.append(kwargs.get("batch_size"))
        return real(*args, **kwargs)

    monkeypatch.setattr(problem, "mean_elbo", recording)
    fit(data.x, batch_size=1,
        config=FitConfig(training=TrainingConfig(schedule=TINY), after_training=AfterTraining(held_refit=False)))
    assert sizes == [problem.SCORE_CHUNK_ROWS]


def test_seed_and_home_folder(csv_file, tmp_path, capsys, monkeypatch):
    assert main(["fit", str(csv_file), "--out", str(tmp_path / "o"), "--seed", "-1", *TINY_CLI]) == 2
    one_line_error(capsys, "--seed: must be an integer in 0..4294967295, got -1")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert main(["fit", str(csv_file), "--out", "~/res", *TINY_CLI]) == 0
    assert (tmp_path / "res" / "summary.json").exists() and not (tmp_path / "~").exists()
