"""Working with the fitted posterior: assignments, components, predictive draws, ArviZ export.

Point values or draws of the global latents (:func:`posterior_sites`) are plugged into the
model's Pyro program (sites ``graph``, ``v``, ``u``, ``r``, ``z``, ``x``): exact and MAP
assignments (eq. 8 and Bayes' rule; Pyro's ``infer_discrete``), component summaries,
predictive rows under any component, and guide draws as ArviZ ``InferenceData``.

Rows ``x`` are in the original units (as given to :func:`~pyro_causal.fit`) when a
``FitResult`` is passed, and already standardised when a bare model is passed.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Union

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.distributions import Bernoulli
from pyro.infer import infer_discrete
from torch import Tensor

from .acyclicity import dag_from_probabilities
from .distributions import expected_log_stick_weights, stick_breaking_log_weights
from .io import OutputError, PathLike, atomic_write
from .model import LatentInterventionModel
from .result import FitResult

if TYPE_CHECKING:  # pragma: no cover
    import arviz

ASSIGNMENTS = ("amortized", "exact")
ResultOrModel = Union[FitResult, LatentInterventionModel]
Rows = Optional[Union[np.ndarray, Tensor]]


# --------------------------------------------------------------------------- helpers
def _model(result_or_model: ResultOrModel) -> LatentInterventionModel:
    return result_or_model.model if isinstance(result_or_model, FitResult) else result_or_model


def _like(model: LatentInterventionModel) -> Tensor:
    return model.guide.edge_logits  # a tensor with the model's dtype and device


def _data(result_or_model: ResultOrModel, x) -> Tensor:
    """``x`` as a model-side tensor ``(n, d)`` (standardised from original units for a result)."""
    if isinstance(result_or_model, FitResult):
        return result_or_model._tensor(x)
    if x is None:
        raise ValueError("pass the data x: a bare model keeps no training rows")
    return torch.as_tensor(x, dtype=_like(result_or_model).dtype, device=_like(result_or_model).device)


@contextmanager
def _rng(seed: Optional[int], like: Tensor) -> Iterator[None]:
    """Seed a forked torch RNG with ``seed`` (the global stream is left alone); no-op for ``None``."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[like.device] if like.device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def _target_probs(result_or_model: ResultOrModel) -> Tensor:
    """``pi`` with the observational row: ``(K, d)`` (the given targets for the known variant)."""
    model = _model(result_or_model)
    if isinstance(result_or_model, FitResult):
        return torch.as_tensor(result_or_model.target_probs).to(_like(model))
    return model.full_targets(model.guide.target_probs().detach())


def _adjacency(result_or_model: ResultOrModel) -> Tensor:
    if isinstance(result_or_model, FitResult):
        adjacency = result_or_model.adjacency
    else:
        adjacency = dag_from_probabilities(result_or_model.guide.edge_probs().detach().cpu().numpy())
    return torch.as_tensor(np.asarray(adjacency)).to(_like(_model(result_or_model)))


def _to_original(result: FitResult, x: np.ndarray) -> np.ndarray:
    """Undo :class:`~pyro_causal.preprocessing.Standardizer`: scale, shift, then ``exp`` if log-transformed."""
    s = result.standardizer
    x = np.asarray(x, dtype=float) * s.scale + s.mean
    return np.exp(x) if s.log_transform else x


def _assignments(result: FitResult, x, assignment: str) -> np.ndarray:
    if assignment not in ASSIGNMENTS:
        raise ValueError(f"unknown assignment {assignment!r}; choose one of {', '.join(ASSIGNMENTS)}")
    return result.assignment_probs(x) if assignment == "amortized" else exact_assignment_probs(result, x)


# --------------------------------------------------------------------------- global sites
@torch.no_grad()
def posterior_sites(result_or_model: ResultOrModel, *, draw: bool = False, seed: Optional[int] = None) -> Dict[str, Tensor]:
    """Values of the model's global sites, ready for ``poutine.condition``.

    Args:
        result_or_model: a fit or a bare model.
        draw: ``False``: ``v = E_q[v]``, ``u = E_q[u]``, ``r = round(pi)``; ``True``: one draw of
            each from the guide. ``graph`` is always the fitted DAG (``result.adjacency``).
        seed: seeds the draw (the global torch RNG is left untouched).

    Returns:
        ``{"graph": (d, d), "u": (K, h)}`` plus ``"v": (K - 1,)`` and ``"r": (K - 1, d)`` when ``K > 1``.
    """
    model = _model(result_or_model)
    guide = model.guide
    pi = _target_probs(result_or_model)[1:]
    with _rng(seed, _like(model)):
        sites = {"graph": _adjacency(result_or_model)}
        sites["u"] = guide.embedding_dist().sample() if draw else guide.embedding_loc.detach().clone()
        if model.truncation > 1:
            sites["v"] = guide.stick_dist().sample() if draw else guide.stick_dist().mean
            sites["r"] = Bernoulli(probs=pi).sample() if draw else pi.round()
    return sites


