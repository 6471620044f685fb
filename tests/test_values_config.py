"""Exact values of the option objects in ``pyro_causal.config``: defaults, validation, the edge
prior's resolution, former keywords and the settings dictionary (one tiny fit, for where a
warning points): the mutation run's fast selection for ``config.py``."""
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_causal import (AfterTraining, Checkpointing, EdgeSearch, FitConfig, ModelOptions, PenaltySchedule,
                         Preprocessing, Priors, TrainingConfig, fit, simulate)
from pyro_causal.config import (DEFAULT_EDGE_LOGITS, DEFAULT_MOVES, MOVES, PAIR_SEARCH_ROUNDS, SEARCHES, _count,
                                apply_former_keywords, check_moves, settings_of, with_field)


def test_the_defaults_are_the_documented_values():
    assert DEFAULT_EDGE_LOGITS == {"order": -6.0, "penalty": -2.0} and set(DEFAULT_EDGE_LOGITS) == set(SEARCHES)
    assert SEARCHES == ("order", "penalty") and MOVES == ("reverse", "remove", "add")
    assert DEFAULT_MOVES == ("reverse", "remove") and PAIR_SEARCH_ROUNDS == 1
    assert asdict(Priors()) == {"alpha": 1.0, "target_logit": -2.0, "edge_logit": None}
    assert asdict(Preprocessing()) == {"standardize": True, "log_transform": False}
    assert asdict(ModelOptions()) == {"embedding_dim": 16, "two_cycles": "resolve", "density_options": None, "extra": {}}
    assert asdict(EdgeSearch()) == {"rounds": None, "restarts": 3, "moves": ("reverse", "remove")}
    after = AfterTraining()
    assert (after.held_refit, after.order_refit, after.target_moves, after.edge_search) == (True, None, True, EdgeSearch())
    config = FitConfig()
    assert (config.search, config.training, config.num_threads, config.checkpoint) == (None, None, None, None)
    assert (config.preprocessing, config.model, config.after_training) == (Preprocessing(), ModelOptions(), AfterTraining())


@pytest.mark.parametrize("search, logit", [("order", -6.0), ("penalty", -2.0)])
def test_an_unset_edge_prior_resolves_to_its_searchs_value_on_every_free_pair(search, logit):
    priors = Priors(alpha=3.0, target_logit=-1.0).resolved(search)
    assert priors == Priors(alpha=3.0, target_logit=-1.0, edge_logit=logit)
    np.testing.assert_array_equal(priors.logits(4), np.full((4, 4), logit))
    given = Priors(edge_logit=0.5)
    assert given.resolved(search) is given  # a given prior is kept as it is
    assert given.resolved(search, network_rounds=True) is given
    assert Priors().resolved(search, network_rounds=True).edge_logit == -6.0  # the order search's, whatever the search


def test_edge_logits_broadcast_a_number_a_matrix_or_a_tensor_into_a_fresh_array():
    matrix = np.array([[0.0, -np.inf], [np.inf, -1.0]])
    for value in (matrix, torch.tensor(matrix), torch.tensor(matrix, requires_grad=True)):
        logits = Priors(edge_logit=value).logits(2)
        np.testing.assert_array_equal(logits, matrix)
        assert logits.dtype == np.float64 and logits.flags.writeable
        logits[0, 0] = 7.0  # a copy: the prior is left as it was
        assert float(Priors(edge_logit=value).logits(2)[0, 0]) == 0.0
    integer = Priors(edge_logit=-3).logits(2)
    assert integer.dtype == np.float64 and integer.tolist() == [[-3.0, -3.0], [-3.0, -3.0]]
    with pytest.raises(ValueError, match=r"^edge_logit is None \(chosen by the search\): use Priors.resolved\(search\) first$"):
        Priors().logits(2)
    with pytest.raises(ValueError, match="unknown search 'greedy'; choose one of order, penalty"):
        Priors().resolved("greedy")


