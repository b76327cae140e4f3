"""Optimizers with the defaults and update rules of standalone Keras 2.2 (TensorFlow backend).

The seed notebooks were trained with ``keras.optimizers.*`` from Keras 2.2.x, whose formulas and
defaults differ from ``torch.optim`` in ways that change results (see DESIGN.md). Each class below
is a line-by-line transcription of the matching ``get_updates`` in Keras 2.2.x's
``keras/optimizers.py``: the 2.2.4 text (``lr=``/``epsilon=None -> K.epsilon()``/``decay=``
signatures, ``K.update_add(self.iterations, 1)``), read from a public repository that vendors that
file unchanged, cross-checked against keras-team/keras @0202c8a5 (post-2.3 master: same update
maths, new argument names, Adagrad accumulators starting at 0.1) and against TensorFlow r1.13's
port ``tensorflow/python/keras/optimizers.py`` (same maths as 2.2.4).

Conventions shared by every optimizer:

* ``iterations`` counts updates, one counter per parameter group (Keras has one per optimizer and
  steps every weight together, so they agree). Keras reads it *before* its increment: the
  learning-rate decay ``lr * (1 / (1 + decay * iterations))`` is ``lr`` on the first update, and
  bias corrections use ``t = iterations + 1``, so ``t == 1`` on the first update.
* Step-size scalars are computed on the host in float64 from Python numbers and passed to
  ``torch._foreach_*`` ops, so ``step()`` never synchronises with the device.
* All state is tensors (per parameter) or plain numbers (per group: ``iterations``, and Nadam's
  ``m_schedule``), so ``state_dict()`` can be written as safetensors + JSON and restored exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from mnistlab.errors import SpecError, close_matches
from mnistlab.spec.vocabulary import OPTIMIZER_DEFAULTS

Params = Iterable[Tensor] | Iterable[dict[str, Any]]
Check = Callable[[str, Any], Any]


def _number(name: str, value: Any) -> float:
    # bool is an int subclass; `lr: true` in a spec is a mistake, not 1.0.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


def _non_negative(name: str, value: Any) -> float:
    number = _number(name, value)
    if number < 0.0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return number


def _fraction(name: str, value: Any) -> float:
    number = _number(name, value)
    if not 0.0 <= number < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return number


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def _ema_(averages: list[Tensor], values: list[Tensor], beta: float) -> None:
    """averages = beta * averages + (1 - beta) * values, in Keras's order of operations."""
    torch._foreach_mul_(averages, beta)
    torch._foreach_add_(averages, values, alpha=1.0 - beta)


def _ema_square_(averages: list[Tensor], values: list[Tensor], beta: float) -> None:
    """averages = beta * averages + (1 - beta) * values**2."""
    torch._foreach_mul_(averages, beta)
    torch._foreach_addcmul_(averages, values, values, value=1.0 - beta)


# The dtypes NumPy's sqrt takes straight from a CPU tensor's memory.
NUMPY_SQRT_DTYPES = (torch.float32, torch.float64)


def correctly_rounded_sqrt(tensors: list[Tensor], out: list[Tensor] | None = None) -> list[Tensor]:
    """Element-wise sqrt, correctly rounded (IEEE 754), as TensorFlow's (Eigen's) sqrt is.

    On a CPU, torch.sqrt goes through MKL's vector maths, which on an AMD EPYC (Zen 3) is not
    correctly rounded (about 1 value in 6 is one ulp off, so results depend on which CPU family MKL
    detects) and takes a slow path for zeros and subnormals, 8-30x slower than for ordinary values.
    Adam's v holds exact zeros (weights on MNIST's always-black border pixels never get a gradient)
    and subnormals late in training, so the slow path was most of an overfitting MLP's step.
    NumPy's sqrt is the CPU's own square-root instruction: exact, and as fast for every value.
    Elsewhere (a GPU, bfloat16 state) torch's own sqrt, which is correctly rounded there.
    `out`: tensors like `tensors` to write the roots into (the optimizer's scratch, so a step
    allocates nothing); the same arithmetic either way.
    """
    if tensors and all(t.device.type == "cpu" and t.dtype in NUMPY_SQRT_DTYPES and t.is_contiguous()
                       and not t.requires_grad for t in tensors):
        roots = out if out is not None else [torch.empty_like(t) for t in tensors]
        for value, root in zip(tensors, roots):
            np.sqrt(value.numpy(), out=root.numpy())
        return roots
    if out is not None:
        torch._foreach_copy_(out, tensors)
        torch._foreach_sqrt_(out)
        return out
    return list(torch._foreach_sqrt(tensors))


