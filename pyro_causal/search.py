"""Local search over DAGs scored by the bound: each single-edge change refitted with the graph held.

The penalty loop picks each edge's direction within one round, while the mixture may still hold
almost every row in the observational component (``docs/method.md``, "The mixture before the
direction is chosen"), so the interventions that orient an edge can be missing from that choice.
Once a DAG is found, its neighbours (each edge reversed or removed and, on request, each absent
edge added) are scored by the quantity variational Bayes compares models with: the bound of a
fit whose graph is held at the candidate, plus the candidate's log prior,

    score(G) = max over seeds of ELBO(q | G) / N + log p(G) / N,

with ``q`` refitted from scratch for every ``G``, so that the mixture, targets and mechanisms
adapt to that graph (continuing from the state found gave scores too noisy to rank).  The best
neighbour replaces the graph while it scores higher, for at most ``rounds`` rounds: hill
climbing, as bnlearn's ``hc`` does with BIC.  :func:`search_edges` runs it on a
:class:`~pyro_causal.result.FitResult`, each graph fitted by
:func:`~pyro_causal.held_refit.fit_with_graph_held`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, replace
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

from .acyclicity import is_dag
from .config import DEFAULT_MOVES, MOVES, EdgeSearch, check_moves
from .held_refit import _problem, fit_with_graph_held

logger = logging.getLogger(__name__)

Move = Tuple[str, int, int]


def neighbours(adjacency: np.ndarray, edge_logit: np.ndarray, moves: Sequence[str] = DEFAULT_MOVES) -> List[Tuple[Move, np.ndarray]]:
    """The DAGs one edge away that the prior allows: an edge reversed or removed, or one added.

    Args:
        adjacency: ``(d, d)`` 0/1 DAG.
        edge_logit: ``(d, d)`` prior logits; ``-inf`` forbids an edge, ``+inf`` requires it.
        moves: which of :data:`MOVES` to propose.

    Returns:
        ``[((move, i, j), graph), ...]``: reversals and removals of each edge ``i -> j``, then
        additions of each absent ``i -> j`` whose graph stays acyclic.
    """
    check_moves(moves)
    found = []
    for i, j in zip(*np.nonzero(adjacency)):
        i, j = int(i), int(j)
        if np.isposinf(edge_logit[i, j]):
            continue
        removed = adjacency.copy()
        removed[i, j] = 0
        if "reverse" in moves and not np.isneginf(edge_logit[j, i]):
            reversed_ = removed.copy()
            reversed_[j, i] = 1
            if is_dag(reversed_):
                found.append((("reverse", i, j), reversed_))
        if "remove" in moves:
            found.append((("remove", i, j), removed))
    if "add" in moves:
        absent = (adjacency == 0) & (adjacency.T == 0) & ~np.eye(len(adjacency), dtype=bool) & ~np.isneginf(edge_logit)
        for i, j in zip(*np.nonzero(absent)):
            added = adjacency.copy()
            added[i, j] = 1
            if is_dag(added):
                found.append((("add", int(i), int(j)), added))
    return found


def graph_log_prior(adjacency: np.ndarray, edge_logit: np.ndarray) -> float:
    """``log p(G)`` under independent ``Bernoulli(sigmoid(lambda_ij))`` edges, over the free pairs.

    Edges fixed by the prior (``lambda = +-inf``) and the diagonal contribute nothing.
    """
    free = np.isfinite(edge_logit)
    np.fill_diagonal(free, False)
    logit = np.where(free, edge_logit, 0.0)
    # log sigmoid(l) = -log(1 + e^-l); log sigmoid(-l) = -log(1 + e^l)
    log_on, log_off = -np.logaddexp(0.0, -logit), -np.logaddexp(0.0, logit)
    return float(np.where(free, np.where(adjacency == 1, log_on, log_off), 0.0).sum())


def hill_climb(start: np.ndarray, edge_logit: np.ndarray, num_rows: int, rounds: int,
               fit_held: Callable[[np.ndarray], "object"], moves: Sequence[str] = DEFAULT_MOVES) -> Tuple["object", Dict]:
    """Hill-climb from the DAG ``start`` over :func:`neighbours`, scoring each by a held fit.

    Args:
        start: ``(d, d)`` DAG found by the penalty loop.
        edge_logit: ``(d, d)`` the user's prior logits (constraints and ``log p(G)``).
        num_rows: ``N``, to put ``log p(G)`` per row beside the bound per row.
        rounds: at most this many moves.
        moves: which of :data:`MOVES` to propose.
        fit_held: ``graph -> FitResult`` of a fit with the graph held (its ``elbo`` is the
            bound per row).

    Returns:
        The held fit of the best graph, and a record: the moves taken and every score.
    """
    def score(result, graph) -> float:
        return float(result.elbo) + graph_log_prior(graph, edge_logit) / num_rows

    start_time = time.perf_counter()
    graph = np.asarray(start, dtype=np.int64)
    best = fit_held(graph)
    best_score = score(best, graph)
    record = {"start_score": round(best_score, 6), "moves": [], "scores": []}
    for _ in range(rounds):
        candidates = []
        for move, candidate in neighbours(graph, edge_logit, moves):
            result = fit_held(candidate)
            value = score(result, candidate)
            candidates.append((value, move, candidate, result))
            record["scores"].append({"move": list(move), "score": round(value, 6), "from": round(best_score, 6)})
            logger.info("edge search: %s %d -> %d scores %.4f (current %.4f)", *move, value, best_score)
        if not candidates:
            break
        value, move, candidate, result = max(candidates, key=lambda c: c[0])
        if value <= best_score:
            break
        graph, best, best_score = candidate, result, value
        record["moves"].append(list(move))
    record["score"] = round(best_score, 6)
    record["seconds"] = round(time.perf_counter() - start_time, 3)
    return best, record


def search_edges(result, rounds: int = 1, *, restarts: int = 3, moves: Sequence[str] = DEFAULT_MOVES):
    """Hill-climb from ``result``'s DAG, each graph scored by :func:`fit_with_graph_held` plus ``log p(G)``.

    Args:
        result: a :class:`~pyro_causal.result.FitResult` of :func:`pyro_causal.fit`.
        rounds: at most this many single-edge changes kept.
        restarts: seeds per held fit (from the fit's ``seed``); the best bound is the score.
        moves: which of :data:`MOVES` to propose.

    Returns:
        The held fit of the graph chosen (``edge_probs`` 0/1), with ``records["edge_search"]``
        (every score, the moves kept) and ``records["searched_from_elbo"]`` (``result.elbo``).
    """
    options = EdgeSearch(rounds=rounds, restarts=restarts, moves=tuple(moves))
    problem = _problem(result)
    n, d = problem.shape
    fits = []

    def fit_held(graph: np.ndarray):
        fits.append(graph)
        return fit_with_graph_held(result, graph, seed=problem.seed, restarts=restarts,
                                   prefix=f"edge search fit {len(fits)}")

    searched, record = hill_climb(result.adjacency, problem.priors.logits(d), n, rounds, fit_held, options.moves)
    record["start_edges"] = [[int(i), int(j)] for i, j in zip(*np.nonzero(result.adjacency))]
    after = dict(result.settings["after_training"], edge_search={**asdict(options), "moves": list(options.moves)})
    records = {**result.records, "skipped_steps": searched.records["skipped_steps"], "edge_search": record,
               "searched_from_elbo": result.elbo}
    return replace(searched, settings={**result.settings, "after_training": after}, records=records,
                   seed=searched.seed, wall_time=result.wall_time + record["seconds"])