@pytest.mark.parametrize("alpha", [0.0, -1.0, math.inf, math.nan])
def test_alpha_must_be_finite_and_positive(alpha):
    with pytest.raises(ValueError, match=f"alpha must be a finite number > 0, got {alpha!r}"):
        Priors(alpha=alpha)


def test_the_target_logit_must_be_finite_and_the_smallest_positive_alpha_passes():
    for value in (math.inf, -math.inf, math.nan):
        with pytest.raises(ValueError, match=f"target_logit must be finite, got {value!r}"):
            Priors(target_logit=value)
    assert Priors(alpha=1e-300, target_logit=-50.0).alpha == 1e-300


def test_counts_take_ints_at_or_above_their_least_and_refuse_bools_floats_and_none():
    _count("k", 3, 3)
    _count("k", np.int64(4), 3)
    _count("k", None, 1, optional=True)
    for value, message in ((2, "k must be an int >= 3, got 2"), (True, "k must be an int >= 3, got True"),
                           (3.0, "k must be an int >= 3, got 3.0"), (None, "k must be an int >= 3, got None")):
        with pytest.raises(ValueError, match=f"^{message}$"):
            _count("k", value, 3)
    with pytest.raises(ValueError, match=r"^k must be an int >= 1 or None, got 0$"):
        _count("k", 0, 1, optional=True)


def test_the_option_objects_check_their_fields_by_name():
    assert ModelOptions(embedding_dim=1).embedding_dim == 1
    with pytest.raises(ValueError, match="embedding_dim must be an int >= 1, got 0"):
        ModelOptions(embedding_dim=0)
    assert ModelOptions(two_cycles="allow").two_cycles == "allow"
    with pytest.raises(ValueError, match="^unknown two_cycles 'both'; choose one of resolve, allow$"):
        ModelOptions(two_cycles="both")
    assert EdgeSearch(rounds=0, restarts=1, moves=["add"]).moves == ("add",)  # any sequence, kept as a tuple
    with pytest.raises(ValueError, match="edge_search.rounds must be an int >= 0 or None, got -1"):
        EdgeSearch(rounds=-1)
    with pytest.raises(ValueError, match="edge_search.restarts must be an int >= 1, got 0"):
        EdgeSearch(restarts=0)
    with pytest.raises(ValueError, match="must be a sequence of moves, got the string 'add'"):
        EdgeSearch(moves="add")
    assert AfterTraining(order_refit=0).order_refit == 0
    with pytest.raises(ValueError, match="order_refit must be an int >= 0 or None, got -1"):
        AfterTraining(order_refit=-1)
    check_moves(MOVES)
    with pytest.raises(ValueError, match=r"unknown search move\(s\) \['flip', 'swap'\]; choose from reverse, remove, add"):
        check_moves(["swap", "reverse", "flip"])


def test_fit_config_checks_the_search_the_threads_and_the_type_of_each_part():
    assert FitConfig(search="penalty", num_threads=1).num_threads == 1
    assert FitConfig(training=TrainingConfig(), checkpoint=Checkpointing("out")).training == TrainingConfig()
    with pytest.raises(ValueError, match="unknown search 'greedy'; choose one of order, penalty"):
        FitConfig(search="greedy")
    with pytest.raises(ValueError, match="num_threads must be an int >= 1 or None, got 0"):
        FitConfig(num_threads=0)
    for name, wrong, message in (("preprocessing", None, "a Preprocessing, got NoneType"),
                                 ("model", {}, "a ModelOptions, got dict"),
                                 ("after_training", EdgeSearch(), "an? AfterTraining, got EdgeSearch"),
                                 ("training", PenaltySchedule(), "a TrainingConfig, got PenaltySchedule"),
                                 ("checkpoint", "out", "a Checkpointing, got str")):
        with pytest.raises(TypeError, match=f"^FitConfig.{name} must be {message}$"):
            FitConfig(**{name: wrong})


def test_with_field_replaces_one_nested_field_and_leaves_the_original():
    config = FitConfig()
    changed = with_field(config, ("after_training", "edge_search", "restarts"), 5)
    assert changed.after_training.edge_search == EdgeSearch(restarts=5)
    assert config.after_training.edge_search.restarts == 3 and changed.model is config.model
    assert with_field(config, ("num_threads",), 2).num_threads == 2