def _rms_step_(params: list[Tensor], grads: list[Tensor], accumulators: list[Tensor], epsilon: float,
               lr: float, scratch: list[Tensor] | None = None) -> None:
    """p -= lr * g / (sqrt(a) + eps): RMSprop's and Adagrad's step, epsilon outside the sqrt."""
    denominators = correctly_rounded_sqrt(accumulators, scratch)
    torch._foreach_add_(denominators, epsilon)
    torch._foreach_addcdiv_(params, grads, denominators, value=-lr)


def _undecorated(method: Callable[..., Any]) -> Callable[..., Any]:
    # torch.optim.Optimizer wraps add_param_group, zero_grad, state_dict and load_state_dict in
    # torch._disable_dynamo, whose first call imports torch._dynamo (2-4 s, in every process that
    # trains) and whose wrapper runs on every step's zero_grad. These optimizers are never compiled
    # (engine.compiled compiles the model alone), so they call the functions underneath, which
    # functools.wraps keeps as __wrapped__ (where a torch lacks it: the wrapped method as it is).
    return getattr(method, "__wrapped__", method)


class KerasOptimizer(torch.optim.Optimizer):
    """Shared step(): Keras's iteration counter and time-inverse ``decay``; subclasses do the maths.

    Hyperparameters are keyword arguments with Keras's names; what is left out takes Keras 2.2's
    default from the vocabulary's entry for ``spec_name`` (the one source of those numbers), and
    ``_checks`` validates them for every parameter group.
    """

    spec_name: ClassVar[str]  # the Keras string name this class transcribes, its vocabulary key
    _checks: ClassVar[dict[str, Check]]

    def __init__(self, params: Params, **hyperparameters: Any) -> None:
        defaults = OPTIMIZER_DEFAULTS[self.spec_name]
        for argument in hyperparameters:
            if argument not in defaults:
                raise TypeError(f"{type(self).__name__}.__init__() got an unexpected keyword argument {argument!r}")
        super().__init__(params, {**defaults, **hyperparameters})

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        _undecorated(torch.optim.Optimizer.add_param_group)(self, param_group)
        group = self.param_groups[-1]
        for name, check in self._checks.items():
            group[name] = check(name, group[name])
        group.setdefault("iterations", 0)

    zero_grad = _undecorated(torch.optim.Optimizer.zero_grad)
    state_dict = _undecorated(torch.optim.Optimizer.state_dict)
    load_state_dict = _undecorated(torch.optim.Optimizer.load_state_dict)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            # A group without gradients is skipped whole, counters included, so `iterations` and
            # Nadam's `m_schedule` always advance together (Keras never has missing gradients).
            if not params:
                continue
            grads = [p.grad for p in params]
            if any(g.is_sparse for g in grads):
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            iterations = group["iterations"]
            lr = group["lr"] * (1.0 / (1.0 + group["decay"] * iterations))
            self._update(group, params, grads, lr, iterations + 1)
            group["iterations"] = iterations + 1
        return loss

    def _update(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor],
                lr: float, t: int) -> None:
        """Apply one Keras update: `lr` is already decayed, `t` counts this update from 1."""
        raise NotImplementedError

    def _scratch(self, params: list[Tensor]) -> list[Tensor]:
        """One work tensor per parameter, reused by every step (not state: never saved or loaded).

        Where the step's square roots go, instead of new tensors each step (on a CPU, freshly
        allocated buffers of a weight matrix's size are often new pages the kernel must fault in)."""
        scratch = self.__dict__.setdefault("_scratch_tensors", {})
        tensors = []
        for p in params:
            buffer = scratch.get(p)
            if buffer is None or buffer.shape != p.shape or buffer.dtype != p.dtype or buffer.device != p.device:
                buffer = scratch[p] = torch.empty_like(p, memory_format=torch.contiguous_format)
            tensors.append(buffer)
        return tensors

    def _slots(self, params: list[Tensor], name: str) -> list[Tensor]:
        """The per-parameter accumulator `name`, created as zeros like Keras's K.zeros(shape)."""
        slots = []
        for p in params:
            state = self.state[p]
            if name not in state:
                state[name] = torch.zeros_like(p, memory_format=torch.preserve_format)
            slots.append(state[name])
        return slots


