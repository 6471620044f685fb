"""Every example script runs end to end with a tiny budget (as Pyro's own CI does)."""
import importlib.util
import itertools
import json
import re
import sys
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch
from matplotlib.image import imread
from pyro import poutine

from pyro_causal import LatentInterventionModel, dag_from_probabilities, is_dag, simulate, simulate_cause_effect
from pyro_causal.metrics import hamming_distance


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_custom_training_loop_runs(tmp_path):
    distance = load("custom_training_loop").main(
        ["--first-round-steps", "5", "--round-steps", "2", "--max-rounds", "2", "--samples", "300",
         "--checkpoint", str(tmp_path / "ckpt.pt")]
    )
    # The returned distance is the one of the DAG of the saved model, after exactly 5 + 2 steps and 2 rounds.
    saved = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    model = LatentInterventionModel(10)
    model.load_state_dict(saved["model"])
    estimate = dag_from_probabilities(model.guide.edge_probs().detach().numpy())
    assert is_dag(estimate)
    assert distance == hamming_distance(simulate(num_variables=10, num_samples=300, seed=0).adjacency, estimate)
    assert int(saved["lagrangian"]["rounds"]) == 2
    assert float(saved["lagrangian"]["multiplier"]) > 0  # h > 0 after 7 steps: the dual step moved phi
    steps = {int(state["state"][0]["step"]) for state in saved["optimizer"].values()}
    assert steps == {7}


def not_blank(path):
    """A saved figure has more than one colour."""
    pixels = imread(path)
    return float(np.std(pixels[..., :3])) > 0.01


def render_page(record):
    """docs/results.md's text for one record (docs/make_results.py)."""
    sys.path.insert(0, str(EXAMPLES.parent / "docs"))
    from make_results import render

    return render([record])


def test_table1_runs(tmp_path, capsys):
    out, record_path = tmp_path / "results.md", tmp_path / "run.json"
    load("table1").main(["--graphs", "1", "--samples", "300", "--variants", "latent,observational",
                         "--first-round-steps", "5", "--max-rounds", "1", "--out", str(out), "--record", str(record_path)])
    text = out.read_text()
    assert "| latent |" in text and "| observational |" in text and "5.9 ± 6.2" in text
    assert "ARI of the Bayes classifier" in text
    # The record holds the printed numbers, and the results page shows them as the log's table does.
    printed = dict(re.findall(r"seed 0 +(\w+): HD +(\d+)", capsys.readouterr().out))
    record = json.loads(record_path.read_text())
    assert record["experiment"] == "table1" and record["seeds"] == "graphs 0..0, fit seed = graph seed + 0"
    assert record["options"] == "--max-rounds 1, --first-round-steps 5"
    assert {row["variant"]: row["hamming"] for row in record["rows"]} == {v: [int(h)] for v, h in printed.items()}
    latent = record["rows"][0]
    logged = next(line for line in text.splitlines() if line.startswith("| latent |"))
    assert logged.startswith(f"| latent | {latent['mean']:.1f} ± 0.0 | {latent['hamming'][0]} | {latent['shd']:.1f} | "
                             f"{latent['f1']:.2f} | {latent['ari']:.2f} |")
    page = render_page(record)
    assert (f"| linear, e = 1, n = 300 | latent | --max-rounds 1, --first-round-steps 5 | {latent['mean']:.1f} ± 0.0 | "
            f"{latent['hamming'][0]} | {latent['shd']:.1f} | {latent['f1']:.2f} | {latent['ari']:.2f} "
            f"({record['ari_ceiling']:.2f}) |") in page
    assert f"`{record['command']}`: graphs 0..0" in page


def test_edge_trajectories_runs(capsys):
    scores = load("edge_trajectories").main(["--quick", "--samples", "300", "--every", "10"])
    assert set(scores) == {"found", "truth"}
    assert "p(A->B)" in capsys.readouterr().out


def test_sachs_example_runs(tmp_path):
    out, record_path = tmp_path / "results.md", tmp_path / "run.json"
    load("sachs").main(["--quick", "--dependence", "--out", str(out), "--record", str(record_path)])
    text = out.read_text()
    row = json.loads(record_path.read_text())["rows"][0]
    ours = next(line for line in text.splitlines() if line.startswith("| **L. G. (pyro_causal"))
    assert ours.endswith(f"| {row['shd']} | {row['tp']} | {row['fn']} | {row['fp']} | {row['reversed']} | "
                         f"{row['f1_table2']:.2f} | {row['f1']:.2f} | {row['ari']:.2f} |")
    assert row["paper"] == {"shd": 33, "f1": 0.30} and row["density"] == "linear" and row["variant"] == "latent"
    assert (f"| linear | latent | fit defaults, --quick | {row['shd']} | {row['tp']} | {row['fn']} | {row['fp']} | "
            f"{row['reversed']} | {row['f1_table2']:.2f} | {row['f1']:.2f} | {row['ari']:.2f} | {row['edges']} |"
            ) in render_page(json.loads(record_path.read_text()))
    assert "Gaussian classifier given the conditions" in text and "in-sample argmax) reaches 0.56." in text
    assert "| CD3/CD28 + U0126 (MEK inhibitor) | +1.49 | **+2.65** |" in text
    assert text.count(" -> ") >= 18 and "| praf -> pmek | +0.78 | +0.69 | +0.69 | +0.68 |" in text
    assert "| p44/42 - pakts473 (not in the consensus) | +0.64 | +0.82 | +0.77 | +0.82 |" in text
    assert "| SHD | tp | fn | fp | rev | F1 (Table 2) | F1 (directed) | ARI |" in text
    assert "| IGSP | 18 | 4 | 6 | 5 | 7 | 0.42 | 0.24 | — |" in text  # printed F1; directed from its counts


