"""Every command's usage errors are one line and exit 2; --version; help lists only what exists."""

from __future__ import annotations

import pytest

from cli_driver import run_cli
from mnistlab import __version__
from mnistlab.data.datasets import DATASETS
from mnistlab.spec.parse import parse_model
from mnistlab.spec.summary import summary_text

# (arguments, words the one error line must hold): each command's bad option, value or argument.
BAD_USAGE = [
    (["train", "s004-m1", "--epochs", "0"], ["mnistlab train", "--epochs"]),
    (["train", "s004-m1", "--batch-size", "0"], ["mnistlab train", "--batch-size"]),
    (["train", "s004-m1", "--precision", "fp16"], ["--precision", "fp16"]),
    (["train", "s004-m1", "--validate-on", "both"], ["--validate-on", "both"]),
    (["train", "s004-m1", "--seed", "abc"], ["--seed", "integer"]),
    (["train", "s004-m1", "--train-limit", "-5"], ["--train-limit"]),
    (["train"], ["mnistlab train", "Missing argument"]),
    (["zoo", "--bogus"], ["mnistlab zoo", "--bogus"]),
    (["data", "--bogus"], ["mnistlab data", "--bogus"]),
    (["summary"], ["mnistlab summary", "Missing argument"]),
    (["summary", "s000-m1", "--bogus"], ["--bogus"]),
    (["experiments", "extra-argument"], ["mnistlab experiments", "extra-argument"]),
    (["run"], ["mnistlab run", "Missing argument"]),
    (["run", "quick", "--bogus"], ["mnistlab run", "--bogus"]),
    (["report"], ["mnistlab report", "Missing argument"]),
    (["report", "quick", "--watch", "--every", "0"], ["mnistlab report", "--every"]),
    (["run", "quick", "--log-to", "wandb:runs"], ["--log-to", "wandb:runs"]),
    (["run", "quick", "--log-to", "tensorboard:"], ["--log-to", "tensorboard:"]),
    (["ls", "--bogus"], ["mnistlab ls", "--bogus"]),
    (["show"], ["mnistlab show", "Missing argument"]),
    (["compare", "1"], ["mnistlab compare", "Missing argument"]),
    (["predict", "1"], ["mnistlab predict", "Missing argument"]),
    (["predict", "1", "digit.png", "--top", "0"], ["mnistlab predict", "--top"]),
    (["evaluate"], ["mnistlab evaluate", "Missing argument"]),
    (["evaluate", "1", "--bogus"], ["mnistlab evaluate", "--bogus"]),
    (["export", "1", "--output", "m.onnx"], ["mnistlab export", "--format"]),
    (["export", "1", "--format", "onnx"], ["mnistlab export", "--output"]),
    (["import-keras"], ["mnistlab import-keras", "Missing argument"]),
    (["import-keras", "model.py", "--bogus"], ["mnistlab import-keras", "--bogus"]),
    (["export-keras"], ["mnistlab export-keras", "Missing argument"]),
    (["import-keras-weights", "s000-m1", "w.h5"], ["mnistlab import-keras-weights", "--output"]),
    (["export-runs", "quick", "out"], ["mnistlab export-runs", "--to"]),
    (["export-runs", "quick", "out", "--to", "wandb"], ["--to", "wandb"]),
    (["import-runs"], ["mnistlab import-runs", "Missing argument"]),
    (["run", "quick", "--dry-run", "--probe-seconds", "0"], ["probe seconds", "above 0"]),
    (["reproduction", "--archive", "missing.tar.xz"], ["missing.tar.xz", "no such archive file"]),
    (["export-runs", "quick", "out", "--to", "tensorboard", "--with-models"], ["--with-models", "--to archive"]),
    (["import-runs", "runs.tar.xz", "--bogus"], ["mnistlab import-runs", "--bogus"]),
    (["conclusions"], ["mnistlab conclusions", "Missing argument"]),
    (["reproduction"], ["mnistlab reproduction", "--store"]),
    (["estimate", "s004-m1", "--epochs", "0"], ["mnistlab estimate", "--epochs"]),
    (["estimate", "s004-m1", "--precision", "fp16"], ["--precision", "fp16"]),
    (["estimate", "s004-m1", "--probe-seconds", "0"], ["probe seconds", "above 0"]),
    (["train", "s000-m1", "--patience", "0"], ["mnistlab train", "--patience"]),
    (["run", "quick", "--backend", "x"], ["mnistlab run", "--backend", "x"]),
    (["run", "quick", "--backend", "ray", "--gpus-per-task", "-1"], ["mnistlab run", "--gpus-per-task"]),
    (["run", "quick", "--backend", "ray", "--cpus-per-task", "0"], ["mnistlab run", "--cpus-per-task"]),
    (["train", "s004-m1", "--seeds", "1,1"], ["--seeds", "each seed once"]),
    (["train", "s004-m1", "--seeds", "a"], ["--seeds", "whole numbers"]),
    (["train", "s004-m1", "--seeds", "0,1", "--seed", "2"], ["--seed", "--seeds", "not both"]),
    (["run", "quick", "--bundle", "0"], ["--bundle", "'0'"]),
    (["run", "quick", "--bundle", "x"], ["--bundle", "'x'"]),
    (["train", "s004-m1", "--log-format", "xml"], ["mnistlab train", "--log-format", "xml"]),
    (["run", "quick", "--log-format", "xml"], ["mnistlab run", "--log-format", "xml"]),
    (["run", "quick", "--max-seeds", "4"], ["--max-seeds", "only with --until-decided"]),
    (["run", "quick", "--overrun"], ["--overrun", "only with --until-decided"]),
    (["run", "quick", "--until-decided", "--budget", "soon"], ["--budget", "soon"]),
    (["run", "quick", "--until-decided", "--max-seeds", "1"], ["mnistlab run", "--max-seeds"]),
    (["run", "quick", "--until-decided", "--margin", "-1"], ["mnistlab run", "--margin"]),
    (["run", "quick", "--epochs", "0"], ["mnistlab run", "--epochs"]),
    (["run", "quick", "--seeds", "5:2"], ["--seeds '5:2'", "START:STOP"]),
    (["run", "quick", "--models", "s002-m2"], ["--models s002-m2", "no model entry"]),
    (["run", "quick", "--set", "defaults.train_limit"], ["--set", "KEY=VALUE"]),
    (["run", "quick", "--vary", "dropout=0.5"], ["--vary dropout", "two or more levels"]),
    (["zoo", "--json", "extra"], ["mnistlab zoo", "extra"]),
    (["show", "--json"], ["mnistlab show", "Missing argument"]),
    (["conclusions", "--json"], ["mnistlab conclusions", "Missing argument"]),
    (["tag", "1"], ["mnistlab tag", "Missing argument"]),
    (["untag", "1"], ["mnistlab untag", "Missing argument"]),
    (["note", "1"], ["mnistlab note", "Missing argument"]),
    (["rm"], ["rm: name runs, or --experiment NAME"]),
    (["rm", "1", "--experiment", "quick"], ["rm: name runs, or --experiment NAME, not both"]),
    (["rm", "--bogus"], ["mnistlab rm", "--bogus"]),
    (["gc", "--bogus"], ["mnistlab gc", "--bogus"]),
    (["gc", "extra"], ["mnistlab gc", "extra"]),
    (["ls", "--status", "done"], ["mnistlab ls", "--status", "done"]),
    (["ls", "--where", "1=1; DROP TABLE runs"], ["--where", "';' at column 4"]),
    (["ls", "--where", "status == completed"], ["--where", "quote text values"]),
    (["no-such-command"], ["No such command", "no-such-command"]),
]