class KerasSGD(KerasOptimizer):
    """keras.optimizers.SGD: velocity v = momentum * v - lr * g, then p += v (or Nesterov).

    torch.optim.SGD keeps buf = momentum * buf + g and applies lr afterwards; that is the same
    trajectory only while lr is constant. Keras folds lr into the velocity, so with ``decay`` the
    old velocity keeps its old learning rate. This class follows Keras.
    """

    spec_name = "sgd"
    _checks = {"lr": _non_negative, "momentum": _non_negative, "decay": _non_negative,
               "nesterov": _flag}

    def _update(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor],
                lr: float, t: int) -> None:
        momentum = group["momentum"]
        if momentum == 0.0:
            # Keras still keeps a velocity (always -lr * g here); p + (0 * m - lr * g) is p - lr * g
            # exactly, so the buffer would change nothing unless momentum is raised mid-run.
            torch._foreach_add_(params, grads, alpha=-lr)
            return
        velocities = self._slots(params, "moment")
        torch._foreach_mul_(velocities, momentum)
        torch._foreach_add_(velocities, grads, alpha=-lr)
        if group["nesterov"]:
            torch._foreach_add_(params, velocities, alpha=momentum)
            torch._foreach_add_(params, grads, alpha=-lr)
        else:
            torch._foreach_add_(params, velocities)


class KerasRMSprop(KerasOptimizer):
    """keras.optimizers.RMSprop: a = rho * a + (1 - rho) * g^2; p -= lr * g / (sqrt(a) + eps).

    Same formula as torch.optim.RMSprop (epsilon outside the sqrt), but Keras's rho is 0.9 (torch's
    alpha is 0.99) and epsilon 1e-7 (torch 1e-8).
    """

    spec_name = "rmsprop"
    _checks = {"lr": _non_negative, "rho": _non_negative, "epsilon": _non_negative,
               "decay": _non_negative}

    def _update(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor],
                lr: float, t: int) -> None:
        accumulators = self._slots(params, "accumulator")
        _ema_square_(accumulators, grads, group["rho"])
        _rms_step_(params, grads, accumulators, group["epsilon"], lr, self._scratch(params))


class KerasAdagrad(KerasOptimizer):
    """keras.optimizers.Adagrad: a += g^2; p -= lr * g / (sqrt(a) + eps).

    Keras 2.2.4 starts the accumulator at 0 (K.zeros); later keras-team master and tf.keras 2.x
    start it at 0.1 (initial_accumulator_value), which damps the first steps a lot.
    Its ``decay`` equals torch's ``lr_decay`` form, but torch's epsilon is 1e-10.
    """

    spec_name = "adagrad"
    _checks = {"lr": _non_negative, "epsilon": _non_negative, "decay": _non_negative}

    def _update(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor],
                lr: float, t: int) -> None:
        accumulators = self._slots(params, "accumulator")
        torch._foreach_addcmul_(accumulators, grads, grads)
        _rms_step_(params, grads, accumulators, group["epsilon"], lr, self._scratch(params))


class KerasAdadelta(KerasOptimizer):
    """keras.optimizers.Adadelta with Keras 2.2's lr = 1.0, rho = 0.95, epsilon = 1e-7.

    update = g * sqrt(d + eps) / sqrt(a + eps) uses the new gradient average `a` and the *old*
    update average `d`; d then averages the update without lr, as in torch.optim.Adadelta (whose
    rho 0.9 and eps 1e-6 differ). tf.keras and Keras 3 default lr to 0.001.
    """

    spec_name = "adadelta"
    _checks = {"lr": _non_negative, "rho": _non_negative, "epsilon": _non_negative,
               "decay": _non_negative}

    def _update(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor],
                lr: float, t: int) -> None:
        rho, epsilon = group["rho"], group["epsilon"]
        accumulators = self._slots(params, "accumulator")
        delta_accumulators = self._slots(params, "delta_accumulator")
        _ema_square_(accumulators, grads, rho)
        updates = correctly_rounded_sqrt(torch._foreach_add(delta_accumulators, epsilon))
        gradient_rms = correctly_rounded_sqrt(torch._foreach_add(accumulators, epsilon))
        torch._foreach_div_(updates, gradient_rms)
        torch._foreach_mul_(updates, grads)
        torch._foreach_add_(params, updates, alpha=-lr)
        _ema_square_(delta_accumulators, updates, rho)