# --------------------------------------------------------------------------- assignments
@torch.no_grad()
def exact_assignment_probs(result_or_model: ResultOrModel, x: Rows = None, *, sites: Optional[Dict[str, Tensor]] = None) -> np.ndarray:
    """``p(z_i = k | x_i, globals)`` for every row: softmax over k of eq. 8 plus ``log beta_k``.

    Without ``sites`` the globals are the posterior summaries: edges ``result.adjacency``,
    embeddings ``E_q[u]``, targets ``pi`` (exact expectation, the likelihood is affine in ``r``)
    and weights ``E_q[log beta]`` (appendix A), i.e. the optimal ``q(z_i)`` given the other
    factors. With ``sites`` (see :func:`posterior_sites`) those values are used and
    ``log beta = log beta(v)``, which is what the Pyro model's ``z`` prior uses.

    Args:
        result_or_model: a fit or a bare model.
        x: ``(n, d)`` rows (default: the training rows of a result).
        sites: optional values of ``graph``, ``v``, ``u``, ``r``.

    Returns:
        ``(n, K)`` probabilities, rows summing to one.
    """
    model = _model(result_or_model)
    xt = _data(result_or_model, x)
    if sites is None:
        adjacency, embeddings = _adjacency(result_or_model), model.guide.embedding_loc
        targets = _target_probs(result_or_model)
        log_weights = xt.new_zeros(1)
        if model.truncation > 1:
            sticks = model.guide.stick_dist()
            log_weights = expected_log_stick_weights(sticks.concentration1, sticks.concentration0)
    else:
        adjacency, embeddings = sites["graph"], sites["u"]
        targets = model.full_targets(sites.get("r", xt.new_zeros(0, model.num_variables)))
        log_weights = stick_breaking_log_weights(sites["v"]) if "v" in sites else xt.new_zeros(1)
    log_joint = model.log_likelihood(xt, adjacency, embeddings, targets).transpose(0, 1) + log_weights
    return torch.softmax(log_joint, -1).cpu().numpy()


@torch.no_grad()
def map_assignments(result_or_model: ResultOrModel, x: Rows = None, *, sites: Optional[Dict[str, Tensor]] = None,
                    temperature: int = 0, seed: Optional[int] = None) -> np.ndarray:
    """MAP (``temperature=0``) or posterior-sampled (``temperature=1``) component of each row.

    Pyro's :func:`~pyro.infer.infer_discrete` on the model's enumerated ``z`` site, the global
    sites fixed by ``poutine.condition`` (as replaying a guide trace without ``z`` would).

    Args:
        result_or_model: a fit or a bare model.
        x: ``(n, d)`` rows (default: the training rows of a result).
        sites: values of the global sites (default: ``posterior_sites(result_or_model)``).
        temperature: ``0`` for the argmax, ``1`` for a sample of ``p(z | x, globals)``.
        seed: seeds the sampling when ``temperature=1``.

    Returns:
        ``(n,)`` int64 component indices.
    """
    model = _model(result_or_model)
    xt = _data(result_or_model, x)
    if model.truncation == 1:  # nothing to infer (and Pyro does not enumerate a single value)
        return np.zeros(xt.shape[0], dtype=np.int64)
    sites = posterior_sites(result_or_model) if sites is None else sites
    decoder = infer_discrete(poutine.condition(model.model, data=sites),
                             first_available_dim=-1 - model.max_plate_nesting, temperature=temperature)
    with pyro.get_param_store().scope(), _rng(seed, xt):
        trace = poutine.trace(decoder).get_trace(xt)
    return trace.nodes["z"]["value"].reshape(-1).long().cpu().numpy()