def test_cause_effect_example_runs(tmp_path, capsys):
    out, figure, record_path = tmp_path / "results.md", tmp_path / "hist.png", tmp_path / "run.json"
    load("cause_effect").main(["--quick", "--pairs", "2", "--model-intervention", "imperfect",
                               "--out", str(out), "--figure", str(figure), "--record", str(record_path)])
    text = out.read_text()
    assert "imperfect intervention model" in text and not_blank(figure)
    # The table counts the pairs printed as fitted: one row, two pairs, by Hamming distance.
    printed = capsys.readouterr().out
    hd = [int(h) for h in re.findall(r"latent: HD (\d)", printed)]
    before = [int(h) for h in re.findall(r"before the edge search (\d)", printed)]
    assert len(hd) == 2 and len(before) == 2
    counts = " | ".join(str(hd.count(k)) for k in range(3))
    assert f"| latent | {counts} | {sum(h == 0 for h in hd) / 2:.0%} |" in text
    # the pairs right before fit's default edge search, right at the true regimes, then the seconds per fit
    match = re.search(rf"\| {before.count(0)}/2 \| (\d)/2 \| [0-9.]+ \|\n", text)
    assert match
    record = json.loads(record_path.read_text())
    assert record["rows"][0]["hd"] == [hd.count(k) for k in range(3)] and record["rows"][0]["pairs"] == 2
    assert record["rows"][0]["right_before_search"] == before.count(0)
    ranked = re.findall(r"the model at the true regimes ranks (.+?) first by [0-9.]+ nats", printed)
    graphs = re.findall(r"pair +\d+ \( *(.+?)\)", printed)
    right = sum(a == b for a, b in zip(ranked, graphs))
    assert len(ranked) == 2 and record["rows"][0]["right_at_true_regimes"] == right == int(match.group(1))
    assert record["options"] == "--model-intervention imperfect, --quick"  # the default model goes unnamed
    assert f"| latent | --model-intervention imperfect, --quick | {counts} | {sum(h == 0 for h in hd) / 2:.0%} (" in render_page(record)


def gaussian_regression_fit(x, target, inputs):
    """Brute force: least squares with an intercept, the maximum Gaussian log-likelihood."""
    design = np.column_stack([x[:, inputs], np.ones(len(x))])
    residual = x[:, target] - design @ np.linalg.lstsq(design, x[:, target], rcond=None)[0]
    return -0.5 * len(x) * (np.log(2 * np.pi * np.mean(residual**2)) + 1.0)


@pytest.mark.parametrize("perfect", [False, True])
def test_cause_effect_profile_ranking_takes_the_best_targets_of_each_graph(perfect):
    ce = load("cause_effect")
    data = simulate_cause_effect(600, seed=14)  # A -> B
    x = (data.x - data.x.mean(0)) / data.x.std(0, ddof=1)
    on, off = np.log(1 / (1 + np.exp(2.0))), np.log(1 / (1 + np.exp(-2.0)))  # gamma = lambda = -2
    ranking = ce.profile_ranking(data, perfect)
    for name, parents in (("A -> B", ([], [0])), ("B -> A", ([1], [])), ("no edge", ([], []))):
        best = -np.inf
        for targets in itertools.product((0, 1), repeat=4):  # (regime 1, A), (regime 1, B), (regime 2, A), (regime 2, B)
            t = np.array(targets).reshape(2, 2)
            value = (t * on + (1 - t) * off).sum()
            for j in range(2):
                observational = (data.regimes == 0) | np.isin(data.regimes, 1 + np.nonzero(t[:, j] == 0)[0])
                value += gaussian_regression_fit(x[observational], j, parents[j])
                for k in np.nonzero(t[:, j])[0]:
                    value += gaussian_regression_fit(x[data.regimes == k + 1], j, [] if perfect else parents[j])
            best = max(best, value)
        edges = len(parents[0]) + len(parents[1])
        assert ranking[name] == pytest.approx(best + edges * on + (2 - edges) * off, rel=1e-8)
    if perfect:  # the intervention on A leaves B's mechanism alone only in the true direction
        assert ranking["A -> B"] > ranking["B -> A"] + 10 and ranking["A -> B"] > ranking["no edge"] + 10


