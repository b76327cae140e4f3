"""Whether a run followed its seed notebook's protocol, so its figure may be compared with the notebook's.

A notebook's test accuracy is a fair yardstick only for a run made the same way: the notebook's
epochs, batch size and optimizer, the whole training set, and validation on the test set (the
seed notebooks' practice). Anything else is a different experiment; the report then shows the
notebook's figure with the differences named, and no difference in points.
"""

from __future__ import annotations

from typing import Any

from mnistlab.spec.model import ModelSpec
from mnistlab.training.config import NOTEBOOK_PROTOCOL



def protocol_differences(spec: ModelSpec, protocol: str, train_images: int, full_train_images: int) -> list[str]:
    """How a run differs from its notebook's protocol, in words; empty when it does not.

    `train_images` is what the run trained on; `full_train_images` the dataset's whole training set,
    which is what the notebooks trained on.
    """
    reference: dict[str, Any] = spec.reference or {}
    differences = []
    epochs, notebook_epochs = spec.training.epochs, reference.get("epochs")
    if notebook_epochs is not None and (epochs != notebook_epochs or train_images != full_train_images):
        differences.append(f"{epochs} epochs on {train_images:,} images vs {notebook_epochs} on {full_train_images:,}")
    batch_size, notebook_batch = spec.training.batch_size, reference.get("batch_size")
    if notebook_batch is not None and batch_size != notebook_batch:
        differences.append(f"batch size {batch_size} vs {notebook_batch}")
    optimizer, notebook_optimizer = spec.training.optimizer.name, reference.get("optimizer")
    if notebook_optimizer is not None and optimizer != notebook_optimizer:
        differences.append(f"optimizer {optimizer} vs {notebook_optimizer}")
    if protocol != NOTEBOOK_PROTOCOL:
        differences.append("validated on a held-out split vs on the test set")
    return differences
