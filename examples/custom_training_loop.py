"""Drive SVI yourself: Pyro's ``SVI`` inside a hand-written augmented-Lagrangian loop.

The library's :class:`pyro_causal.Trainer` does the same; this script shows every piece so that
you can change any of them (another optimiser, another ELBO, logging, early stopping):

* ``model.model`` / ``model.guide``: the Pyro programs (``PyroModule`` s);
* ``LatentInterventionELBO``: the bound read from their traces, with closed forms where they
  apply (swap in ``TraceEnum_ELBO(max_plate_nesting=1)`` for Pyro's own estimate of the same
  programs);
* ``AugmentedLagrangian``: the multiplier and penalty of section 3.8, with checkpointable state.

    python examples/custom_training_loop.py [--first-round-steps 1000] [--round-steps 200] [--seed 0]
"""
from __future__ import annotations

import argparse

import numpy as np
import pyro
import torch
from tqdm.auto import tqdm

from pyro_causal import (
    AugmentedLagrangian, LatentInterventionELBO, LatentInterventionModel, PenaltySchedule,
    acyclicity, dag_from_probabilities, simulate,
)
from pyro_causal.metrics import hamming_distance


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first-round-steps", type=int, default=1000)
    parser.add_argument("--round-steps", type=int, default=200)
    parser.add_argument("--max-rounds", type=int, default=30)
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", help="save model, optimiser and penalty state here after each round")
    args = parser.parse_args(argv)

    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    data = simulate(num_variables=10, num_samples=args.samples, seed=args.seed)
    x = torch.as_tensor((data.x - data.x.mean(0)) / data.x.std(0), dtype=torch.float32)

    model = LatentInterventionModel(x.shape[1])
    elbo = LatentInterventionELBO()
    lagrangian = AugmentedLagrangian(PenaltySchedule(
        first_round_steps=args.first_round_steps, round_steps=args.round_steps, max_rounds=args.max_rounds))

    def loss(model_fn, guide_fn, x):
        # -ELBO per row plus phi h + mu/2 h^2 (section 3.8)
        return elbo.differentiable_loss(model_fn, guide_fn, x) / len(x) + lagrangian(acyclicity(model.guide.edge_probs()))

    svi = pyro.infer.SVI(model.model, model.guide, pyro.optim.Adam({"lr": 0.03}), loss=loss)
    with tqdm(desc="svi", unit="step") as bar:
        while True:
            for _ in range(lagrangian.steps_in_round()):
                value = svi.step(x)
                bar.update()
            if not np.isfinite(value):
                raise FloatingPointError("the loss diverged")
            with torch.no_grad():
                h = float(acyclicity(model.guide.edge_probs()))
            lagrangian.update(h)
            bar.set_postfix(loss=f"{value:.3f}", h=f"{h:.1e}", mu=f"{float(lagrangian.penalty):.0e}")
            if args.checkpoint:
                torch.save({"model": model.state_dict(), "optimizer": svi.optim.get_state(),
                            "lagrangian": lagrangian.state_dict()}, args.checkpoint)
            if lagrangian.converged(h) or lagrangian.exhausted():
                break
    estimate = dag_from_probabilities(model.guide.edge_probs().detach().numpy())
    distance = hamming_distance(data.adjacency, estimate)
    print(f"Hamming distance to the true graph: {distance} ({int(data.adjacency.sum())} true edges)")
    return distance


if __name__ == "__main__":
    main()