def test_cause_effect_ranking_only_counts_the_pairs_it_prints(tmp_path, capsys):
    record_path = tmp_path / "ranking.json"
    load("cause_effect").main(["--ranking-only", "--seeds", "14,0,6", "--model-intervention", "perfect",
                               "--record", str(record_path)])
    printed = capsys.readouterr().out
    margins = [float(m) for m in re.findall(r"truth first by ([-+][0-9.]+)", printed)]
    assert len(margins) == 3 and re.findall(r"pair +(\d+) ", printed) == ["14", "0", "6"]
    right = sum(m > 0 for m in margins)
    assert f"perfect model, stochastic interventions, right at the true regimes: {right}/3 (" in printed
    record = json.loads(record_path.read_text())
    assert record["experiment"] == "figure3_ranking" and record["rows"][0]["right"] == right
    assert record["rows"][0]["right_by_graph"] == {"A -> B": [1, 1], "B -> A": [1, 1], "no edge": [int(margins[1] > 0), 1]}
    assert f"| perfect | stochastic | {right / 3:.0%} ({right}/3) | 1/1 | 1/1 |" in render_page(record)
    # --intervention imperfect simulates changed mechanisms instead: other data, other margins
    load("cause_effect").main(["--ranking-only", "--seeds", "14,0,6", "--model-intervention", "perfect",
                               "--intervention", "imperfect", "--record", str(record_path)])
    printed = capsys.readouterr().out
    assert "perfect model, imperfect interventions, right at the true regimes" in printed
    assert [float(m) for m in re.findall(r"truth first by ([-+][0-9.]+)", printed)][0] != margins[0]
    assert json.loads(record_path.read_text())["rows"][0]["data"] == "imperfect"


def test_cause_effect_example_fits_the_pairs_given_by_seed(tmp_path, capsys):
    record_path = tmp_path / "run.json"
    load("cause_effect").main(["--quick", "--seeds", "3,1", "--edge-search", "0", "--no-write", "--record", str(record_path)])
    printed = capsys.readouterr().out
    assert re.findall(r"pair +(\d+) ", printed) == ["3", "1"] and "2 pairs, seeds 3,1," in printed
    record = json.loads(record_path.read_text())
    assert record["seeds"] == "pairs 3,1, fit seed = pair seed" and record["rows"][0]["pairs"] == 2
    for bad in ("3,x", "3,-1", ""):
        with pytest.raises(SystemExit):
            load("cause_effect").main(["--quick", "--seeds", bad, "--no-write"])
        assert "--seeds" in capsys.readouterr().err


def test_tutorial_runs(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("tutorial", EXAMPLES.parent / "docs" / "tutorial.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--quick", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "MAP agrees with argmax of exact q(z): True" in printed
    assert not_blank(tmp_path / "graph.png")


def test_departures_runs(tmp_path, capsys):
    out = tmp_path / "results.md"
    load("departures").main(["--settings", "ours,no graph entropy", "--graphs", "1", "--samples", "300", "--quick",
                             "--out", str(out)])
    text = out.read_text()
    assert "`python examples/departures.py --settings 'ours,no graph entropy' --graphs 1" in text
    rows = [line for line in text.splitlines() if line.startswith("| ours |") or line.startswith("| no graph entropy |")]
    assert len(rows) == 2
    assert all(line.split("|")[8].strip() == "15" for line in rows)  # 10 + 5 steps: the quick schedule, 2 rounds
    assert "ours graph 0: HD" in capsys.readouterr().out


def test_departures_rejects_an_unknown_setting(capsys):
    with pytest.raises(SystemExit):
        load("departures").main(["--settings", "ours,alpha=2"])
    assert "unknown setting(s) ['alpha=2']" in capsys.readouterr().err


def test_paper_graph_score_factor_is_the_entropy_of_q_graph():
    """The factor that turns -KL(q(A) || p(A)) into E_q[log p(A)] is H(q(A)) = -E_q[log q(A)] (Monte Carlo)."""
    model = load("departures").PaperGraphScore(4, truncation=2, edge_logit=torch.tensor(
        [[0.0, -2.0, float("-inf"), -2.0]] + [[-2.0] * 4] * 3))  # edge 0 -> 2 forbidden: not free
    pyro.set_rng_seed(0)
    with torch.no_grad():
        model.guide.edge_logits.copy_(torch.randn(4, 4) * 1.5)
        trace = poutine.trace(model.model).get_trace(torch.randn(5, 4))
        factor = float(trace.nodes["graph_entropy"]["fn"].log_prob(torch.zeros(())))
        guide = model.guide
        free = guide.free_edges()
        q = guide.graph_dist(free)
        draws = q.sample((200000,))
        log_q = torch.where(free, q.log_prob(draws), torch.zeros(())).sum((-1, -2))
    estimate, error = float(-log_q.mean()), float(log_q.std() / 200000 ** 0.5)
    assert abs(factor - estimate) < 4 * error
    assert factor > 0.5  # eleven free edges at spread logits: far from a point mass


def test_sachs_example_refuses_an_edge_logit_beside_select():
    with pytest.raises(SystemExit, match="--select chooses the edge logit; drop --edge-logit"):
        load("sachs").main(["--select", "--edge-logit", "-6", "--quick", "--no-write"])