class KerasAdam(KerasOptimizer):
    """keras.optimizers.Adam: p -= lr_t * m / (sqrt(v) + eps), lr_t = lr*sqrt(1 - b2^t)/(1 - b1^t).

    Keras adds epsilon to the *uncorrected* sqrt(v) (the paper's "epsilon hat" form), while
    torch.optim.Adam adds it to sqrt(v / (1 - b2^t)). In torch terms Keras's epsilon is
    eps / sqrt(1 - b2^t): about 32x larger on the first step, shrinking towards eps. No constant
    torch eps reproduces it. With amsgrad, Keras keeps vhat = max(vhat, v) and uses sqrt(vhat).
    """

    spec_name = "adam"
    _checks = {"lr": _non_negative, "beta_1": _fraction, "beta_2": _fraction,
               "epsilon": _non_negative, "decay": _non_negative, "amsgrad": _flag}

    def _update(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor],
                lr: float, t: int) -> None:
        beta_1, beta_2 = group["beta_1"], group["beta_2"]
        lr_t = lr * (math.sqrt(1.0 - beta_2**t) / (1.0 - beta_1**t))
        ms, vs = self._slots(params, "m"), self._slots(params, "v")
        _ema_(ms, grads, beta_1)
        _ema_square_(vs, grads, beta_2)
        if group["amsgrad"]:
            vhats = self._slots(params, "vhat")
            torch._foreach_maximum_(vhats, vs)
            denominators = correctly_rounded_sqrt(vhats, self._scratch(params))
        else:
            denominators = correctly_rounded_sqrt(vs, self._scratch(params))
        torch._foreach_add_(denominators, group["epsilon"])
        torch._foreach_addcdiv_(params, ms, denominators, value=-lr_t)


class KerasAdamax(KerasOptimizer):
    """keras.optimizers.Adamax: u = max(b2 * u, |g|); p -= lr / (1 - b1^t) * m / (u + eps).

    torch.optim.Adamax instead keeps u = max(b2 * u, |g| + eps) and divides by u, so its epsilon
    enters the max and decays with u; Keras adds epsilon once, after the max.
    """

    spec_name = "adamax"
    _checks = {"lr": _non_negative, "beta_1": _fraction, "beta_2": _fraction,
               "epsilon": _non_negative, "decay": _non_negative}

    def _update(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor],
                lr: float, t: int) -> None:
        beta_1 = group["beta_1"]
        lr_t = lr / (1.0 - beta_1**t)
        ms, us = self._slots(params, "m"), self._slots(params, "u")
        _ema_(ms, grads, beta_1)
        torch._foreach_mul_(us, group["beta_2"])
        torch._foreach_maximum_(us, torch._foreach_abs(grads))
        denominators = torch._foreach_add(us, group["epsilon"])
        torch._foreach_addcdiv_(params, ms, denominators, value=-lr_t)


