"""The Keras 2.2 optimizers against NumPy transcriptions of Keras 2.2.4's ``get_updates``.

Each ``keras_*`` function below restates one Keras update in NumPy, expression by expression as
Keras 2.2.4's keras/optimizers.py writes it (``iterations`` read before its increment, so the decay
factor is 1 and ``t`` is 1 on the first update). They share no code with mnistlab.training.optim.
Gradients span magnitudes 1e-5..1 so that epsilon's placement changes the answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch.utils._python_dispatch import TorchDispatchMode

from mnistlab.errors import SpecError
from mnistlab.spec.vocabulary import OPTIMIZER_DEFAULTS
from mnistlab.training.optim import (
    OPTIMIZERS,
    KerasAdadelta,
    KerasAdagrad,
    KerasAdam,
    KerasAdamax,
    KerasNadam,
    KerasRMSprop,
    KerasSGD,
    correctly_rounded_sqrt,
    make_optimizer,
)

Arrays = list[np.ndarray]
Reference = Callable[..., list[Arrays]]

SHAPES = [(4, 3), (7,), (2, 3, 2)]
STEPS = 8


# --- NumPy transcriptions of Keras 2.2.4 -------------------------------------------------------


def _decayed(lr: float, decay: float, iterations: int) -> float:
    if decay > 0:
        lr = lr * (1.0 / (1.0 + decay * iterations))
    return lr


def keras_sgd(params: Arrays, grad_steps: list[Arrays], lr: float = 0.01, momentum: float = 0.0,
              decay: float = 0.0, nesterov: bool = False) -> list[Arrays]:
    params = [p.copy() for p in params]
    moments = [np.zeros_like(p) for p in params]
    history = []
    for iterations, grads in enumerate(grad_steps):
        lr_ = _decayed(lr, decay, iterations)
        for i, (p, g, m) in enumerate(zip(params, grads, moments)):
            v = momentum * m - lr_ * g
            moments[i] = v
            params[i] = p + momentum * v - lr_ * g if nesterov else p + v
        history.append([p.copy() for p in params])
    return history


def keras_rmsprop(params: Arrays, grad_steps: list[Arrays], lr: float = 0.001, rho: float = 0.9,
                  epsilon: float = 1e-7, decay: float = 0.0) -> list[Arrays]:
    params = [p.copy() for p in params]
    accumulators = [np.zeros_like(p) for p in params]
    history = []
    for iterations, grads in enumerate(grad_steps):
        lr_ = _decayed(lr, decay, iterations)
        for i, (p, g, a) in enumerate(zip(params, grads, accumulators)):
            new_a = rho * a + (1.0 - rho) * np.square(g)
            accumulators[i] = new_a
            params[i] = p - lr_ * g / (np.sqrt(new_a) + epsilon)
        history.append([p.copy() for p in params])
    return history


def keras_adagrad(params: Arrays, grad_steps: list[Arrays], lr: float = 0.01,
                  epsilon: float = 1e-7, decay: float = 0.0) -> list[Arrays]:
    params = [p.copy() for p in params]
    accumulators = [np.zeros_like(p) for p in params]
    history = []
    for iterations, grads in enumerate(grad_steps):
        lr_ = _decayed(lr, decay, iterations)
        for i, (p, g, a) in enumerate(zip(params, grads, accumulators)):
            new_a = a + np.square(g)
            accumulators[i] = new_a
            params[i] = p - lr_ * g / (np.sqrt(new_a) + epsilon)
        history.append([p.copy() for p in params])
    return history


def keras_adadelta(params: Arrays, grad_steps: list[Arrays], lr: float = 1.0, rho: float = 0.95,
                   epsilon: float = 1e-7, decay: float = 0.0) -> list[Arrays]:
    params = [p.copy() for p in params]
    accumulators = [np.zeros_like(p) for p in params]
    delta_accumulators = [np.zeros_like(p) for p in params]
    history = []
    for iterations, grads in enumerate(grad_steps):
        lr_ = _decayed(lr, decay, iterations)
        for i, (p, g, a, d_a) in enumerate(zip(params, grads, accumulators, delta_accumulators)):
            new_a = rho * a + (1.0 - rho) * np.square(g)
            accumulators[i] = new_a
            update = g * np.sqrt(d_a + epsilon) / np.sqrt(new_a + epsilon)
            params[i] = p - lr_ * update
            delta_accumulators[i] = rho * d_a + (1 - rho) * np.square(update)
        history.append([p.copy() for p in params])
    return history


def keras_adam(params: Arrays, grad_steps: list[Arrays], lr: float = 0.001, beta_1: float = 0.9,
               beta_2: float = 0.999, epsilon: float = 1e-7, decay: float = 0.0,
               amsgrad: bool = False) -> list[Arrays]:
    params = [p.copy() for p in params]
    ms = [np.zeros_like(p) for p in params]
    vs = [np.zeros_like(p) for p in params]
    vhats = [np.zeros_like(p) for p in params]
    history = []
    for iterations, grads in enumerate(grad_steps):
        lr_ = _decayed(lr, decay, iterations)
        t = iterations + 1
        lr_t = lr_ * (np.sqrt(1.0 - np.power(beta_2, t)) / (1.0 - np.power(beta_1, t)))
        for i, (p, g, m, v, vhat) in enumerate(zip(params, grads, ms, vs, vhats)):
            m_t = (beta_1 * m) + (1.0 - beta_1) * g
            v_t = (beta_2 * v) + (1.0 - beta_2) * np.square(g)
            if amsgrad:
                vhat_t = np.maximum(vhat, v_t)
                params[i] = p - lr_t * m_t / (np.sqrt(vhat_t) + epsilon)
                vhats[i] = vhat_t
            else:
                params[i] = p - lr_t * m_t / (np.sqrt(v_t) + epsilon)
            ms[i], vs[i] = m_t, v_t
        history.append([p.copy() for p in params])
    return history


def keras_adamax(params: Arrays, grad_steps: list[Arrays], lr: float = 0.002,
                 beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7,
                 decay: float = 0.0) -> list[Arrays]:
    params = [p.copy() for p in params]
    ms = [np.zeros_like(p) for p in params]
    us = [np.zeros_like(p) for p in params]
    history = []
    for iterations, grads in enumerate(grad_steps):
        lr_ = _decayed(lr, decay, iterations)
        t = iterations + 1
        lr_t = lr_ / (1.0 - np.power(beta_1, t))
        for i, (p, g, m, u) in enumerate(zip(params, grads, ms, us)):
            m_t = (beta_1 * m) + (1.0 - beta_1) * g
            u_t = np.maximum(beta_2 * u, np.abs(g))
            params[i] = p - lr_t * m_t / (u_t + epsilon)
            ms[i], us[i] = m_t, u_t
        history.append([p.copy() for p in params])
    return history


def keras_nadam(params: Arrays, grad_steps: list[Arrays], lr: float = 0.002, beta_1: float = 0.9,
                beta_2: float = 0.999, epsilon: float = 1e-7, schedule_decay: float = 0.004,
                decay: float = 0.0) -> list[Arrays]:
    # Keras 2.2.4's Nadam has no `decay`; mnistlab accepts one with the usual formula.
    params = [p.copy() for p in params]
    ms = [np.zeros_like(p) for p in params]
    vs = [np.zeros_like(p) for p in params]
    m_schedule = 1.0
    history = []
    for iterations, grads in enumerate(grad_steps):
        lr_ = _decayed(lr, decay, iterations)
        t = iterations + 1
        momentum_cache_t = beta_1 * (1.0 - 0.5 * (np.power(0.96, t * schedule_decay)))
        momentum_cache_t_1 = beta_1 * (1.0 - 0.5 * (np.power(0.96, (t + 1) * schedule_decay)))
        m_schedule_new = m_schedule * momentum_cache_t
        m_schedule_next = m_schedule * momentum_cache_t * momentum_cache_t_1
        m_schedule = m_schedule_new
        for i, (p, g, m, v) in enumerate(zip(params, grads, ms, vs)):
            g_prime = g / (1.0 - m_schedule_new)
            m_t = beta_1 * m + (1.0 - beta_1) * g
            m_t_prime = m_t / (1.0 - m_schedule_next)
            v_t = beta_2 * v + (1.0 - beta_2) * np.square(g)
            v_t_prime = v_t / (1.0 - np.power(beta_2, t))
            m_t_bar = (1.0 - momentum_cache_t) * g_prime + momentum_cache_t_1 * m_t_prime
            ms[i], vs[i] = m_t, v_t
            params[i] = p - lr_ * m_t_bar / (np.sqrt(v_t_prime) + epsilon)
        history.append([p.copy() for p in params])
    return history


REFERENCES: dict[str, Reference] = {
    "sgd": keras_sgd,
    "rmsprop": keras_rmsprop,
    "adagrad": keras_adagrad,
    "adadelta": keras_adadelta,
    "adam": keras_adam,
    "adamax": keras_adamax,
    "nadam": keras_nadam,
}

CASES: list[tuple[str, dict[str, Any]]] = [
    ("sgd", {}),
    ("sgd", {"momentum": 0.9}),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "decay": 0.01}),
    ("sgd", {"decay": 0.1}),
    ("rmsprop", {}),
    ("rmsprop", {"lr": 0.01, "rho": 0.5, "decay": 0.05}),
    ("adagrad", {}),
    ("adagrad", {"epsilon": 1e-3, "decay": 0.1}),
    ("adadelta", {}),
    ("adadelta", {"lr": 0.5, "rho": 0.9, "decay": 0.2}),
    ("adam", {}),
    ("adam", {"amsgrad": True}),
    ("adam", {"lr": 0.01, "beta_1": 0.5, "beta_2": 0.9, "epsilon": 1e-4, "decay": 0.1}),
    ("adamax", {}),
    ("adamax", {"beta_2": 0.5, "decay": 0.1}),
    ("nadam", {}),
    ("nadam", {"lr": 0.01, "schedule_decay": 0.05, "beta_2": 0.9}),
    ("nadam", {"decay": 0.1}),
]
CASE_IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in hp.items()) or 'defaults'}"
            for name, hp in CASES]


# --- helpers -----------------------------------------------------------------------------------


def _problem(seed: int = 0, steps: int = STEPS) -> tuple[Arrays, list[Arrays]]:
    """Random float64 parameters and per-step gradients whose magnitudes span 1e-5..1."""
    rng = np.random.default_rng(seed)
    params = [rng.normal(size=shape) for shape in SHAPES]
    grad_steps = [[rng.normal(size=shape) * 10.0 ** rng.uniform(-5, 0, size=shape)
                   for shape in SHAPES] for _ in range(steps)]
    return params, grad_steps


def _parameters(arrays: Arrays, dtype: torch.dtype) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.tensor(a, dtype=dtype)) for a in arrays]


def _set_grads(params: list[torch.nn.Parameter], grads: Arrays) -> None:
    for p, g in zip(params, grads):
        p.grad = torch.tensor(g, dtype=p.dtype)


def _run(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter],
         grad_steps: list[Arrays]) -> list[Arrays]:
    history = []
    for grads in grad_steps:
        _set_grads(params, grads)
        optimizer.step()
        history.append([p.detach().to(torch.float64).numpy().copy() for p in params])
    return history


def _through_checkpoint(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Round-trip an optimizer state_dict the way checkpoints store it: safetensors + JSON."""
    tensors = {f"{index}.{key}": value for index, state in state_dict["state"].items()
               for key, value in state.items()}
    blob = save_tensors(tensors)
    groups = json.dumps(state_dict["param_groups"])
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in load_tensors(blob).items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": json.loads(groups)}