@pytest.mark.parametrize(("args", "words"), BAD_USAGE, ids=[" ".join(a) for a, _ in BAD_USAGE])
def test_usage_errors_are_one_line_with_exit_2(args, words):
    result = run_cli(*args)
    assert result.exit_code == 2, result
    assert len(result.error_lines) == 1, result.stderr
    line = result.error_lines[0]
    assert line.startswith("error: ") and "Traceback" not in result.stderr
    for word in words:
        assert word in line


def test_every_command_has_a_bad_usage_case():
    from mnistlab.cli.app import app

    commands = {command.name or command.callback.__name__ for command in app.registered_commands}
    covered = {args[0] for args, _ in BAD_USAGE}
    assert commands <= covered, f"add a bad-usage case for {sorted(commands - covered)}"


def test_version():
    result = run_cli("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"mnistlab {__version__}"


def test_train_help_offers_only_registered_datasets():
    result = run_cli("train", "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    for name in DATASETS:
        assert name in text
    assert "kmnist" not in text


def test_summary_columns_stay_aligned_with_long_names():
    spec = parse_model({
        "id": "long", "input": [28, 28, 1],
        "layers": [{"type": "Conv2D", "filters": 20, "kernel_size": 3, "padding": "same"},
                   {"type": "BatchNormalization", "name": "batch_normalization_with_a_long_name_1"},
                   {"type": "Flatten"}, {"type": "Dense", "units": 10, "activation": "softmax"}],
    })
    lines = summary_text(spec).splitlines()
    header = next(line for line in lines if line.startswith("Layer (type)"))
    shape_column = header.index("Output Shape")
    row = next(line for line in lines if line.startswith("batch_normalization_with_a_long_name_1"))
    assert row[shape_column - 1] == " " and row[shape_column:].startswith("(None, 28, 28, 20)")


def test_backend_ray_without_ray_installed_is_one_line_exit_2(tmp_path, tiny_data_dir, monkeypatch):
    import sys

    from mnistlab.runs.store import RunStore
    from test_runner import tiny_experiment, write_experiment

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails, as where the extra is absent
    path = write_experiment(tmp_path, tiny_experiment(tiny_data_dir, name="noray"))
    result = run_cli("run", path, "--backend", "ray", "--store", tmp_path / "store")
    assert result.exit_code == 2, result
    assert result.error_lines == ["error: --backend ray needs mnistlab[ray]: pip install 'mnistlab[ray]'"]
    with RunStore(tmp_path / "store") as store:
        assert store.runs() == []  # refused before any run was written


def test_cluster_options_with_the_local_backend_are_one_line_exit_2(tmp_path, tiny_data_dir):
    from test_runner import tiny_experiment, write_experiment

    path = write_experiment(tmp_path, tiny_experiment(tiny_data_dir, name="localopts"))
    result = run_cli("run", path, "--address", "127.0.0.1:6379", "--store", tmp_path / "store")
    assert result.exit_code == 2, result
    assert len(result.error_lines) == 1 and "address: only for backend 'ray'" in result.error_lines[0]


# Loaded by training, plots and statistics; `ls` and `show` read the store without any of them.
HEAVY_MODULES = ("torch", "matplotlib", "scipy", "statsmodels", "pandas")
# Runs `mnistlab ARGS...` in a fresh interpreter, then prints which heavy modules it loaded.
IMPORTS_PROBE = """
import json, sys
from mnistlab.cli.app import main
sys.argv = ["mnistlab", *sys.argv[1:]]
code = None
try:
    main()
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "heavy": [name for name in HEAVY if name in sys.modules]}), file=sys.stderr)
"""


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    """One experiment with two finished runs of one model, written as the runner writes them."""
    import numpy as np

    from mnistlab.runs.store import RunStore
    from test_report import GOOD_HISTORY, MID_HISTORY, add_run

    root = tmp_path_factory.mktemp("tiny") / "store"
    labels = (np.arange(100) % 10).astype(np.uint8)
    with RunStore(root) as store:
        store.save_experiment("tiny", {"name": "tiny", "dataset": "synthetic", "protocol": "split",
                                       "models": ["m"], "seeds": [0, 1]})
        add_run(store, "tiny", "m", "a model", None, 0, "completed", 3, GOOD_HISTORY, labels)
        add_run(store, "tiny", "m", "a model", None, 1, "completed", 5, MID_HISTORY, labels)
    return root


@pytest.mark.parametrize("args", [["ls"], ["show", "1"], ["ls", "--json", "--where", "seed >= 0"]],
                         ids=["ls", "show", "ls --json --where"])
def test_ls_and_show_load_neither_torch_nor_pandas(args, tiny_store):
    """A property, not a timing: `ls` and `show` read the store through report.overview, so they start
    without torch, matplotlib, scipy, statsmodels or pandas (seconds of imports on a small machine)."""
    import json
    import os
    import subprocess
    import sys

    from cli_driver import SRC

    probe = f"HEAVY = {HEAVY_MODULES!r}\n{IMPORTS_PROBE}"
    result = subprocess.run([sys.executable, "-c", probe, *args, "--store", str(tiny_store)], capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(SRC)}, timeout=120)
    outcome = json.loads(result.stderr.strip().splitlines()[-1])
    assert outcome == {"code": 0, "heavy": []}, result.stderr
    assert ("tiny" if args[0] == "ls" else "run 1: m, seed 0") in result.stdout


def _cli_process(*args: str, **env: str):
    import os
    import subprocess
    import sys

    from cli_driver import SRC

    clean = {key: value for key, value in os.environ.items() if key not in ("NO_COLOR", "FORCE_COLOR")}
    return subprocess.run([sys.executable, "-m", "mnistlab", *args], capture_output=True, text=True,
                          env={**clean, "PYTHONPATH": str(SRC), **env}, timeout=120)


COLOUR = r"\x1b\[(?:[0-9;]*;)?(?:3[0-7]|9[0-7]|38;)"  # an SGR sequence that sets a foreground colour


def test_no_color_is_respected(tiny_store):
    """https://no-color.org: with NO_COLOR set, no colour even where colour is forced (FORCE_COLOR)."""
    import re

    coloured = _cli_process("ls", "tiny", "--store", str(tiny_store), FORCE_COLOR="1")
    plain = _cli_process("ls", "tiny", "--store", str(tiny_store), FORCE_COLOR="1", NO_COLOR="1")
    assert coloured.returncode == plain.returncode == 0, coloured.stderr + plain.stderr
    assert re.search(COLOUR, coloured.stdout), "the control: forced colour shows colour"
    assert not re.search(COLOUR, plain.stdout)
    assert "tiny" in plain.stdout


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_shell_completion_scripts_are_offered(shell):
    """Typer's completion: `--show-completion SHELL` prints the script `--install-completion` installs."""
    result = _cli_process("--show-completion", shell)
    assert result.returncode == 0, result.stderr
    assert "_COMPLETE" in result.stdout and "complete" in result.stdout.lower()


def test_help_offers_completion():
    result = run_cli("--help")
    assert result.exit_code == 0
    assert "--install-completion" in result.stdout and "--show-completion" in result.stdout