def expected_components_in_use(result: FitResult, x: Rows = None, *, assignment: str = "exact") -> float:
    """Expected number of non-empty components under the assignment posterior.

    ``E[#{k : some z_i = k}] = sum_k [1 - prod_i (1 - q(z_i = k))]`` with independent rows,
    the product taken in log space (``log1p``) so that thousands of rows do not underflow.

    Args:
        result: a fit.
        x: ``(n, d)`` rows in original units (default: the training rows).
        assignment: ``"amortized"`` (:meth:`FitResult.assignment_probs`) or ``"exact"``
            (:func:`exact_assignment_probs`).

    Returns:
        A float in ``[1, K]``.
    """
    q = torch.as_tensor(_assignments(result, x, assignment), dtype=torch.float64).clamp(0.0, 1.0)
    log_all_elsewhere = torch.log1p(-q).sum(0)  # (K,) log prod_i (1 - q_ik)
    return float((-torch.expm1(log_all_elsewhere)).sum())


def component_summary(result: FitResult, x: Rows = None, *, assignment: str = "exact", min_target_prob: float = 0.5) -> List[dict]:
    """One record per component: weight, size, likely targets and mean shift.

    The shift is computed from assignment-weighted means of the data (not from predictive
    draws): ``m_k = sum_i q_ik x_i / sum_i q_ik`` in the original units, and
    ``shift_kj = m_kj - m_0j`` (component 0 is observational). A component holding no rows
    has ``nan`` shifts.

    Args:
        result: a fit.
        x: ``(n, d)`` rows in original units (default: the training rows).
        assignment: ``"amortized"`` or ``"exact"`` assignment probabilities.
        min_target_prob: variables with ``pi_kj`` above this are listed as targets.

    Returns:
        ``K`` dicts with keys ``component``, ``weight`` (``E_q[beta_k]``), ``expected_size``
        (``sum_i q_ik``), ``map_size`` (rows whose argmax is ``k``), ``targets`` (names, by
        decreasing ``pi``) and ``mean_shift`` (``{name: shift}``).
    """
    q = _assignments(result, x, assignment)
    data = _to_original(result, result.train_x) if x is None else np.asarray(x, dtype=float)
    mass = q.sum(0)  # (K,)
    totals = q.T @ data  # (K, d)
    means = np.divide(totals, mass[:, None], out=np.full_like(totals, np.nan), where=mass[:, None] > 1e-12)
    shifts = means - means[:1]
    map_sizes = np.bincount(q.argmax(1), minlength=q.shape[1])
    pi = result.target_probs
    order = np.argsort(-pi, axis=1, kind="stable")
    weights = result.cluster_weights
    return [
        {"component": k, "weight": float(weights[k]), "expected_size": float(mass[k]), "map_size": int(map_sizes[k]),
         "targets": [result.names[j] for j in order[k] if pi[k, j] > min_target_prob],
         "mean_shift": dict(zip(result.names, shifts[k].tolist()))}
        for k in range(q.shape[1])
    ]


