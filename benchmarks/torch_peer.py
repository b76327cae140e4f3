"""Plain-PyTorch peer: the training loop a typical user writes, on the identical architecture.

The model is mnistlab's own nn.Module (`mnistlab.nn.build.build_model`, so layers, padding and
initialisation are identical); everything around it is textbook PyTorch: float tensors in a
`TensorDataset`, a `DataLoader(shuffle=True, batch_size=...)` (no workers), `torch.optim` with
the spec's optimizer at Keras 2.2's hyperparameters (Adam eps 1e-7; Adadelta lr 1.0, rho 0.95,
eps 1e-7), `nn.CrossEntropyLoss`, and per-batch `loss.item()` / accuracy bookkeeping.

    python torch_peer.py --arch model.json --x images.npy --y labels.npy --epochs 2 --threads 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

try:
    import mnistlab  # noqa: F401
except ImportError:  # src layout, run from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

RESULT_PREFIX = "RESULT "


def make_torch_optimizer(torch, name: str, a: dict, params):
    """torch.optim with Keras 2.2's hyperparameters (as close as torch's formulas allow)."""
    O = torch.optim
    if name == "adam":
        return O.Adam(params, lr=a["lr"], betas=(a["beta_1"], a["beta_2"]), eps=a["epsilon"], amsgrad=a["amsgrad"])
    if name == "adadelta":
        return O.Adadelta(params, lr=a["lr"], rho=a["rho"], eps=a["epsilon"])
    if name == "sgd":
        return O.SGD(params, lr=a["lr"], momentum=a["momentum"], nesterov=a["nesterov"])
    if name == "rmsprop":
        return O.RMSprop(params, lr=a["lr"], alpha=a["rho"], eps=a["epsilon"])
    if name == "adagrad":
        return O.Adagrad(params, lr=a["lr"], eps=a["epsilon"])
    if name == "adamax":
        return O.Adamax(params, lr=a["lr"], betas=(a["beta_1"], a["beta_2"]), eps=a["epsilon"])
    if name == "nadam":
        return O.NAdam(params, lr=a["lr"], betas=(a["beta_1"], a["beta_2"]), eps=a["epsilon"])
    raise ValueError(f"no torch.optim translation for {name!r}")


def train_dataloader(spec, images, labels, batch_size: int, epochs: int, device: str = "cpu", seed: int = 0) -> dict:
    """Typical user code on mnistlab's own module: float tensors in a TensorDataset, a shuffling
    DataLoader, per-batch `.to(device)` and `loss.item()`. ``epochs`` timed epochs after one warm-up."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from mnistlab.nn.build import build_model, prepare_input
    from mnistlab.spec.vocabulary import OPTIMIZER_DEFAULTS

    torch.manual_seed(seed)
    x = prepare_input(torch.as_tensor(images), spec.input)  # float in [0, 1], shaped for the model
    loader = DataLoader(TensorDataset(x, torch.as_tensor(labels).long()), batch_size=batch_size, shuffle=True)
    model = build_model(spec, seed=seed).to(device)
    args = dict(OPTIMIZER_DEFAULTS[spec.training.optimizer.name])
    args.update({("lr" if k == "learning_rate" else k): v for k, v in spec.training.optimizer.args.items()})
    optimizer = make_torch_optimizer(torch, spec.training.optimizer.name, args, model.parameters())
    criterion = nn.CrossEntropyLoss()

    seconds = []
    for _ in range(epochs + 1):  # the first is the warm-up
        started = time.perf_counter()
        model.train()
        running_loss, correct = 0.0, 0
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            optimizer.zero_grad()
            out = model(xb)
            loss = criterion(out, yb)
            loss.backward()
            optimizer.step()
            running_loss += loss.item() * len(yb)
            correct += (out.argmax(1) == yb).sum().item()
        seconds.append(time.perf_counter() - started)  # .item() above has synchronised the device
    timed = seconds[1:]
    return {
        "framework": "torch", "model": spec.id, "images": len(x), "batch_size": batch_size, "device": str(device),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "epoch_seconds": seconds, "timed_epochs": len(timed), "timed_seconds": sum(timed),
        "images_per_second": len(x) * len(timed) / sum(timed),
        "per_epoch_images_per_second": [len(x) / s for s in timed],
        "final_loss": running_loss / len(x), "final_acc": correct / len(x),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", required=True, help="JSON written by bench_train.py")
    parser.add_argument("--x", required=True, help=".npy uint8 images (N, 28, 28)")
    parser.add_argument("--y", required=True, help=".npy int labels (N,)")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs (one untimed warm-up comes first)")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import numpy as np
    import torch

    from mnistlab.spec.parse import parse_model

    torch.set_num_threads(args.threads)
    arch = json.loads(Path(args.arch).read_text())
    spec = parse_model(arch["spec"])
    result = train_dataloader(spec, np.load(args.x), np.load(args.y), args.batch_size or arch["batch_size"],
                              args.epochs, seed=args.seed)
    print(RESULT_PREFIX + json.dumps({**result, "model": arch["id"]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