# --- agreement with Keras ----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "hyper"), CASES, ids=CASE_IDS)
def test_float64_trajectory_matches_keras(name: str, hyper: dict[str, Any]) -> None:
    initial, grad_steps = _problem()
    expected = REFERENCES[name](initial, grad_steps, **hyper)
    params = _parameters(initial, torch.float64)
    actual = _run(make_optimizer(name, params, **hyper), params, grad_steps)
    for step, (got, want) in enumerate(zip(actual, expected), start=1):
        for p0, a, e in zip(initial, got, want):
            # Compare displacements, not positions: an error in a 1e-3 update is then visible.
            np.testing.assert_allclose(a - p0, e - p0, rtol=1e-6, atol=1e-12,
                                       err_msg=f"{name} step {step}")


@pytest.mark.parametrize(("name", "hyper"), CASES, ids=CASE_IDS)
def test_float32_trajectory_matches_keras(name: str, hyper: dict[str, Any]) -> None:
    initial, grad_steps = _problem(seed=1)
    initial = [a.astype(np.float32).astype(np.float64) for a in initial]
    grad_steps = [[g.astype(np.float32).astype(np.float64) for g in grads] for grads in grad_steps]
    expected = REFERENCES[name](initial, grad_steps, **hyper)
    params = _parameters(initial, torch.float32)
    actual = _run(make_optimizer(name, params, **hyper), params, grad_steps)
    for got, want in zip(actual[-1], expected[-1]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_epsilon_placement_matters_for_these_gradients() -> None:
    # Guards the agreement tests: with torch.optim.Adam's epsilon form the same run differs.
    initial, grad_steps = _problem()
    keras = keras_adam(initial, grad_steps)[-1]
    params = _parameters(initial, torch.float64)
    torch_adam = _run(torch.optim.Adam(params, lr=1e-3, eps=1e-7), params, grad_steps)[-1]
    differences = [np.max(np.abs((t - p0) / (k - p0) - 1.0))
                   for p0, t, k in zip(initial, torch_adam, keras)]
    assert max(differences) > 1e-3


@pytest.mark.parametrize(("name", "torch_optimizer"), [
    ("sgd", lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9)),
    ("rmsprop", lambda ps: torch.optim.RMSprop(ps, lr=1e-3, alpha=0.9, eps=1e-7)),
    ("adagrad", lambda ps: torch.optim.Adagrad(ps, lr=0.01, eps=1e-7, lr_decay=0.1)),
    ("adadelta", lambda ps: torch.optim.Adadelta(ps, lr=1.0, rho=0.95, eps=1e-7)),
])
def test_agrees_with_torch_where_the_formulas_coincide(
        name: str, torch_optimizer: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer],
) -> None:
    hyper = {"sgd": {"momentum": 0.9}, "adagrad": {"decay": 0.1}}.get(name, {})
    initial, grad_steps = _problem(seed=2)
    ours = _parameters(initial, torch.float64)
    theirs = _parameters(initial, torch.float64)
    got = _run(make_optimizer(name, ours, **hyper), ours, grad_steps)[-1]
    want = _run(torch_optimizer(theirs), theirs, grad_steps)[-1]
    for p0, a, e in zip(initial, got, want):
        np.testing.assert_allclose(a - p0, e - p0, rtol=1e-9, atol=1e-13)


