"""Tutorial: from a simulated mixture of latent interventions to an inspected posterior.

Run it as a script (``python docs/tutorial.py``; ``--quick`` for a few steps, as CI does) or read
it top to bottom: each step is a comment followed by the code that does it.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import arviz as az
import numpy as np

import pyro_causal as pc
from pyro_causal.metrics import adjusted_rand_index, evaluate, format_metrics


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps only (smoke test)")
    parser.add_argument("--out", help="folder for the plots (default: a temporary folder)")
    args = parser.parse_args(argv)

    # 1. Data: 10 variables, one expected edge per node, one stochastic intervention per
    #    variable plus the observational regime; which row came from which regime is hidden.
    data = pc.simulate(num_variables=10, edges_per_node=1.0, num_samples=600 if args.quick else 10000, seed=0)
    print(f"{data.x.shape[0]} rows, {data.x.shape[1]} variables, {data.num_regimes} hidden regimes")

    # 2. Fit: a shared DAG under a truncated Dirichlet-process mixture of interventions.
    quick = pc.TrainingConfig(schedule=pc.PenaltySchedule(first_round_steps=20, round_steps=5, max_rounds=2))
    progress = []
    result = pc.fit(data.x, names=data.names, seed=0, callbacks=[progress.append],
                    config=pc.FitConfig(training=quick) if args.quick else None)
    print(f"stopped: {result.stop_reason} after {len(result.elbo_trace)} steps; {len(progress)} progress events")

    # 3. The graph: a DAG (numpy, networkx) and how it compares with the truth.
    print(format_metrics(evaluate(data.adjacency, result.adjacency)))
    print("edges:", sorted(result.graph.edges))

    # 4. The interventions: mixture weights, targets, and each row's component.
    print("E_q[beta]:", np.round(result.cluster_weights, 3))
    print("expected non-empty components:", round(pc.expected_components_in_use(result, assignment="exact"), 2))
    for component in pc.component_summary(result, assignment="exact")[:4]:
        print(f"  component {component['component']}: weight {component['weight']:.3f}, "
              f"targets {component['targets'][:3]}")
    sites = pc.posterior_sites(result)  # one value per global site: graph, v, u, r
    exact = pc.exact_assignment_probs(result, sites=sites)  # (n, K), p(z | x, those globals)
    map_z = pc.map_assignments(result, sites=sites)  # infer_discrete on the enumerated Pyro model
    print("MAP agrees with argmax of exact q(z):", bool(np.all(map_z == exact.argmax(1))))
    print("adjusted Rand index vs true regimes:", round(adjusted_rand_index(data.regimes, map_z), 3))

    # 5. ArviZ: posterior draws of edges, sticks, weights, targets and embeddings.
    idata = pc.to_inference_data(result, num_draws=50 if args.quick else 500)
    print(az.summary(idata, var_names=["beta"], kind="stats").head())

    # 6. Posterior predictive: new rows observationally and under component 1's intervention.
    observational = pc.posterior_predictive(result, 500, component=0, seed=0)
    intervened = pc.posterior_predictive(result, 500, component=1, seed=0)
    print("mean shift under component 1:", np.round(intervened.mean(0) - observational.mean(0), 2))

    # 7. Plots: edge probabilities, learned graph beside the truth, training traces, components.
    folder = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="pyro-causal-tutorial-"))
    folder.mkdir(parents=True, exist_ok=True)
    pc.save_all_plots(result, folder, truth=data.adjacency)
    print("plots in", folder)


if __name__ == "__main__":
    main()