# --------------------------------------------------------------------------- predictive
@torch.no_grad()
def posterior_predictive(result: FitResult, num_samples: int, component: Optional[int] = None, *,
                         draw: bool = False, seed: Optional[int] = None) -> np.ndarray:
    """New rows from the fitted model, in the original units of the data.

    The model program runs with ``x`` un-observed (``poutine.uncondition``: ancestral sampling
    by :class:`~pyro_causal.likelihood.InterventionalLikelihood`) and the global sites fixed to
    :func:`posterior_sites` (one set of globals shared by all rows).

    Args:
        result: a fit.
        num_samples: rows to draw.
        component: ``0`` for the observational regime, ``k`` for component k's intervention,
            ``None`` for the mixture (``z ~ Categorical(beta(E_q[v]))``, i.e. ``E_q[beta]``).
        draw: use one guide draw of ``v``, ``u``, ``r`` instead of the means and ``round(pi)``.
        seed: seeds the draws (the global torch RNG is left untouched).

    Returns:
        ``(num_samples, d)`` float64 array.
    """
    model = _model(result)
    K = model.truncation
    if component is not None and not 0 <= component < K:
        raise ValueError(f"component must be in 0..{K - 1}, got {component}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    like = _like(model)
    with _rng(seed, like):
        sites = posterior_sites(result, draw=draw)
        if component is not None:
            sites["z"] = torch.full((num_samples,), component, dtype=torch.long, device=like.device)
        program = poutine.condition(poutine.uncondition(model.model), data=sites)
        with pyro.get_param_store().scope():
            trace = poutine.trace(program).get_trace(like.new_zeros(num_samples, model.num_variables))
    return _to_original(result, trace.nodes["x"]["value"].cpu().double().numpy())


# --------------------------------------------------------------------------- ArviZ
def to_inference_data(result: FitResult, num_draws: int = 200, seed: int = 0) -> arviz.InferenceData:
    """Guide draws of the global latents as ArviZ ``InferenceData`` (one chain).

    Groups: ``posterior`` with ``graph`` (dims ``cause, effect``), ``v`` (``stick``),
    ``beta`` (``component``), ``r`` (``intervention, variable``) and ``u``
    (``component, embedding``); ``training`` with the per-step traces ``elbo`` (per row) and
    ``h`` (dim ``step``) and the fit's variant, stop reason, density and intervention as attrs.
    For arviz >= 1.0 the same content is returned as an ``xarray.DataTree``.

    Args:
        result: a fit.
        num_draws: draws from the guide.
        seed: seeds the draws (the global torch RNG is left untouched).

    Returns:
        ``arviz.InferenceData`` (arviz 0.x) or ``xarray.DataTree`` (arviz >= 1.0).
    """
    import xarray as xr

    with warnings.catch_warnings():  # arviz 0.2x announces its 1.0 refactor on import
        warnings.filterwarnings("ignore", message="ArviZ is undergoing", category=FutureWarning)
        import arviz as az

    model, guide, K = result.model, result.model.guide, result.model.truncation
    shape = torch.Size([num_draws])
    with torch.no_grad(), _rng(seed, _like(model)):
        draws = {"graph": (guide.graph_dist().sample(shape) * guide.off_diagonal).long(),
                 "u": guide.embedding_dist().sample(shape)}
        if K > 1:
            draws["v"] = guide.stick_dist().sample(shape)
            draws["beta"] = stick_breaking_log_weights(draws["v"]).exp()
            draws["r"] = Bernoulli(probs=_target_probs(result)[1:]).sample(shape).long()
    posterior = {name: value[None].cpu().numpy() for name, value in draws.items()}  # one chain
    names = list(result.names)
    coords = {"cause": names, "effect": names, "component": np.arange(K), "embedding": np.arange(model.embedding_dim)}
    dims = {"graph": ["cause", "effect"], "u": ["component", "embedding"]}
    if K > 1:
        coords.update(stick=np.arange(K - 1), intervention=np.arange(1, K), variable=names)
        dims.update(v=["stick"], beta=["component"], r=["intervention", "variable"])
    training = xr.Dataset(
        {"elbo": ("step", np.asarray(result.elbo_trace, float)), "h": ("step", np.asarray(result.h_trace, float))},
        coords={"step": np.arange(1, len(result.elbo_trace) + 1)},
        attrs={"variant": result.variant, "stop_reason": str(result.stop_reason), "num_variables": model.num_variables,
               "density": str(result.settings.get("density")), "intervention": str(result.settings.get("intervention"))},
    )
    if int(az.__version__.split(".")[0]) >= 1:
        tree = az.from_dict({"posterior": posterior}, coords=coords, dims=dims)
        tree["training"] = xr.DataTree(training)
        return tree
    idata = az.from_dict(posterior=posterior, coords=coords, dims=dims)
    idata.add_groups({"training": training})
    return idata


def save_posterior(result: FitResult, path: PathLike, *, num_draws: int = 200, seed: int = 0, overwrite: bool = False) -> Path:
    """Write :func:`to_inference_data` to a netCDF file that ``arviz.from_netcdf`` reads back.

    The file is written beside ``path`` first and then moved into place, so a failure leaves
    no partial file.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false.
    """
    path = check_posterior_path(path, overwrite)
    idata = to_inference_data(result, num_draws=num_draws, seed=seed)
    return atomic_write(path, lambda scratch: idata.to_netcdf(str(scratch)))


def check_posterior_path(path: PathLike, overwrite: bool = False) -> Path:
    """Raise ``FileExistsError`` for an existing ``path`` (unless ``overwrite``),
    ``FileNotFoundError`` for a missing folder and :class:`~pyro_causal.io.OutputError` for a
    folder or a symbolic link at ``path``: the check to run before any work.  Returns ``path``
    with ``~`` expanded."""
    path = Path(path).expanduser()
    if path.is_symlink():
        raise OutputError(f"{path}: is a symbolic link; refusing to write through it")
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; name a file (e.g. {path / 'posterior.nc'})")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists; choose another file or pass overwrite=True")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent}: folder does not exist")
    return path
