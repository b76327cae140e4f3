"""Seed bundles: which batched form trains K seeds fastest on this machine (one training step).

Compares, per model, the time of one optimizer step for K seeds:
  sequential  K separate KerasModels, one step each (today's runs, one after another);
  grouped     mnistlab.nn.stacked.StackedModel (grouped convs over (B, K*C, H, W), baddbmm Dense);
  vmap        torch.func: stack_module_state + functional_call + vmap (BatchNormalization without
              running statistics, which vmap cannot update in place: an optimistic bound).
Synthetic inputs; the optimizer is the model's Keras optimizer over the stacked parameters.

    nice -n 10 python benchmarks/bench_bundle_layout.py [--models s000-m7 s004-m2] [--k 8] [--steps 20]
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch
import torch.nn.functional as F
from torch.func import functional_call, replace_all_batch_norm_modules_, stack_module_state

from mnistlab.nn.build import build_model
from mnistlab.training.config import configure_threads
from mnistlab.training.optim import make_optimizer
from mnistlab.nn.rng import set_dropout_generator
from mnistlab.nn.stacked import StackedModel, stack_inputs
from mnistlab.zoo import get_model


def _inputs(spec, k: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (spec.input[2], spec.input[0], spec.input[1]) if len(spec.input) == 3 else tuple(spec.input)
    g = torch.Generator().manual_seed(0)
    return torch.rand(k, batch, *shape, generator=g), torch.randint(0, 10, (k, batch), generator=g)


def _time(step, steps: int) -> float:
    step()  # warm-up
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - started) / steps


def measure(model_id: str, k: int, steps: int) -> dict[str, float]:
    spec = get_model(model_id)
    batch = spec.training.batch_size
    x, y = _inputs(spec, k, batch)
    optimizer_name, args = spec.training.optimizer.name, spec.training.optimizer.args
    models = [build_model(spec, seed=s).train() for s in range(k)]
    for m in models:
        set_dropout_generator(m, torch.Generator().manual_seed(1))
    optimizers = [make_optimizer(optimizer_name, m.parameters(), **args) for m in models]

    def sequential() -> None:
        for i, (m, o) in enumerate(zip(models, optimizers)):
            loss = F.cross_entropy(m(x[i]), y[i])
            o.zero_grad(set_to_none=True)
            loss.backward()
            o.step()

    stacked = StackedModel(models).train()
    stacked.generators = [torch.Generator().manual_seed(s) for s in range(k)]
    stacked_optimizer = make_optimizer(optimizer_name, stacked.parameters(), **args)
    xs = stack_inputs(x, spec.input)

    def grouped() -> None:
        logits = stacked(xs)
        loss = F.cross_entropy(logits.reshape(k * batch, -1), y.reshape(-1), reduction="none").reshape(k, batch).mean(1).sum()
        stacked_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        stacked_optimizer.step()

    plain = [replace_all_batch_norm_modules_(copy.deepcopy(m)) for m in models]
    for m in plain:
        set_dropout_generator(m, None)  # vmap's randomness="different" draws from the global RNG
    params, buffers = stack_module_state(plain)
    params = {name: p.detach().requires_grad_() for name, p in params.items()}
    base = copy.deepcopy(plain[0]).to("meta")
    vmap_optimizer = make_optimizer(optimizer_name, params.values(), **args)

    def one(p, b, xi, yi):
        return F.cross_entropy(functional_call(base, (p, b), (xi,)), yi)

    batched = torch.vmap(one, randomness="different")

    def vmapped() -> None:
        loss = batched(params, buffers, x, y).sum()
        vmap_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        vmap_optimizer.step()

    results = {"model": model_id, "k": k, "batch": batch}
    for name, step in (("sequential", sequential), ("grouped", grouped), ("vmap", vmapped)):
        results[f"{name}_ms_per_step"] = 1000 * _time(step, steps)
    for name in ("grouped", "vmap"):
        results[f"{name}_speedup"] = results["sequential_ms_per_step"] / results[f"{name}_ms_per_step"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["s000-m7", "s004-m2"])
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    options = parser.parse_args()
    configure_threads()
    for model_id in options.models:
        print(json.dumps(measure(model_id, options.k, options.steps)), flush=True)


if __name__ == "__main__":
    main()
