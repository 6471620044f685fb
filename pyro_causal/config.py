"""The options of :func:`pyro_causal.fit` beyond its keywords: documented dataclasses.

``fit(x, priors=Priors(...), config=FitConfig(...))``.  ``FitResult.settings`` and
``summary.json`` are :func:`dataclasses.asdict` of these objects as the fit resolved them
(:func:`settings_of`), so every option has one name everywhere.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .checkpoint import Checkpointing
from .trainer import TrainingConfig
from .warn import warn_at_caller

TWO_CYCLES = ("resolve", "allow")
SEARCHES = ("order", "penalty")
MOVES = ("reverse", "remove", "add")
DEFAULT_MOVES = ("reverse", "remove")
"""Additions are off by default: a graph with one more edge is penalised only by its prior (the
mechanisms' weights are point estimates), less than the spread of held fits (:class:`EdgeSearch`)."""
DEFAULT_EDGE_LOGITS = {"order": -6.0, "penalty": -2.0}
"""``lambda`` of ``Priors(edge_logit=None)``, by ``FitConfig.search``: the order search opens every
edge along its order and decides each by its likelihood gain at point-estimated mechanisms,
which is positive for an absent edge too (the coefficients fit the noise), so it needs a
stronger prior than the penalty loop.  The order-refit rounds after the loop open the edges
along an order too; with network mechanisms (``ConditionalDensity.network_mechanisms``), whose
weights fit noise through any extra input, ``fit`` gives them the order search's value
(``docs/method.md``, departures)."""
PAIR_SEARCH_ROUNDS = 1
"""Edge-search rounds ``fit`` runs on two-variable data unless told otherwise (``EdgeSearch(rounds=None)``)."""


def check_moves(moves: Sequence[str]) -> None:
    """Raise ``ValueError`` naming any move that is not one of :data:`MOVES`."""
    unknown = set(moves) - set(MOVES)
    if unknown:
        raise ValueError(f"unknown search move(s) {sorted(unknown)}; choose from {', '.join(MOVES)}")


def _choice(name: str, value, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")


def _count(name: str, value, least: int, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise ValueError(f"{name} must be an int >= {least}{' or None' if optional else ''}, got {value!r}")


@dataclass
class Priors:
    """The priors of section 3.5.

    Attributes:
        alpha: Dirichlet-process concentration of the stick weights ``Beta(1, alpha)``.
        target_logit: ``gamma``, the prior logit of each intervention target.
        edge_logit: ``lambda``, the prior logit of each edge: a number or a ``(d, d)`` matrix
            (``+inf`` requires an edge, ``-inf`` forbids it; see :mod:`pyro_causal.priors`);
            ``None``: :data:`DEFAULT_EDGE_LOGITS` of the search ``fit`` runs, the order search's
            where order-refit rounds follow the loop with network mechanisms (:meth:`resolved`).
    """

    alpha: float = 1.0
    target_logit: float = -2.0
    edge_logit: Union[None, float, np.ndarray, torch.Tensor] = None

    def __post_init__(self) -> None:
        if not (self.alpha > 0 and math.isfinite(self.alpha)):
            raise ValueError(f"alpha must be a finite number > 0, got {self.alpha!r}")
        if not math.isfinite(self.target_logit):
            raise ValueError(f"target_logit must be finite, got {self.target_logit!r}")

    def resolved(self, search: str, network_rounds: bool = False) -> "Priors":
        """These priors with ``edge_logit=None`` replaced by the default of ``search``
        (``"order"`` or ``"penalty"``, :data:`DEFAULT_EDGE_LOGITS`), or by the order search's when
        ``network_rounds`` (order-refit rounds follow the loop with network mechanisms)."""
        _choice("search", search, SEARCHES)
        if self.edge_logit is not None:
            return self
        return replace(self, edge_logit=DEFAULT_EDGE_LOGITS["order" if network_rounds else search])

    def logits(self, d: int) -> np.ndarray:
        """``(d, d)`` prior edge logits (``ValueError`` while ``edge_logit`` is ``None``: see :meth:`resolved`)."""
        if self.edge_logit is None:
            raise ValueError("edge_logit is None (chosen by the search): use Priors.resolved(search) first")
        value = self.edge_logit.detach().cpu().numpy() if isinstance(self.edge_logit, torch.Tensor) else self.edge_logit
        return np.broadcast_to(np.asarray(value, dtype=float), (d, d)).copy()


@dataclass
class Preprocessing:
    """What is done to the data before fitting (:func:`pyro_causal.preprocessing.prepare_data`).

    Attributes:
        standardize: centre and scale each column (recommended: raw scales leak the order).
        log_transform: take ``log`` of every value first (all values must be > 0).
    """

    standardize: bool = True
    log_transform: bool = False


@dataclass
class ModelOptions:
    """Options of the :class:`~pyro_causal.model.LatentInterventionModel` that ``fit`` builds.

    Attributes:
        embedding_dim: ``h``, the size of each component's intervention embedding.
        two_cycles: ``"resolve"`` (sampled graphs never hold both ``i -> j`` and ``j -> i``: a
            fair coin keeps one) or ``"allow"`` (the paper's independent edges).
        density_options: keyword arguments of the density family (``{"activation": "tanh"}``...).
        extra: other model arguments (``stick_prior``, ``target_prior``, ``encoder_hidden``).
    """

    embedding_dim: int = 16
    two_cycles: str = "resolve"
    density_options: Optional[Dict[str, Any]] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _count("embedding_dim", self.embedding_dim, 1)
        _choice("two_cycles", self.two_cycles, TWO_CYCLES)


@dataclass
class EdgeSearch:
    """Local search over DAGs after training (:func:`pyro_causal.search_edges`).

    Attributes:
        rounds: at most this many single-edge changes kept; 0 turns the search off; ``None``:
            :data:`PAIR_SEARCH_ROUNDS` for two variables (a cause-effect pair: at most two
            moves, so the search costs about one more fit), else 0 (a round costs
            ``2 x edges x restarts`` held fits).
        restarts: seeds per fit with the graph held (its best bound is the graph's score).
        moves: changes proposed, from ``("reverse", "remove", "add")``.  Additions are off by
            default: a graph with one more edge is penalised only by its prior, less than the
            spread of held fits.
    """

    rounds: Optional[int] = None
    restarts: int = 3
    moves: Tuple[str, ...] = DEFAULT_MOVES

    def __post_init__(self) -> None:
        _count("edge_search.rounds", self.rounds, 0, optional=True)
        _count("edge_search.restarts", self.restarts, 1)
        if isinstance(self.moves, str):
            raise ValueError(f"edge_search.moves must be a sequence of moves, got the string {self.moves!r}")
        self.moves = tuple(self.moves)
        check_moves(self.moves)


@dataclass
class AfterTraining:
    """Steps after the search (penalty loop or order search), each also callable on a :class:`~pyro_causal.result.FitResult`.

    Attributes:
        held_refit: refit the mixture and mechanisms with the graph held at the DAG found and
            keep the refit when its bound is higher (:func:`pyro_causal.refit_with_graph_held`).
        order_refit: rounds of order search from the mixture and refit inside the order found,
            each kept while the bound rises (:func:`pyro_causal.held_refit.refit_in_searched_order`);
            ``None``: :func:`pyro_causal.api.default_order_rounds` (3 on more than two
            variables with interventions to find, after the order search, or when some rows'
            regimes are given; else 0).
        target_moves: the first order-refit round moves the mixture's targets first
            (:func:`pyro_causal.profile_mixture.swap_targets`: closed-form linear-Gaussian
            mechanisms, greedy target and order moves) and refits inside the order that ends in
            (latent regimes only, where order-refit rounds run; see ``docs/method.md``, "After
            the penalty loop").
        edge_search: the :class:`EdgeSearch` run on the result (off by default).
    """

    held_refit: bool = True
    order_refit: Optional[int] = None
    target_moves: bool = True
    edge_search: EdgeSearch = field(default_factory=EdgeSearch)

    def __post_init__(self) -> None:
        _count("order_refit", self.order_refit, 0, optional=True)


@dataclass
class FitConfig:
    """Everything ``fit`` can be told beyond its keywords.

    Attributes:
        search: how the DAG is searched: ``"order"`` trains inside a random order of the
            variables (every graph drawn is a DAG, no penalty), then searches orders from the
            mixture found and refits inside each (``after_training.order_refit`` rounds);
            ``"penalty"`` is the paper's augmented-Lagrangian loop on ``h``, then the order refit
            where configured; ``None``: ``"penalty"`` (:func:`pyro_causal.api.choose_search`).
        training: the :class:`~pyro_causal.trainer.TrainingConfig` (learning rate, penalty
            schedule, ``q(z)`` family...); ``None``: its defaults with the edge gradient chosen
            from the problem (``"local"`` when some rows' regimes are given and the density
            provides edge gains, else ``"straight-through"``).  ``fit(batch_size=)`` sets its
            ``batch_size``.
        preprocessing: :class:`Preprocessing` of the data.
        model: :class:`ModelOptions` of the model built.
        after_training: :class:`AfterTraining` steps (held refit, order refit, edge search).
        num_threads: torch threads during the fit (restored after); ``None`` chooses from the
            problem's size (:func:`pyro_causal.resources.choose_num_threads`).
        checkpoint: a :class:`~pyro_causal.checkpoint.Checkpointing` (single fits only; not in ``settings``).
    """

    search: Optional[str] = None
    training: Optional[TrainingConfig] = None
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    model: ModelOptions = field(default_factory=ModelOptions)
    after_training: AfterTraining = field(default_factory=AfterTraining)
    num_threads: Optional[int] = None
    checkpoint: Optional[Checkpointing] = None

    def __post_init__(self) -> None:
        if self.search is not None:
            _choice("search", self.search, SEARCHES)
        _count("num_threads", self.num_threads, 1, optional=True)
        expected = {"training": TrainingConfig, "preprocessing": Preprocessing, "model": ModelOptions,
                    "after_training": AfterTraining, "checkpoint": Checkpointing}
        for name, kind in expected.items():
            value = getattr(self, name)
            if not isinstance(value, kind) and not (value is None and name in ("training", "checkpoint")):
                raise TypeError(f"FitConfig.{name} must be a {kind.__name__}, got {type(value).__name__}")


# ----------------------------------------------------------------------------- former keywords
FORMER_KEYWORDS: Dict[str, str] = {
    "embedding_dim": "model.embedding_dim",
    "two_cycles": "model.two_cycles",
    "density_options": "model.density_options",
    "alpha": "priors.alpha",
    "target_logit": "priors.target_logit",
    "edge_logit": "priors.edge_logit",
    "supervision_weight": "training.supervision_weight",
    "assignment": "training.assignment",
    "graph_estimator": "training.graph_estimator",
    "learning_rate": "training.learning_rate",
    "schedule": "training.schedule",
    "num_particles": "training.num_particles",
    "standardize": "preprocessing.standardize",
    "log_transform": "preprocessing.log_transform",
    "held_refit": "after_training.held_refit",
    "order_refit": "after_training.order_refit",
    "edge_search": "after_training.edge_search.rounds",
    "search_restarts": "after_training.edge_search.restarts",
    "search_moves": "after_training.edge_search.moves",
    "num_threads": "num_threads",
    "checkpoint": "checkpoint",
}
"""``fit`` keywords of release 0.1 that moved into :class:`FitConfig` or :class:`Priors`:
``name -> path`` (``priors.*`` is the ``priors=`` keyword, the rest ``config=``)."""

MODEL_EXTRAS = ("stick_prior", "target_prior", "encoder_hidden")
"""Former ``**model_options`` of ``fit``: now ``ModelOptions.extra``."""


def with_field(obj, path: Sequence[str], value):
    """A copy of dataclass ``obj`` with the field at ``path`` replaced."""
    head, *rest = path
    return replace(obj, **{head: with_field(getattr(obj, head), rest, value) if rest else value})


def apply_former_keywords(options: Dict[str, Any], priors: Optional[Priors], config: Optional[FitConfig],
                          graph_estimator: str) -> Tuple[Priors, FitConfig]:
    """Map former ``fit`` keywords into ``(priors, config)`` with a ``FutureWarning`` naming each new place.

    ``graph_estimator``: the training default chosen from the problem, used when the former
    keywords create the :class:`~pyro_causal.trainer.TrainingConfig`.  Raises ``TypeError``
    naming a keyword ``fit`` never took.
    """
    priors, config = priors or Priors(), config or FitConfig()
    unknown = sorted(set(options) - set(FORMER_KEYWORDS) - set(MODEL_EXTRAS))
    if unknown:
        raise TypeError(f"fit() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}")
    for name, value in options.items():
        path = FORMER_KEYWORDS.get(name, f"model.extra[{name!r}]")
        place = path if path.startswith("priors.") else f"config.{path}"
        warn_at_caller(f"fit({name}=...) is deprecated and will be removed in the next release; "
                       f"pass {place} instead", FutureWarning)
        if name in MODEL_EXTRAS:
            config = with_field(config, ("model", "extra"), {**config.model.extra, name: value})
        elif path.startswith("priors."):
            priors = with_field(priors, path.split(".")[1:], value)
        else:
            if path.startswith("training.") and config.training is None:
                config = replace(config, training=TrainingConfig(graph_estimator=graph_estimator))
            if name == "graph_estimator" and value is None:
                continue
            value = "optimal" if name == "assignment" and value == "exact" else value  # its former name
            config = with_field(config, path.split("."), value)
    return priors, config


# ----------------------------------------------------------------------------- settings
def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return "matrix" if np.ndim(value) else float(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value) if hasattr(value, "__fspath__") else type(value).__name__


def settings_of(keywords: Dict[str, Any], priors: Priors, config: FitConfig) -> Dict[str, Any]:
    """``FitResult.settings``: ``fit``'s keywords as used, ``asdict(priors)`` and ``asdict(config)``
    (``training`` resolved) but its ``checkpoint`` (where the state is saved, not how the fit
    runs: a resumed fit has the settings of one run straight through), JSON-ready: a matrix of
    edge logits is ``"matrix"``, an object its class name."""
    kept = [f.name for f in fields(config) if f.name != "checkpoint"]
    dicts = {"priors": asdict(priors), **{name: getattr(config, name) for name in kept}}
    for name in ("training", "preprocessing", "model", "after_training"):
        dicts[name] = asdict(dicts[name])
    return _plain({**keywords, **dicts})
