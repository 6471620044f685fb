"""Simulated SCMs with single-node interventions, as in the paper's section 4.

:func:`simulate` draws an Erdos-Renyi DAG, one mechanism per variable and one intervention
per variable, then samples ``floor(n / (d + 1))`` rows from each interventional regime and
the rest from the observational one.  :func:`simulate_cause_effect` draws the two-variable
problem of the paper's Figure 3.  Everything is reproducible from ``seed`` (one
``numpy.random.Generator``, consumed in a fixed order: graph, mechanisms, noise).

Mechanisms (``eps_j ~ N(0, sigma_j^2)``, ``sigma_j ~ U(noise_std_range)``):

* ``"linear"``: ``x_j = sum_i w_ij x_i + eps_j`` with ``|w_ij| ~ U(weight_range)`` and a
  random sign, so weights are bounded away from zero (as NOTEARS and DCDI do);
* ``"mlp"``: additive noise, ``x_j = MLP_j(pa_j) + eps_j``;
* ``"nonadditive"``: the noise enters the network, ``x_j = MLP_j([pa_j, eps_j])``.

Each MLP has one hidden layer of ``U{10..20}`` units (leaky ReLU, slope 0.1, for ``"mlp"``;
tanh for ``"nonadditive"``), input weights ``N(0, 1 / fan_in)``, biases ``U(-1, 1)`` and
output weights ``N(0, 2 / hidden)``; the fan-in scaling keeps values from growing along
long causal chains.

Interventions (regime ``k = 1..d`` targets variable ``k - 1``):

* ``"stochastic"`` (alias ``"perfect"``, same data for the same seed): the parents are cut
  and ``x_j ~ N(intervention_mean, 1)`` (DCDI's "shifted normal");
* ``"imperfect"``: the parents are kept and the mechanism changes: linear weights are
  redrawn with the opposite sign, an MLP's output weights get ``N(0, 2 / hidden)`` added, and
  the noise mean moves from 0 to ``intervention_mean`` (so roots change too, and a sign flip
  cannot leave the marginal of ``x_j`` unchanged).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from .io import PathLike, write_csv, write_matrix_csv

MECHANISMS = ("linear", "mlp", "nonadditive")
INTERVENTIONS = ("stochastic", "perfect", "imperfect")
HIDDEN_RANGE = (10, 20)
LEAKY_SLOPE = 0.1


@dataclass
class SimulatedData:
    """Samples of an SCM under single-node interventions, and the ground truth.

    Attributes:
        x: ``(n, d)`` float64 samples, rows grouped by regime (0 first).
        adjacency: ``(d, d)`` int 0/1 graph, ``(i, j) = 1`` iff ``i -> j``.
        regimes: ``(n,)`` int regime of each row, in ``0..R-1``; 0 is observational.
        targets: ``(R, d)`` int 0/1, row ``k`` marks the variables regime ``k`` intervenes on;
            row 0 is all zero.  For :func:`simulate`, ``R = d + 1`` and regime ``k`` targets
            variable ``k - 1``.
        names: the ``d`` variable names.
        mechanism: ``"linear"``, ``"mlp"`` or ``"nonadditive"``.
        intervention: ``"stochastic"``, ``"perfect"`` or ``"imperfect"``.
        edges_per_node: expected number of edges per node ``e`` (expected total ``e * d``).
        seed: the seed everything was drawn from.
        weights: ``(d, d)`` observational edge weights of a linear SCM (0 off the graph),
            ``None`` for the other mechanisms.
        intervention_mean: the ``intervention_mean`` the data were drawn with.
        mechanisms: the true ``(observational, intervened)`` mechanisms, one per variable each
            (private; read through :meth:`regime_log_likelihood`).

    Example:
        >>> data = simulate(num_variables=5, num_samples=600, seed=1)
        >>> data.x.shape, data.targets.shape, data.names[0]
        ((600, 5), (6, 5), 'X0')
    """

    x: np.ndarray
    adjacency: np.ndarray
    regimes: np.ndarray
    targets: np.ndarray
    names: List[str]
    mechanism: str
    intervention: str
    edges_per_node: float
    seed: int
    weights: Optional[np.ndarray] = None
    intervention_mean: float = 2.0
    mechanisms: Optional[Tuple[List["_Mechanism"], List["_Mechanism"]]] = field(default=None, repr=False)

    @property
    def num_variables(self) -> int:
        return self.x.shape[1]

    @property
    def num_regimes(self) -> int:
        return self.targets.shape[0]

    def regime_log_likelihood(self) -> np.ndarray:
        """``(n, R)`` ``log p(x_i | regime k)`` under the true SCM (additive-noise mechanisms).

        Each regime's density is the product of the true conditionals (eq. 8 with the true
        mechanisms): ``N(x_j; f_j(pa_j), sigma_j^2)``, replaced for the regime's target by
        ``N(x_j; intervention_mean, 1)`` (stochastic) or by the changed mechanism (imperfect).

        Raises:
            ValueError: non-additive mechanisms (their conditional density has no closed form)
                or data without the true mechanisms (built by hand, or read from files).
        """
        if self.mechanisms is None:
            raise ValueError("these data carry no true mechanisms (only simulate() and "
                             "simulate_cause_effect() record them)")
        if self.mechanism == "nonadditive":
            raise ValueError("the non-additive mechanisms' conditional density has no closed form")
        observed, intervened = self.mechanisms
        zero = np.zeros(len(self.x))  # noise 0: the mechanisms return their conditional means
        log_obs = np.empty_like(self.x)
        log_int = np.empty_like(self.x)
        for j, (before, after) in enumerate(zip(observed, intervened)):
            value = self.x[:, j]
            log_obs[:, j] = _log_normal(value, before(self.x, zero), before.noise_std)
            if self.intervention == "imperfect":
                log_int[:, j] = _log_normal(value, after(self.x, zero), after.noise_std)
            else:
                log_int[:, j] = _log_normal(value, np.full_like(value, self.intervention_mean), 1.0)
        # regime k swaps the observational conditional of its targets for the intervened one
        return log_obs.sum(1, keepdims=True) + (log_int - log_obs) @ self.targets.T.astype(float)

    def regime_posterior(self) -> np.ndarray:
        """``(n, R)`` ``p(regime | x_i)`` under the true SCM and the regimes' proportions.

        Its argmax is the Bayes classifier: no estimate of the assignments can beat it on
        average, so its adjusted Rand index is the ceiling of any method's on these data.
        """
        log_joint = self.regime_log_likelihood() + np.log(np.bincount(self.regimes, minlength=self.num_regimes))
        log_joint -= log_joint.max(1, keepdims=True)
        probs = np.exp(log_joint)
        return probs / probs.sum(1, keepdims=True)


@dataclass
class _Mechanism:
    """``x_j`` given its parents' values and its standard-normal noise ``eps``."""

    kind: str
    parents: np.ndarray  # (p,) indices
    w_in: np.ndarray  # linear: (p,); mlp: (p, h); nonadditive: (p + 1, h), noise last
    noise_std: float
    b_in: Optional[np.ndarray] = None  # (h,)
    w_out: Optional[np.ndarray] = None  # (h,)
    noise_mean: float = 0.0

    def __call__(self, x: np.ndarray, eps: np.ndarray) -> np.ndarray:
        """``(m, d)`` values (parents final), ``(m,)`` noise -> ``(m,)`` values of ``x_j``."""
        inputs, noise = x[:, self.parents], self.noise_mean + self.noise_std * eps
        if self.kind == "linear":
            return inputs @ self.w_in + noise
        if self.kind == "nonadditive":
            return np.tanh(np.column_stack([inputs, noise]) @ self.w_in + self.b_in) @ self.w_out
        hidden = inputs @ self.w_in + self.b_in
        return np.where(hidden > 0, hidden, LEAKY_SLOPE * hidden) @ self.w_out + noise