# --- defaults, state, behaviour ----------------------------------------------------------------


def test_keras_defaults_table() -> None:
    eps = 1e-7
    assert OPTIMIZER_DEFAULTS == {
        "sgd": {"lr": 0.01, "momentum": 0.0, "decay": 0.0, "nesterov": False},
        "rmsprop": {"lr": 0.001, "rho": 0.9, "epsilon": eps, "decay": 0.0},
        "adagrad": {"lr": 0.01, "epsilon": eps, "decay": 0.0},
        "adadelta": {"lr": 1.0, "rho": 0.95, "epsilon": eps, "decay": 0.0},
        "adam": {"lr": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": eps, "decay": 0.0,
                 "amsgrad": False},
        "adamax": {"lr": 0.002, "beta_1": 0.9, "beta_2": 0.999, "epsilon": eps, "decay": 0.0},
        "nadam": {"lr": 0.002, "beta_1": 0.9, "beta_2": 0.999, "epsilon": eps,
                  "schedule_decay": 0.004, "decay": 0.0},
    }
    assert OPTIMIZERS == {"sgd": KerasSGD, "rmsprop": KerasRMSprop, "adagrad": KerasAdagrad,
                          "adadelta": KerasAdadelta, "adam": KerasAdam, "adamax": KerasAdamax,
                          "nadam": KerasNadam}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_constructed_groups_carry_the_keras_defaults(name: str) -> None:
    for optimizer in (OPTIMIZERS[name]([torch.nn.Parameter(torch.zeros(2))]),
                      make_optimizer(name, [torch.nn.Parameter(torch.zeros(2))])):
        group = optimizer.param_groups[0]
        assert {k: group[k] for k in OPTIMIZER_DEFAULTS[name]} == OPTIMIZER_DEFAULTS[name]
        assert group["iterations"] == 0
    assert make_optimizer("adadelta", [torch.nn.Parameter(torch.zeros(1))]).param_groups[0][
        "lr"] == 1.0


