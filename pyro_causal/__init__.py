"""pyro_causal: one causal graph from data that mix observational and latent interventional samples.

A Pyro implementation of Faria (2021): a shared DAG under a truncated Dirichlet-process mixture
of intervened structural causal models, fitted by SVI inside the paper's augmented-Lagrangian
loop and then, by default where interventions are to be found, inside causal orders searched from
the mixture found.

Faria, G. R. A. (2021). Differentiable Causal Discovery Under Latent Interventions. Instituto Superior Técnico, Lisboa.
"""
__version__ = "0.1.0"

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())  # the application chooses where logs go

from .acyclicity import AugmentedLagrangian, PenaltySchedule, acyclicity, dag_from_probabilities, is_dag
from .api import fit
from .checkpoint import Checkpointing
from .config import AfterTraining, EdgeSearch, FitConfig, ModelOptions, Preprocessing, Priors
from .densities import ConditionalDensity, available_densities, make_density, register_density
from .elbo import LatentInterventionELBO, elbo_terms
from .guide import LatentInterventionGuide
from .held_refit import fit_with_graph_held, refit_with_graph_held
from .io import DataError
from .model import LatentInterventionModel
from .result import FitResult
from .search import search_edges
from .simulate import simulate, simulate_cause_effect
from .trainer import StopReason, Trainer, TrainingConfig, TrainingEvent

__all__ = [
    "AfterTraining",
    "AugmentedLagrangian",
    "Checkpointing",
    "ConditionalDensity",
    "DataError",
    "EdgeSearch",
    "FitConfig",
    "FitResult",
    "LatentInterventionELBO",
    "LatentInterventionGuide",
    "LatentInterventionModel",
    "ModelOptions",
    "PenaltySchedule",
    "Preprocessing",
    "Priors",
    "StopReason",
    "Trainer",
    "TrainingConfig",
    "TrainingEvent",
    "acyclicity",
    "available_densities",
    "dag_from_probabilities",
    "elbo_terms",
    "fit",
    "fit_with_graph_held",
    "is_dag",
    "make_density",
    "refit_with_graph_held",
    "register_density",
    "search_edges",
    "simulate",
    "simulate_cause_effect",
]

from .plots import plot_components, plot_edge_probs, plot_graphs, plot_training, save_all_plots  # noqa: E402
from .posterior import (  # noqa: E402
    component_summary,
    exact_assignment_probs,
    expected_components_in_use,
    map_assignments,
    posterior_predictive,
    posterior_sites,
    save_posterior,
    to_inference_data,
)

__all__ += [
    "component_summary",
    "exact_assignment_probs",
    "expected_components_in_use",
    "map_assignments",
    "plot_components",
    "plot_edge_probs",
    "plot_graphs",
    "plot_training",
    "posterior_predictive",
    "posterior_sites",
    "save_all_plots",
    "save_posterior",
    "to_inference_data",
]

from . import priors  # noqa: E402
from .distributed import fit_distributed  # noqa: E402
from .selection import select_hyperparameters  # noqa: E402

__all__ += ["fit_distributed", "priors", "select_hyperparameters"]