class KerasNadam(KerasOptimizer):
    """keras.optimizers.Nadam with Dozat's warming momentum schedule.

    mu_t = b1 * (1 - 0.5 * 0.96^(t * schedule_decay)); m_schedule is the running product of the
    mu's (a per-group number here, a global variable in Keras). The step is lr * m_bar / denom with
    m_bar = (1 - mu_t) * g / (1 - prod_t) + mu_{t+1} * m / (1 - prod_{t+1}) and
    denom = sqrt(v / (1 - b2^t)) + eps.

    Keras 2.2's Nadam has no ``decay`` argument (passing one raises TypeError there); it is accepted
    here with the same time-inverse formula as the others, and its default 0 is exactly Keras.
    """

    spec_name = "nadam"
    _checks = {"lr": _non_negative, "beta_1": _fraction, "beta_2": _fraction,
               "epsilon": _non_negative, "schedule_decay": _non_negative,
               "decay": _non_negative}

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self.param_groups[-1].setdefault("m_schedule", 1.0)

    def _update(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor],
                lr: float, t: int) -> None:
        beta_1, beta_2 = group["beta_1"], group["beta_2"]
        schedule_decay = group["schedule_decay"]
        momentum_cache_t = beta_1 * (1.0 - 0.5 * 0.96 ** (t * schedule_decay))
        momentum_cache_t_1 = beta_1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * schedule_decay))
        m_schedule_new = group["m_schedule"] * momentum_cache_t
        m_schedule_next = m_schedule_new * momentum_cache_t_1
        group["m_schedule"] = m_schedule_new

        ms, vs = self._slots(params, "m"), self._slots(params, "v")
        _ema_(ms, grads, beta_1)
        _ema_square_(vs, grads, beta_2)
        # m_t_bar = (1 - mu_t) * g / (1 - prod_t) + mu_{t+1} * m_t / (1 - prod_{t+1})
        m_bars = torch._foreach_mul(grads, (1.0 - momentum_cache_t) / (1.0 - m_schedule_new))
        torch._foreach_add_(m_bars, ms, alpha=momentum_cache_t_1 / (1.0 - m_schedule_next))
        denominators = correctly_rounded_sqrt(torch._foreach_div(vs, 1.0 - beta_2**t))
        torch._foreach_add_(denominators, group["epsilon"])
        torch._foreach_addcdiv_(params, m_bars, denominators, value=-lr)


# The transcriptions by the Keras string name each one takes from the vocabulary.
OPTIMIZERS: dict[str, type[KerasOptimizer]] = {
    cls.spec_name: cls
    for cls in (KerasSGD, KerasRMSprop, KerasAdagrad, KerasAdadelta, KerasAdam, KerasAdamax, KerasNadam)
}
if set(OPTIMIZERS) != set(OPTIMIZER_DEFAULTS):  # pragma: no cover - a vocabulary entry without its transcription
    raise ImportError(f"optimizers without a transcription: {sorted(set(OPTIMIZER_DEFAULTS) ^ set(OPTIMIZERS))}")

# Keras 2.3+, tf.keras and Keras 3 spell lr as learning_rate; specs may use either.
_ALIASES = {"learning_rate": "lr"}


def _unknown(kind: str, given: str, choices: Iterable[str], context: str = "") -> str:
    ordered = sorted(choices)
    # Two suggestions: difflib ranks 'adamax' above 'adam' for the typo 'adma'.
    close = close_matches(given, ordered, limit=2, ignore_case=False)
    hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
    return f"unknown {kind} {given!r}{context}{hint} (valid: {', '.join(ordered)})"


def make_optimizer(name: str, params: Params, **overrides: Any) -> torch.optim.Optimizer:
    """Build the Keras-2.2 optimizer called `name` (case-insensitive, Keras's string names).

    `overrides` are Keras argument names (``learning_rate`` is accepted for ``lr``); anything left
    out keeps its Keras 2.2 default. Unknown names, unknown arguments and invalid values raise
    SpecError with a one-line message.
    """
    if not isinstance(name, str):
        raise SpecError(f"optimizer name must be a string, got {name!r}")
    key = name.lower()
    if key not in OPTIMIZERS:
        raise SpecError(_unknown("optimizer", name, OPTIMIZERS))
    allowed = set(OPTIMIZER_DEFAULTS[key]) | set(_ALIASES)
    hyperparameters: dict[str, Any] = {}
    for argument, value in overrides.items():
        if argument not in allowed:
            raise SpecError(_unknown("argument", argument, allowed, f" for optimizer {key!r}"))
        canonical = _ALIASES.get(argument, argument)
        if canonical in hyperparameters:
            raise SpecError(f"optimizer {key!r}: give {canonical!r} or its alias "
                            f"{argument!r}, not both")
        hyperparameters[canonical] = value
    try:
        return OPTIMIZERS[key](params, **hyperparameters)
    except ValueError as error:
        raise SpecError(f"optimizer {key!r}: {error}") from error