def _log_normal(value: np.ndarray, mean: np.ndarray, std: float) -> np.ndarray:
    return -0.5 * ((value - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2.0 * np.pi)


def _signed_uniform(rng: np.random.Generator, low_high: Tuple[float, float], size: int) -> np.ndarray:
    return rng.uniform(*low_high, size) * rng.choice([-1.0, 1.0], size)


def _draw_mechanism(kind: str, parents: np.ndarray, rng: np.random.Generator,
                    weight_range: Tuple[float, float], noise_std: float) -> _Mechanism:
    if kind == "linear":
        return _Mechanism(kind, parents, _signed_uniform(rng, weight_range, parents.size), noise_std)
    hidden = int(rng.integers(HIDDEN_RANGE[0], HIDDEN_RANGE[1] + 1))
    fan_in = parents.size + (kind == "nonadditive")
    w_in = rng.normal(0.0, 1.0 / np.sqrt(max(fan_in, 1)), (fan_in, hidden))
    b_in = rng.uniform(-1.0, 1.0, hidden)
    w_out = rng.normal(0.0, np.sqrt(2.0 / hidden), hidden)
    return _Mechanism(kind, parents, w_in, noise_std, b_in, w_out)


def _perturb(mech: _Mechanism, rng: np.random.Generator, weight_range: Tuple[float, float],
             noise_mean: float) -> _Mechanism:
    """The imperfect intervention's mechanism: same parents, new parameters and noise mean."""
    if mech.kind == "linear":
        magnitude = rng.uniform(*weight_range, mech.parents.size)
        return replace(mech, w_in=-np.sign(mech.w_in) * magnitude, noise_mean=noise_mean)
    change = rng.normal(0.0, np.sqrt(2.0 / mech.w_out.size), mech.w_out.size)
    return replace(mech, w_out=mech.w_out + change, noise_mean=noise_mean)


def erdos_renyi_dag(num_variables: int, edges_per_node: float,
                    rng: np.random.Generator) -> np.ndarray:
    """A random DAG: a random order, each forward pair an edge with ``p = 2 e / (d - 1)``.

    The expected number of edges is ``p * d (d - 1) / 2 = e * d``, i.e. ``e`` edges per node
    (``e`` parents and ``e`` children on average), DCDI's convention.

    Returns:
        ``(d, d)`` int 0/1 adjacency, ``(i, j) = 1`` iff ``i -> j``.
    """
    d = num_variables
    p = 2.0 * edges_per_node / (d - 1)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"edges_per_node={edges_per_node} is impossible with {d} variables; "
                         f"it must lie in [0, {(d - 1) / 2}]")
    order = rng.permutation(d)
    upper = np.triu(rng.random((d, d)) < p, k=1).astype(np.int64)
    adjacency = np.zeros((d, d), dtype=np.int64)
    adjacency[np.ix_(order, order)] = upper
    return adjacency


