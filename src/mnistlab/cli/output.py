"""Where the CLI's text goes: the two consoles, one-line output, and the commands' line-by-line texts.

Plain strings printed here are never markup and lose their control characters (safetext): style with
rich.text.Text, never with "[red]...[/red]". Lines go out through `say`, tables through console.print
(a table is laid out to the width; a line must not be cut at 80 in a pipe).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.text import Text

from mnistlab.util.safetext import one_line, safe_console
from mnistlab.training.history import DIVERGED

if TYPE_CHECKING:
    from mnistlab.trained.folder import TrainedModel
    from mnistlab.trained.inference import Evaluation, Predictions
    from mnistlab.training.history import History

__all__ = ["class_label", "console", "err_console", "evaluation_lines", "prediction_lines", "print_error", "say",
           "train_summary"]

console = safe_console()
err_console = safe_console(stderr=True)


def say(line: str | Text, to: Console = console) -> None:
    """Print one line: never hard-wrapped (a pipe or log file keeps it whole), never highlighted. A
    string may quote file contents (class names, ids, dataset names, paths): it goes through safetext,
    so control characters never reach the terminal and it stays one line (the console reads no markup)."""
    to.print(one_line(line) if isinstance(line, str) else line, highlight=False, soft_wrap=True)


def print_error(message: str) -> None:
    """One line on stderr: the message may quote user strings, so it is text, never markup."""
    say(Text.assemble(("error:", "bold red"), " ", one_line(message)), to=err_console)


def train_summary(history: History, prefix: str = "") -> None:
    """`mnistlab train`'s closing lines for one trained seed."""
    if history.status == DIVERGED:
        say(Text.assemble(prefix, ("diverged", "red"),
                          f" at epoch {history.diverged_epoch} (non-finite loss); run stopped"))
    else:
        say(Text(f"{prefix}Test loss: {history.test_loss:.4f}  Test accuracy: {history.test_acc:.4f}  "
                 f"({history.images_per_second:,.0f} images/s, {history.images_per_second_note})"))
        if history.best_epoch is not None:
            fired = "stopped early" if history.stopped_early else "patience never ran out"
            say(f"{prefix}Early stopping: {fired}; tested with epoch {history.best_epoch}'s weights (lowest val_loss)")
    for note in history.notes:  # how its arithmetic was done where not the default
        say(f"{prefix}Note: {note}")


def class_label(index: int, name: str) -> str:
    return name if name == str(index) else f"{index} ({name})"


def prediction_lines(trained: TrainedModel, result: Predictions, top: int) -> None:
    """`mnistlab predict`: the model, then per image its class and the `top` likeliest classes."""
    say(trained.describe())
    for index, name in enumerate(result.names):
        best = result.top(index, top)
        note = f"  ({result.notes[index]})" if result.notes[index] else ""
        say(f"{name}: {class_label(best[0][0], best[0][1])}{note}")
        say(f"    top {top}: " + "  ".join(f"{class_label(c, n)} {p:.4f}" for c, n, p in best))


def evaluation_lines(trained: TrainedModel, result: Evaluation) -> None:
    """`mnistlab evaluate`: the model, accuracy and loss, and the confusion matrix, aligned in columns."""
    say(trained.describe())
    say(f"{result.dataset} test set, {result.images:,} images: accuracy {result.accuracy:.4f}, loss {result.loss:.4f}")
    say("confusion matrix (rows: true class, columns: predicted class)")
    labels = [one_line(class_label(i, n)) for i, n in enumerate(result.class_names)]
    width = max(len(label) for label in labels)
    cell = max(5, len(str(int(result.confusion.max()))) + 1)
    say(" " * width + "".join(f"{i:>{cell}}" for i in range(len(labels))))
    for label, row in zip(labels, result.confusion):
        say(f"{label:<{width}}" + "".join(f"{int(v):>{cell}}" for v in row))