@pytest.mark.parametrize(("name", "hyper"), CASES, ids=CASE_IDS)
def test_state_dict_round_trip_continues_identically(name: str, hyper: dict[str, Any]) -> None:
    initial, grad_steps = _problem(seed=3, steps=8)
    params = _parameters(initial, torch.float32)
    optimizer = make_optimizer(name, params, **hyper)
    _run(optimizer, params, grad_steps[:4])

    restored_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    restored = make_optimizer(name, restored_params, **hyper)
    restored.load_state_dict(_through_checkpoint(optimizer.state_dict()))
    assert restored.param_groups[0]["iterations"] == 4

    original = _run(optimizer, params, grad_steps[4:])
    resumed = _run(restored, restored_params, grad_steps[4:])
    for a, b in zip(original, resumed):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    for p, q in zip(params, restored_params):
        for key, value in optimizer.state[p].items():
            assert torch.equal(value, restored.state[q][key])


def test_step_never_reads_device_values_on_the_host() -> None:
    # aten._local_scalar_dense is what .item(), float(t) and bool(t) dispatch to: the host sync.
    class RecordOps(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: set[str] = set()

        def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                               kwargs: dict[str, Any] | None = None) -> Any:
            self.ops.add(str(func))
            return func(*args, **(kwargs or {}))

    initial, grad_steps = _problem()
    for name, hyper in CASES:
        params = _parameters(initial, torch.float32)
        optimizer = make_optimizer(name, params, **hyper)
        _set_grads(params, grad_steps[0])
        with RecordOps() as recorder:
            optimizer.step()
            optimizer.step()
        assert recorder.ops, name
        assert not [op for op in recorder.ops if "_local_scalar_dense" in op], name


