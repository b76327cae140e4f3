"""Per-seed random numbers: every draw of a training run comes from that run's own generators.

A run's shuffle order and dropout masks are drawn from generators derived from (seed, epoch),
never from torch's global RNG, so that K seeds trained together as a bundle (bundle.py) draw
exactly the numbers each would draw alone, and a resumed run continues as an uninterrupted one.

The scheme (``RNG_SCHEME``, recorded in every checkpoint's identity):

* shuffle: once per epoch, ``torch.randperm(n)`` on a CPU generator seeded ``epoch_seed(seed, epoch)``;
* dropout: one generator per epoch on the run's device, seeded ``dropout_seed(seed, epoch)``; at each
  training step every Dropout layer, in forward order, draws one ``torch.rand`` tensor of its
  input's shape (float32) and keeps the units whose draw is ``>= rate``, scaling them by
  ``1 / (1 - rate)`` (nn.Dropout's semantics).
"""

from __future__ import annotations

import torch
from torch import nn

# Bump when any draw above changes: checkpoints of another scheme must not be resumed.
RNG_SCHEME = "per-seed-1"


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffle generator's seed for ``epoch`` of run ``seed``."""
    return (seed * 1_000_003 + epoch) % (2**63)


def dropout_seed(seed: int, epoch: int) -> int:
    """The dropout generator's seed: odd where shuffle seeds of nearby epochs are consecutive."""
    return (2 * epoch_seed(seed, epoch) + 1) % (2**63)


def shuffle_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))


def dropout_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(dropout_seed(seed, epoch))


def keep_mask(shape: torch.Size | tuple[int, ...], rate: float, generator: torch.Generator,
              device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """One layer's scaled keep mask: 0 where dropped, 1 / (1 - rate) where kept."""
    draw = torch.rand(shape, generator=generator, device=device)
    return (draw >= rate).to(dtype) * (1.0 / (1.0 - rate))


class SeededDropout(nn.Module):
    """nn.Dropout drawing its masks from the generator the engine hands it (``generator``).

    Without one (a model trained outside the engine) it draws from torch's global RNG.
    """

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = float(rate)
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        return x * keep_mask(x.shape, self.rate, self.generator, x.device, x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.rate}"


def set_dropout_generator(model: nn.Module, generator: torch.Generator | None) -> None:
    """Hand every SeededDropout of ``model`` the run's generator (they draw in forward order)."""
    for module in model.modules():
        if isinstance(module, SeededDropout):
            module.generator = generator