def test_former_keywords_land_where_fit_reads_them_and_warn_once_each():
    with pytest.warns(FutureWarning) as caught:
        priors, config = apply_former_keywords({"alpha": 2.0, "learning_rate": 0.1, "assignment": "exact",
                                                "search_moves": ["add"], "encoder_hidden": 8}, None, None, "local")
    messages = [str(w.message) for w in caught]
    assert len(messages) == 5
    assert "fit(alpha=...) is deprecated and will be removed in the next release; pass priors.alpha instead" in messages
    assert "fit(learning_rate=...) is deprecated and will be removed in the next release; " \
           "pass config.training.learning_rate instead" in messages
    assert any("pass config.model.extra['encoder_hidden'] instead" in m for m in messages)
    assert priors == Priors(alpha=2.0)
    assert config.training == TrainingConfig(learning_rate=0.1, assignment="optimal", graph_estimator="local")
    assert config.after_training.edge_search.moves == ("add",) and config.model.extra == {"encoder_hidden": 8}
    with pytest.warns(FutureWarning):  # given objects are the starting point
        priors, config = apply_former_keywords({"graph_estimator": None, "held_refit": False}, Priors(alpha=4.0),
                                               FitConfig(num_threads=2), "straight-through")
    assert priors == Priors(alpha=4.0) and config.num_threads == 2 and not config.after_training.held_refit
    assert config.training == TrainingConfig(graph_estimator="straight-through")
    assert apply_former_keywords({}, None, None, "local") == (Priors(), FitConfig())
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match="^embedding_dim must be an int >= 1, got None$"):
        apply_former_keywords({"embedding_dim": None}, None, None, "local")  # only graph_estimator=None means "choose"
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match="^unknown two_cycles 'exact'"):
        apply_former_keywords({"two_cycles": "exact"}, None, None, "local")  # only assignment's "exact" was renamed
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match="got the string 'add'$"):
        apply_former_keywords({"search_moves": "add"}, None, None, "local")
    with pytest.raises(TypeError, match=r"^fit\(\) got unexpected keyword argument\(s\) 'a', 'b'$"):
        apply_former_keywords({"b": 1, "a": 2, "alpha": 1.0}, None, None, "local")


def test_settings_are_plain_json_values_without_the_checkpoint():
    logits = np.zeros((2, 2))
    config = FitConfig(training=TrainingConfig(), model=ModelOptions(extra={"f": len, "p": torch.tensor(0.5)}),
                       checkpoint=Checkpointing("run"))
    settings = settings_of({"seed": 3, "out": Path("runs") / "x"}, Priors(edge_logit=logits), config)
    assert settings["priors"] == {"alpha": 1.0, "target_logit": -2.0, "edge_logit": "matrix"}
    assert settings["seed"] == 3 and "checkpoint" not in settings and settings["num_threads"] is None
    assert settings["model"]["extra"] == {"f": "builtin_function_or_method", "p": 0.5}
    assert settings["after_training"] == {"held_refit": True, "order_refit": None, "target_moves": True,
                                          "edge_search": {"rounds": None, "restarts": 3, "moves": ["reverse", "remove"]}}
    assert settings["training"]["schedule"] == {k: (list(v) if isinstance(v, tuple) else v)
                                                for k, v in asdict(PenaltySchedule()).items()}
    assert settings["preprocessing"] == {"standardize": True, "log_transform": False} and settings["search"] is None
    assert settings["out"] == str(Path("runs") / "x")


def test_a_former_keywords_warning_points_at_the_users_call():
    data = simulate(num_variables=3, num_samples=100, seed=0)
    quick = FitConfig(training=TrainingConfig(schedule=PenaltySchedule(first_round_steps=2, round_steps=1, max_rounds=1)),
                      after_training=AfterTraining(held_refit=False))
    with pytest.warns(FutureWarning) as caught:
        fit(data.x, config=quick, alpha=2.0)
    assert [w.filename for w in caught] == [__file__]