def test_parameters_without_gradients_are_left_alone() -> None:
    used, unused = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    optimizer = KerasAdam([used, unused])
    frozen = KerasAdam([torch.nn.Parameter(torch.ones(1))])
    used.grad = torch.full((3,), 0.5)
    optimizer.step()
    frozen.step()
    assert torch.equal(unused, torch.ones(2)) and unused not in optimizer.state
    assert not torch.equal(used, torch.ones(3))
    assert optimizer.param_groups[0]["iterations"] == 1
    assert frozen.param_groups[0]["iterations"] == 0


def test_step_returns_the_closure_loss_with_gradients_enabled() -> None:
    weight = torch.nn.Parameter(torch.tensor([2.0]))
    optimizer = KerasSGD([weight], lr=0.1)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = (weight**2).sum()
        loss.backward()
        return loss

    assert optimizer.step(closure).item() == 4.0
    assert weight.item() == pytest.approx(2.0 - 0.1 * 4.0)


def test_param_groups_use_their_own_learning_rate() -> None:
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = KerasSGD([{"params": [a]}, {"params": [b], "lr": 1.0}])
    a.grad, b.grad = torch.ones(1), torch.ones(1)
    optimizer.step()
    assert (a.item(), b.item()) == (pytest.approx(-0.01), pytest.approx(-1.0))


# --- make_optimizer ----------------------------------------------------------------------------


def test_learning_rate_is_an_alias_of_lr() -> None:
    optimizer = make_optimizer("adam", [torch.nn.Parameter(torch.zeros(1))], learning_rate=0.01)
    assert optimizer.param_groups[0]["lr"] == 0.01
    with pytest.raises(SpecError, match="not both"):
        make_optimizer("adam", [torch.nn.Parameter(torch.zeros(1))], lr=0.1, learning_rate=0.1)


def test_names_are_case_insensitive_like_keras() -> None:
    assert isinstance(make_optimizer("Adam", [torch.nn.Parameter(torch.zeros(1))]), KerasAdam)
    assert isinstance(make_optimizer("RMSprop", [torch.nn.Parameter(torch.zeros(1))]),
                      KerasRMSprop)


def test_unknown_optimizer_lists_choices_and_suggests() -> None:
    with pytest.raises(SpecError) as caught:
        make_optimizer("adma", [torch.nn.Parameter(torch.zeros(1))])
    message = str(caught.value)
    assert "\n" not in message
    assert "'adma'" in message and "did you mean 'adamax' or 'adam'?" in message
    assert "adadelta, adagrad, adam, adamax, nadam, rmsprop, sgd" in message


def test_unknown_argument_lists_choices_and_suggests() -> None:
    with pytest.raises(SpecError) as caught:
        make_optimizer("adam", [torch.nn.Parameter(torch.zeros(1))], beta1=0.8)
    message = str(caught.value)
    assert "\n" not in message
    assert "'beta1'" in message and "did you mean 'beta_1'" in message
    assert "amsgrad, beta_1, beta_2, decay, epsilon, learning_rate, lr" in message
    with pytest.raises(SpecError, match="unknown argument 'momentum' for optimizer 'adam'"):
        make_optimizer("adam", [torch.nn.Parameter(torch.zeros(1))], momentum=0.9)


