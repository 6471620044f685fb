from unittest import mock

import pyro
import pytest
import torch

from pyro_causal.elbo import elbo_terms
from pyro_causal.model import LatentInterventionModel

# Small tensors: one thread is fastest, and avoids oversubscribing shared CI cores.
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` (whole fits, tens of seconds each) first, the rest in file order:
    under ``pytest -n N`` the longest tests start at once instead of ending the run alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def clean_pyro_state():
    """Every test starts from a cleared parameter store, validation on and a fixed seed."""
    pyro.clear_param_store()
    pyro.enable_validation(True)
    pyro.set_rng_seed(0)
    torch.set_default_dtype(torch.float32)
    yield
    pyro.clear_param_store()


@pytest.fixture
def two_variable_problem():
    """``make(two_cycles) -> (model, x, at_graph)``: a two-variable model whose only noise is
    the graph (embeddings deterministic, coefficients far from zero), 60 correlated rows, and
    ``at_graph(A)``, the part of the local-estimator ELBO that depends on the sampled graph.
    The model is the imperfect one, under which both edges' gradients are far from zero here."""

    def make(two_cycles):
        torch.manual_seed(1)
        model = LatentInterventionModel(2, truncation=2, embedding_dim=2, two_cycles=two_cycles,
                                        intervention="imperfect")
        with torch.no_grad():
            model.guide.embedding_log_scale.fill_(-30.0)
            model.guide.edge_logits.copy_(torch.tensor([[0.0, 0.3], [-0.4, 0.0]]))
            model.density.net[-1].weight.normal_(0.0, 0.5)
        x = torch.randn(60, 2) @ torch.tensor([[1.0, 0.8], [0.0, 0.6]])
        graph_dist = model.guide.graph_dist

        def at_graph(adjacency):
            def fixed(*args, **kwargs):  # q(A) whose draws are `adjacency`
                law = graph_dist(*args, **kwargs)
                law.sample = law.rsample = lambda *a: adjacency
                return law

            with mock.patch.object(model.guide, "graph_dist", fixed):
                terms = elbo_terms(model, x, graph_estimator="local", assignment="amortized")
            return float((terms.elbo + terms.kl["graph"]).detach())

        return model, x, at_graph

    return make