def _topological_order(adjacency: np.ndarray) -> List[int]:
    order, remaining = [], adjacency.copy()
    ready = [j for j in range(len(adjacency)) if not remaining[:, j].any()]
    while ready:
        i = ready.pop(0)
        order.append(i)
        for j in np.flatnonzero(remaining[i]):
            remaining[i, j] = 0
            if not remaining[:, j].any():
                ready.append(j)
    return order


def _regime_sizes(num_samples: int, num_regimes: int) -> np.ndarray:
    """``floor(n / R)`` rows per regime, the remainder to the observational regime 0."""
    if num_samples < num_regimes:
        raise ValueError(f"num_samples={num_samples} is fewer than the {num_regimes} regimes")
    sizes = np.full(num_regimes, num_samples // num_regimes)
    sizes[0] += num_samples % num_regimes
    return sizes


def _sample_scm(adjacency: np.ndarray, mechanism: str, intervention: str, num_samples: int,
                rng: np.random.Generator, weight_range: Tuple[float, float],
                noise_std_range: Tuple[float, float],
                intervention_mean: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple]:
    """Draw mechanisms and samples for ``adjacency``, one single-node regime per variable.

    Returns:
        ``x`` ``(n, d)``, ``regimes`` ``(n,)``, ``targets`` ``(d + 1, d)``, observational
        ``weights`` ``(d, d)`` (zeros unless linear), the ``(observational, intervened)``
        mechanisms.
    """
    if mechanism not in MECHANISMS:
        raise ValueError(f"unknown mechanism {mechanism!r}; choose one of {', '.join(MECHANISMS)}")
    if intervention not in INTERVENTIONS:
        raise ValueError(f"unknown intervention {intervention!r}; "
                         f"choose one of {', '.join(INTERVENTIONS)}")
    d = len(adjacency)
    targets = np.vstack([np.zeros((1, d), np.int64), np.eye(d, dtype=np.int64)])
    regimes = np.repeat(np.arange(d + 1), _regime_sizes(num_samples, d + 1))
    noise_std = rng.uniform(*noise_std_range, d)
    mechs = [_draw_mechanism(mechanism, np.flatnonzero(adjacency[:, j]), rng, weight_range,
                             noise_std[j]) for j in range(d)]
    changed = [_perturb(m, rng, weight_range, intervention_mean) for m in mechs]
    eps = rng.standard_normal((num_samples, d))
    x = np.zeros((num_samples, d))
    for j in _topological_order(adjacency):
        x[:, j] = mechs[j](x, eps[:, j])
        rows = targets[regimes, j] == 1
        if intervention == "imperfect":
            x[rows, j] = changed[j](x[rows], eps[rows, j])
        else:  # stochastic / perfect: parents cut, a new distribution
            x[rows, j] = intervention_mean + eps[rows, j]
    weights = np.zeros((d, d))
    if mechanism == "linear":
        for j, m in enumerate(mechs):
            weights[m.parents, j] = m.w_in
    return x, regimes, targets, weights, (mechs, changed)


def simulate(num_variables: int = 10, edges_per_node: float = 1.0, num_samples: int = 10000,
             mechanism: str = "linear", intervention: str = "stochastic", seed: int = 0, *,
             weight_range: Tuple[float, float] = (0.5, 2.0),
             noise_std_range: Tuple[float, float] = (0.5, 1.0),
             intervention_mean: float = 2.0) -> SimulatedData:
    """Simulate an Erdos-Renyi SCM with one single-node intervention per variable (section 4).

    Args:
        num_variables: ``d >= 2``; variables are named ``X0..X{d-1}``.
        edges_per_node: ``e``, expected edges per node (``e * d`` in all; the paper uses 1, 4).
        num_samples: ``n``; each of the ``d`` interventional regimes gets ``floor(n / (d + 1))``
            rows, the observational regime 0 the rest.
        mechanism: ``"linear"``, ``"mlp"`` or ``"nonadditive"`` (see the module docstring).
        intervention: ``"stochastic"`` (= ``"perfect"``) or ``"imperfect"``.
        seed: seed of the ``numpy.random.Generator`` that draws everything.
        weight_range: bounds of ``|w_ij|`` (linear mechanisms and imperfect interventions).
        noise_std_range: bounds of each variable's noise standard deviation.
        intervention_mean: mean of the ``N(mean, 1)`` that replaces a variable under a
            stochastic intervention; the noise mean under an imperfect one.

    Returns:
        :class:`SimulatedData` with ``x`` ``(n, d)`` and ``targets`` ``(d + 1, d)``.
    """
    if num_variables < 2:
        raise ValueError(f"num_variables must be >= 2, got {num_variables}")
    rng = np.random.default_rng(seed)
    adjacency = erdos_renyi_dag(num_variables, edges_per_node, rng)
    x, regimes, targets, weights, mechanisms = _sample_scm(adjacency, mechanism, intervention, num_samples,
                                                           rng, weight_range, noise_std_range,
                                                           intervention_mean)
    return SimulatedData(x=x, adjacency=adjacency, regimes=regimes, targets=targets,
                         names=[f"X{j}" for j in range(num_variables)], mechanism=mechanism,
                         intervention=intervention, edges_per_node=float(edges_per_node),
                         seed=seed, weights=weights if mechanism == "linear" else None,
                         intervention_mean=intervention_mean, mechanisms=mechanisms)


def simulate_cause_effect(num_samples: int = 999, seed: int = 0, *,
                          intervention: str = "stochastic",
                          weight_range: Tuple[float, float] = (0.5, 2.0),
                          noise_std_range: Tuple[float, float] = (0.5, 1.0),
                          intervention_mean: float = 2.0) -> SimulatedData:
    """The paper's cause-effect problem: a linear Gaussian SCM on ``A`` and ``B``.

    The graph is ``A -> B``, ``B -> A`` or no edge, each with probability 1/3 (all three share
    a Markov equivalence class).  Regimes: 0 observational, 1 intervenes on ``A``, 2 on ``B``,
    ``floor(n / 3)`` rows each (333 for the paper's ``n = 999``).  ``edges_per_node`` is
    recorded as its expectation, 1/3.  ``weight_range``, ``noise_std_range`` and
    ``intervention_mean`` are :func:`simulate`'s.

    Returns:
        :class:`SimulatedData` with ``x`` ``(n, 2)``, ``names == ["A", "B"]``.
    """
    rng = np.random.default_rng(seed)
    adjacency = np.zeros((2, 2), dtype=np.int64)
    graph = rng.integers(3)  # 0: A -> B, 1: B -> A, 2: no edge
    if graph < 2:
        adjacency[graph, 1 - graph] = 1
    x, regimes, targets, weights, mechanisms = _sample_scm(adjacency, "linear", intervention, num_samples, rng,
                                                           weight_range, noise_std_range, intervention_mean)
    return SimulatedData(x=x, adjacency=adjacency, regimes=regimes, targets=targets,
                         names=["A", "B"], mechanism="linear", intervention=intervention,
                         edges_per_node=1.0 / 3.0, seed=seed, weights=weights, mechanisms=mechanisms)


def write_simulation(data: SimulatedData, path: PathLike, *, include_regimes: bool = False,
                     overwrite: bool = False) -> Dict[str, Path]:
    """Write the samples to ``path`` and the truth beside it.

    Files, for ``path = "dir/sim.csv"``:

    * ``dir/sim.csv``: header of names (plus ``regime`` with ``include_regimes``), one row per
      sample;
    * ``dir/sim_adjacency.csv``: ``(d, d)`` 0/1, header row and first column of names;
    * ``dir/sim_regimes.csv``: header ``regime``, one label per sample;
    * ``dir/sim_targets.csv``: header of names, one 0/1 row per regime (readable with
      :func:`pyro_causal.io.read_targets`).

    Raises:
        FileExistsError: one of the files exists and ``overwrite`` is false (nothing is
            written then).

    Returns:
        The paths written, keyed ``"data"``, ``"adjacency"``, ``"regimes"``, ``"targets"``.
    """
    path = Path(path)
    paths = {"data": path}
    for kind in ("adjacency", "regimes", "targets"):
        paths[kind] = path.with_name(f"{path.stem}_{kind}.csv")
    if not overwrite:
        for p in paths.values():
            if p.exists():
                raise FileExistsError(f"{p} exists; pass overwrite=True to replace it")
    if include_regimes and "regime" in data.names:
        raise ValueError("a variable is already named 'regime'")
    path.parent.mkdir(parents=True, exist_ok=True)
    if include_regimes:
        rows = (row + [r] for row, r in zip(data.x.tolist(), data.regimes.tolist()))
        write_csv(path, [*data.names, "regime"], rows)
    else:
        write_matrix_csv(path, data.x, data.names)
    write_matrix_csv(paths["adjacency"], data.adjacency, data.names, row_names=data.names)
    write_matrix_csv(paths["regimes"], data.regimes[:, None], ["regime"])
    write_matrix_csv(paths["targets"], data.targets, data.names)
    return paths