@pytest.mark.parametrize(("name", "hyper", "complaint"), [
    ("sgd", {"lr": -0.1}, "lr must be >= 0"),
    ("adam", {"beta_1": 1.0}, r"beta_1 must be in \[0, 1\)"),
    ("sgd", {"nesterov": "yes"}, "nesterov must be true or false"),
    ("rmsprop", {"lr": "0.1"}, "lr must be a number"),
    ("adagrad", {"epsilon": True}, "epsilon must be a number"),
])
def test_invalid_values_raise_spec_error(name: str, hyper: dict[str, Any], complaint: str) -> None:
    with pytest.raises(SpecError, match=complaint):
        make_optimizer(name, [torch.nn.Parameter(torch.zeros(1))], **hyper)


def test_integer_hyperparameters_become_floats() -> None:
    optimizer = make_optimizer("adadelta", [torch.nn.Parameter(torch.zeros(1))], lr=2)
    assert type(optimizer.param_groups[0]["lr"]) is float


def test_sqrt_is_correctly_rounded_for_every_kind_of_value() -> None:
    # The update rules' sqrt must round exactly (as TensorFlow's does) whatever the CPU's vector
    # library does: float64's sqrt rounded to float32 is the correctly rounded float32 sqrt.
    generator = torch.Generator().manual_seed(0)
    spread = torch.rand(200_000, generator=generator) * torch.exp(torch.randn(200_000, generator=generator) * 20)
    special = torch.tensor([0.0, 1e-45, 1e-40, 1.1754942e-38, 1.0, 3.4e38, float("inf")])
    values = [spread, special, torch.zeros(5)]
    roots = correctly_rounded_sqrt(values)
    for value, root in zip(values, roots):
        assert root.dtype == value.dtype and root.shape == value.shape
        expected = torch.sqrt(value.double()).float()
        assert torch.equal(root.view(torch.int32), expected.view(torch.int32))
    # A tensor that is not plain CPU float32/64 memory still gets torch's own sqrt.
    half = [torch.tensor([4.0, 9.0], dtype=torch.bfloat16)]
    assert torch.equal(correctly_rounded_sqrt(half)[0], torch.tensor([2.0, 3.0], dtype=torch.bfloat16))


def test_sqrt_into_scratch_rounds_as_into_new_tensors() -> None:
    generator = torch.Generator().manual_seed(0)
    values = [torch.rand(300, generator=generator) * 1e-30, torch.zeros(7), torch.rand(3, 4, generator=generator)]
    scratch = [torch.empty_like(v) for v in values]
    roots = correctly_rounded_sqrt(values, scratch)
    assert all(r is s for r, s in zip(roots, scratch))
    for root, fresh in zip(roots, correctly_rounded_sqrt(values)):
        assert torch.equal(root.view(torch.int32), fresh.view(torch.int32))
    half = [torch.tensor([4.0, 9.0], dtype=torch.bfloat16)]  # torch's own sqrt, into the scratch too
    out = [torch.empty_like(half[0])]
    assert correctly_rounded_sqrt(half, out)[0] is out[0] and torch.equal(out[0], torch.sqrt(half[0]))


@pytest.mark.parametrize("name", ["adam", "rmsprop", "adagrad"])
def test_steps_reuse_their_scratch_and_keep_it_out_of_the_state(name: str) -> None:
    params = [torch.nn.Parameter(torch.ones(4, 3)), torch.nn.Parameter(torch.ones(3))]
    optimizer = make_optimizer(name, params)
    seen = []
    for _ in range(2):
        for p in params:
            p.grad = torch.full_like(p, 0.5)
        optimizer.step()
        seen.append([id(t) for t in optimizer.__dict__["_scratch_tensors"].values()])
    assert seen[0] == seen[1] and len(seen[0]) == 2
    assert all(set(state) <= {"m", "v", "vhat", "accumulator"} for state in optimizer.state_dict()["state"].values())


def test_the_optimizers_never_import_dynamo() -> None:
    # torch.optim.Optimizer's torch._disable_dynamo wrappers import torch._dynamo (2-4 s) on first use;
    # the Keras optimizers call the plain methods, so a training process never pays for it.
    import subprocess
    import sys

    probe = ("import sys, torch\n"
             "from mnistlab.training.optim import OPTIMIZERS\n"
             "for name in OPTIMIZERS:\n"
             "    p = [torch.nn.Parameter(torch.ones(3))]\n"
             "    o = OPTIMIZERS[name](p); p[0].grad = torch.ones(3); o.step(); o.zero_grad()\n"
             "    o.load_state_dict(o.state_dict())\n"
             "    assert p[0].grad is None\n"
             "print('torch._dynamo' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "False"
