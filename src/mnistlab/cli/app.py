"""The `mnistlab` command: a thin Typer layer over the Python API.

Every user error surfaces as a MnistlabError; `main` prints its one line and exits with 2, with
no traceback. Ctrl-C exits with 130 and leaves the last checkpoint intact.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mnistlab import __version__
from mnistlab.data.datasets import DATASETS
from mnistlab.errors import EnvironmentFailure, MnistlabError
from mnistlab.training.precision import COMPILE_MODES, PRECISIONS
from mnistlab.report.progress import LOG_FORMATS
from mnistlab.util.safetext import clean, one_line, safe_console
from mnistlab.spec.fields import SEED_BOUND

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Design, train and compare neural networks on MNIST-family datasets (Keras 2.2 semantics, PyTorch speed).",
)
# Plain strings printed here are never markup and lose their control characters (safetext):
# style with rich.text.Text, never with "[red]...[/red]". Lines go out through `_say`, tables
# through console.print (a table is laid out to the width; a line must not be cut at 80 in a pipe).
console = safe_console()
err_console = safe_console(stderr=True)


def _say(line: str | Text, to: Console = console) -> None:
    """Print one line: never hard-wrapped (a pipe or log file keeps it whole), never highlighted. A
    string may quote file contents (class names, ids, dataset names, paths): it goes through safetext,
    so control characters never reach the terminal and it stays one line (the console reads no markup)."""
    to.print(one_line(line) if isinstance(line, str) else line, highlight=False, soft_wrap=True)

DataDirOption = Annotated[
    Optional[Path],
    typer.Option("--data-dir", envvar="MNISTLAB_DATA_DIR", help="Folder holding the dataset files (or <name>/ subfolders)."),
]


# Built from the registry, so help offers only datasets that exist.
DATASET_HELP = f"{', '.join(DATASETS)}, or a folder holding the four IDX files."


def _show_version(value: bool) -> None:
    if value:
        print(f"mnistlab {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Design, train and compare neural networks on MNIST-family datasets (Keras 2.2 semantics, PyTorch speed)."""


class Protocol(str, Enum):
    split = "split"
    test = "test"


class Backend(str, Enum):
    local = "local"
    ray = "ray"


Precision = Enum("Precision", {name: name for name in PRECISIONS}, type=str)  # precision.py's, one home
CompileMode = Enum("CompileMode", {name: name for name in COMPILE_MODES}, type=str)
LogFormat = Enum("LogFormat", {name: name for name in LOG_FORMATS}, type=str)  # progress.py's

LogFormatOption = Annotated[LogFormat, typer.Option(
    help="text: a progress bar on a terminal, else one line per epoch; json: one JSON object per epoch and per "
         "finished run on stderr (schema: README), even with --quiet.")]


@app.command()
def zoo() -> None:
    """List the built-in seed models with their parameter counts and the notebook's test accuracy."""
    from mnistlab.spec.model import resolve
    from mnistlab.zoo import zoo_models

    table = Table(title="mnistlab zoo (models from the seed notebooks)")
    for column in ("id", "params", "optimizer", "epochs", "seed test acc", "description"):
        table.add_column(column, justify="right" if column in ("params", "epochs", "seed test acc") else "left")
    for spec in zoo_models().values():
        reference = spec.reference or {}
        acc = reference.get("test_acc")
        table.add_row(
            spec.id,
            f"{resolve(spec).total_params:,}",
            spec.training.optimizer.name,
            str(spec.training.epochs),
            f"{acc * 100:.2f}%" if acc is not None else "—",
            spec.description,
        )
    console.print(table)


@app.command()
def data(
    data_dir: DataDirOption = None,
    download: Annotated[bool, typer.Option(help="Download missing datasets into the cache.")] = False,
) -> None:
    """Show where each dataset is found and check its files (sizes, magic numbers, sha256)."""
    from mnistlab.data.datasets import DATASETS, load_dataset
    from mnistlab.errors import DataError

    table = Table(title="datasets")
    for column in ("name", "status", "train", "test", "folder"):
        table.add_column(column, overflow="fold")
    failures = 0
    for name in DATASETS:
        try:
            dataset = load_dataset(name, data_dir=data_dir, download=download)
        except DataError as exc:
            failures += 1
            table.add_row(name, Text("missing or bad", style="red"), "", "", str(exc))
            continue
        table.add_row(name, Text("ok", style="green"), f"{len(dataset.train_labels):,}", f"{len(dataset.test_labels):,}",
                      str(dataset.source_dir))
    console.print(table)
    if failures == len(DATASETS):
        raise typer.Exit(1)


@app.command()
def summary(
    model: Annotated[str, typer.Argument(help="Zoo id (s002-m10) or spec file (file.yaml or file.yaml:MODEL_ID).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Print a Keras-style summary: layers, output shapes, parameter counts."""
    from mnistlab.api import model_spec
    from mnistlab.spec.summary import summary_data, summary_text

    spec = model_spec(model)
    if as_json:
        print(json.dumps(summary_data(spec), indent=2))
    else:
        print(clean(summary_text(spec)))  # ids and layer names are user text: no control characters


@app.command()
def train(
    model: Annotated[str, typer.Argument(help="Zoo id or spec file (file.yaml or file.yaml:MODEL_ID).")],
    dataset: Annotated[str, typer.Option(help=DATASET_HELP)] = "mnist",
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Default: the spec's.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Default: the spec's.")] = None,
    seed: Annotated[Optional[int], typer.Option(min=0, max=SEED_BOUND - 1, help="Seeds initial weights, shuffles and dropout (default 0).")] = None,
    seeds: Annotated[Optional[str], typer.Option(
        help="Train these seeds (e.g. 0,1,2,3) as one seed bundle; --out DIR then holds DIR/seed-N model folders.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    precision: Annotated[Precision, typer.Option(
        help="fp32 (strict float32, as Keras), tf32 (CUDA tensor cores) or bf16 autocast.")] = Precision.fp32,
    deterministic: Annotated[bool, typer.Option(
        "--deterministic", help="CUDA: deterministic kernels only (slower; an op without one fails).")] = False,
    validate_on: Annotated[
        Protocol, typer.Option(help="split: a stratified 10% of train; test: the seeds' practice.")
    ] = Protocol.split,
    train_limit: Annotated[Optional[int], typer.Option(min=1, help="Train on the first N training images.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder for checkpoints and history.json.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the checkpoint in --out.")] = False,
    compile: Annotated[bool, typer.Option("--compile", help="Use torch.compile (its default mode).")] = False,
    compile_mode: Annotated[Optional[CompileMode], typer.Option(
        help="torch.compile in this mode (implies --compile); reduce-overhead: CUDA graphs.")] = None,
    patience: Annotated[Optional[int], typer.Option(
        min=1, help="Early stopping: stop after N epochs without a new lowest val_loss; the best "
                    "epoch's weights are restored at the end either way.")] = None,
    threads: Annotated[Optional[int], typer.Option(
        min=1, help="CPU threads for the whole run (default: usable cores; on --resume, the checkpoint's).")] = None,
    data_dir: DataDirOption = None,
    download: Annotated[bool, typer.Option(help="Download the dataset if it is not found.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object with the history at the end.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress output.")] = False,
    log_format: LogFormatOption = LogFormat.text,
    max_params: Annotated[
        Optional[int], typer.Option(min=1, help="Refuse models with more parameters (default: limits.MAX_PARAMS).")
    ] = None,
    max_activation_mib: Annotated[
        Optional[int],
        typer.Option(min=1, help="Refuse batches needing more MiB of activations (default: limits.MAX_ACTIVATION_MIB)."),
    ] = None,
) -> None:
    """Train one model and evaluate it once on the test set."""
    from mnistlab.api import model_spec, train as train_model, write_history
    from mnistlab.training.bundle import check_seed_list, seed_dir
    from mnistlab.data.datasets import load_dataset
    from mnistlab.report.progress import make_reporter

    # --seeds: one seed bundle, with one summary (or JSON line) and one --out DIR/seed-N per seed.
    bundled = seeds is not None
    seed_list = check_seed_list(seeds, seed is not None) if bundled else [seed if seed is not None else 0]
    spec = model_spec(model)
    data = load_dataset(dataset, data_dir=data_dir, download=download)
    compiling: bool | str = compile_mode.value if compile_mode is not None else compile
    options = dict(
        epochs=epochs, batch_size=batch_size, device=device, precision=precision.value,
        validate_on=validate_on.value, train_limit=train_limit, out_dir=out, resume=resume, compile=compiling,
        max_params=max_params, max_activation_mib=max_activation_mib, patience=patience, threads=threads,
        deterministic=deterministic,
    )
    if bundled:
        options["seeds"] = seed_list
    else:
        options["seed"] = seed_list[0]
    # --json's summary owns stdout: no text progress then (json events go to stderr).
    reporter = make_reporter(console, log_format.value, quiet or as_json, label=f"{len(seed_list)} seeds " if bundled else "",
                             model=spec.id, seed=seed_list[0])
    trained = train_model(spec, data, reporter=reporter, **options)  # --out becomes a model folder (seed-N with --seeds)
    for history in trained if bundled else [trained]:
        if out is not None:
            write_history((seed_dir(out, history.seed) if bundled else out) / "history.json", history)
        if as_json:
            print(json.dumps(history.to_json()))
        elif not quiet:
            _print_summary(history, prefix=f"seed {history.seed}: " if bundled else "")


def _print_summary(history, prefix: str = "") -> None:
    if history.status == "diverged":
        _say(Text.assemble(prefix, ("diverged", "red"), f" at epoch {history.diverged_epoch} (non-finite loss); run stopped"))
    else:
        _say(Text(f"{prefix}Test loss: {history.test_loss:.4f}  Test accuracy: {history.test_acc:.4f}  "
                  f"({history.images_per_second:,.0f} images/s, {history.images_per_second_note})"))
        if history.best_epoch is not None:
            fired = "stopped early" if history.stopped_early else "patience never ran out"
            _say(f"{prefix}Early stopping: {fired}; tested with epoch {history.best_epoch}'s weights (lowest val_loss)")


StoreOption = Annotated[Path, typer.Option("--store", envvar="MNISTLAB_STORE", help="Run store folder.")]
DEFAULT_STORE = Path("mnistlab-runs")


@app.command()
def experiments() -> None:
    """List the built-in experiments."""
    from mnistlab.experiments.definition import builtin_experiments, expand, load_experiment

    table = Table(title="built-in experiments (mnistlab run NAME)")
    for column in ("name", "models", "seeds", "protocol", "description"):
        table.add_column(column)
    for name in sorted(builtin_experiments()):
        experiment, source = load_experiment(name)
        models = len({task.model_id for task in expand(experiment, source)})  # factor variants count too
        table.add_row(name, str(models), str(len(experiment.seed_list)), experiment.protocol,
                      experiment.description)
    console.print(table)


@app.command()
def run(
    experiment: Annotated[str, typer.Argument(help="A built-in experiment (mnistlab experiments) or an experiment file.")],
    store: StoreOption = DEFAULT_STORE,
    data_dir: DataDirOption = None,
    download: Annotated[bool, typer.Option(help="Download the dataset if it is not found.")] = False,
    report: Annotated[bool, typer.Option(help="Write the report when done.")] = True,
    quiet: Annotated[bool, typer.Option(help="No progress output.")] = False,
    log_format: LogFormatOption = LogFormat.text,
    heartbeat_seconds: Annotated[Optional[float], typer.Option(
        min=0.01, envvar="MNISTLAB_HEARTBEAT_SECONDS", help="How often a training process refreshes its claim (default 10).")] = None,
    lease_seconds: Annotated[Optional[float], typer.Option(
        min=0.0, envvar="MNISTLAB_LEASE_SECONDS",
        help="Take a run over from another process only after its claim is this old (default: 6 heartbeats).")] = None,
    bundle: Annotated[str, typer.Option(
        help="Train up to K seeds of a model together as one seed bundle; auto: as many as fit in memory.")] = "1",
    backend: Annotated[Backend, typer.Option(help="Where tasks train: here, or on a Ray cluster (needs the ray extra).")] = Backend.local,
    address: Annotated[Optional[str], typer.Option(
        help="Ray cluster address (host:port, or auto); default: a private Ray instance on this machine.")] = None,
    gpus_per_task: Annotated[Optional[float], typer.Option(
        min=0.0, help="GPUs each Ray task reserves (0.25: four tasks share a GPU); default 0.")] = None,
    cpus_per_task: Annotated[Optional[int], typer.Option(
        min=1, help="CPUs each Ray task reserves and uses as torch threads; default: 1 reserved, the local thread count used.")] = None,
    artifacts: Annotated[Optional[Path], typer.Option(
        help="Checkpoint folder every Ray worker can reach (shared storage); default: the store's artifacts folder.")] = None,
) -> None:
    """Train every (model, seed) of an experiment not already in the store; resume interrupted ones."""
    from mnistlab.experiments.definition import expand, load_experiment
    from mnistlab.report.progress import task_reporters
    from mnistlab.runs.local import parse_bundle
    from mnistlab.runs.runner import Placement, experiment_settled, run_experiment
    from mnistlab.runs.store import RunStore

    bundle_size = parse_bundle(bundle)
    spec, source = load_experiment(experiment)
    reporter_for = task_reporters(expand(spec, source), console, log_format.value, quiet)
    timing = {"heartbeat_seconds": heartbeat_seconds} if heartbeat_seconds else {}
    placement = Placement(backend.value, address, gpus_per_task, cpus_per_task, artifacts)
    placement.check()  # a bad --address or cluster option is refused before the store is created
    with RunStore(store, lease_seconds=lease_seconds, **timing) as run_store:
        outcome = run_experiment(spec, run_store, source, data_dir=data_dir, download=download, reporter_for=reporter_for,
                                 bundle=bundle_size, placement=placement)
        if not quiet:
            _say(f"{spec.name}: trained {len(outcome.trained)}, already done {len(outcome.skipped_finished)}, "
                 f"left to another process {len(outcome.skipped_claimed) + len(outcome.lost)}  (store: {store})")
        # Whichever process finds, after its own last write, that no run is left writes the report.
        if report and experiment_settled(run_store, outcome.run_ids):
            _write_report(run_store, spec.name, store / "reports", data_dir, spec.dataset, quiet)
        elif report and not quiet:
            _say(f"report: left to the process still training; or later: mnistlab report {spec.name}")


def _write_report(run_store, name: str, out_dir: Path, data_dir: Optional[Path], dataset: str, quiet: bool) -> None:
    from mnistlab.data.datasets import load_dataset
    from mnistlab.errors import DataError
    from mnistlab.report import write_report

    try:
        data = load_dataset(dataset, data_dir=data_dir)
    except DataError:
        data = None  # the report says the misclassified grid needs the dataset
    paths = write_report(run_store, name, out_dir, dataset=data)
    if not quiet:
        _say(f"report: {paths.html}  and  {paths.markdown}")


@app.command()
def report(
    experiment: Annotated[str, typer.Argument(help="Experiment name (as stored) or file.")],
    store: StoreOption = DEFAULT_STORE,
    out: Annotated[Optional[Path], typer.Option(help="Folder for the HTML and Markdown (default: STORE/reports).")] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Write the comparison report (one self-contained HTML page and a Markdown file)."""
    from mnistlab.runs.store import open_existing_store

    name = _experiment_name(experiment)
    with open_existing_store(store) as run_store:
        config = next((e.config for e in run_store.experiments() if e.name == name), None)
        if config is None:
            raise MnistlabError(f"{store}: no experiment '{name}' in this store; run it first with `mnistlab run {experiment}`")
        _write_report(run_store, name, out or store / "reports", data_dir, config.get("dataset", "mnist"), quiet=False)


@app.command()
def conclusions(
    experiment: Annotated[str, typer.Argument(help="Experiment name (as stored) or file.")],
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """Print the report's written conclusions: one sentence per finding, Holm-corrected."""
    from mnistlab.report import experiment_conclusions
    from mnistlab.runs.store import open_existing_store

    with open_existing_store(store) as run_store:
        found = experiment_conclusions(run_store, _experiment_name(experiment))
    for sentence in found.sentences:
        _say(f"- {sentence}")
    _say(Text(found.method, style="dim"))


@app.command()
def reproduction(
    store: Annotated[list[Path], typer.Option("--store", envvar="MNISTLAB_STORE",
                                              help="Run store folder(s) to read; repeat for several.")],
    out: Annotated[Optional[Path], typer.Option(help="Write the Markdown table here (e.g. docs/REPRODUCTION.md).")] = None,
    estimate_seconds: Annotated[Optional[float], typer.Option(
        help="With --out: probe each model not run yet for this many seconds here (fp32) and give its "
             "estimated hours per seed in the document.")] = None,
) -> None:
    """Seed notebooks vs mnistlab under each notebook's protocol: mean ± 95% CI over seeds and a verdict."""
    from mnistlab import api
    from mnistlab.analysis.compare import accuracy_interval_text
    from mnistlab.report.reproduction import RULE

    lines = api.reproduction(store, out, estimate_seconds)
    table = Table("model", "notebook %", "mnistlab %", "seeds", "verdict")
    for line in lines:
        notebook = f"{100 * line.notebook_acc:.2f}" if line.notebook_acc is not None else "-"
        measured = accuracy_interval_text(line.mean, line.half_width, unit="") if line.seeds else "-"
        table.add_row(Text(line.model_id), notebook, measured, str(line.seeds), line.verdict)
    console.print(table)
    _say(Text(RULE, style="dim"))
    if out is not None:
        _say(f"wrote {out}")


@app.command()
def estimate(
    model: Annotated[str, typer.Argument(help="Zoo id or spec file (file.yaml or file.yaml:MODEL_ID).")],
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Default: the spec's (the notebook's, for zoo models).")] = None,
    train_images: Annotated[Optional[int], typer.Option(
        min=1, help="Images trained on per epoch (default: the whole training set, or 54,000 with --validate-on split).")] = None,
    precision: Annotated[Precision, typer.Option(help="fp32, tf32 (CUDA) or bf16 autocast.")] = Precision.fp32,
    validate_on: Annotated[
        Protocol, typer.Option(help="test: the notebooks' protocol (the default here); split: a stratified 10% of train.")
    ] = Protocol.test,
    probe_seconds: Annotated[Optional[float], typer.Option(
        help="How long the probe measures (default 10, at most 30).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Default: the spec's.")] = None,
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads (default: usable cores).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the estimate as one JSON object.")] = False,
) -> None:
    """Estimate one seed's training time here from a short measured probe of real training steps."""
    from mnistlab import api
    from mnistlab.training.cost import ESTIMATE_INCLUDES, FLOPS_COUNTED, forward_flops

    spec = api.model_spec(model)
    cost = api.estimate(spec, epochs, train_images, precision.value, validate_on=validate_on.value,
                        probe_seconds=probe_seconds, batch_size=batch_size, threads=threads, device=device)
    flops = forward_flops(spec)
    if as_json:
        print(json.dumps({**cost.to_json(), "forward_flops_per_image": flops}))
        return
    speed = cost.throughput
    table = Table("model", "forward MFLOP/image", f"train img/s ({speed.precision})", "eval img/s", "epochs",
                  "images/epoch", "est. hours/seed", title="estimated training time (one seed)")
    table.add_row(Text(spec.id), f"{flops / 1e6:,.1f}", f"{speed.train_images_per_second:,.0f}",
                  f"{speed.eval_images_per_second:,.0f}", str(cost.epochs), f"{cost.train_images:,}",
                  f"{cost.hours:,.2f}")
    console.print(table)
    warm = "; one step outlasted the probe, so its warm-up is in the figure" if speed.warmup_timed else ""
    console.print(Text(f"on {speed.machine}, {speed.threads} threads, batch {speed.batch_size}: {speed.train_steps} "
                       f"training steps and {speed.eval_images:,} evaluated images timed in a {speed.seconds:.0f} s "
                       f"probe{warm}. Counts {ESTIMATE_INCLUDES}. FLOPs: {FLOPS_COUNTED}.", style="dim"))


def _experiment_name(experiment: str) -> str:
    """A stored experiment's name from a name, a built-in name, or an experiment file."""
    path = Path(experiment)
    if path.suffix in (".yaml", ".yml") and path.exists():
        from mnistlab.experiments.definition import load_experiment

        return load_experiment(path)[0].name
    return experiment


@app.command("ls")
def ls_(
    experiment: Annotated[Optional[str], typer.Argument(help="Show this experiment's runs.")] = None,
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """List the stored experiments, or one experiment's runs and models (diagnosis over all seeds)."""
    from mnistlab.cli.views import experiment_view, experiments_table
    from mnistlab.runs.store import open_existing_store

    with open_existing_store(store) as run_store:
        console.print(experiment_view(run_store, _experiment_name(experiment)) if experiment else experiments_table(run_store))


@app.command()
def show(
    run_id: Annotated[str, typer.Argument(help="A run id (from mnistlab ls EXPERIMENT).")],
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """One run: its spec, status, per-epoch metrics, final metrics and diagnosis."""
    from mnistlab.cli.views import run_panel
    from mnistlab.runs.store import open_existing_store

    with open_existing_store(store) as run_store:
        console.print(run_panel(run_store, _run_id(run_store, run_id)))


@app.command()
def compare(
    a: Annotated[str, typer.Argument(help="Run id, or model id (with --experiment when several hold it).")],
    b: Annotated[str, typer.Argument(help="Run id, or model id (with --experiment when several hold it).")],
    experiment: Annotated[Optional[str], typer.Option(help="The experiment whose runs model ids refer to.")] = None,
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """Two runs (or two models) side by side, with McNemar's exact test on their test predictions."""
    from mnistlab.cli.views import compare_table
    from mnistlab.runs.store import open_existing_store

    with open_existing_store(store) as run_store:
        console.print(compare_table(run_store, a, b, experiment=_experiment_name(experiment) if experiment else None))


def _run_id(run_store, text: str) -> int:
    matches = run_store.find_runs(text)
    if len(matches) != 1:
        found = "no run" if not matches else f"{len(matches)} runs"
        raise MnistlabError(f"{run_store.path}: {found} match '{text}'; `mnistlab ls EXPERIMENT` lists run ids")
    return matches[0].id


MaxParamsOption = Annotated[Optional[int], typer.Option(
    min=1, help="Load models with up to this many parameters (default: limits.MAX_PARAMS), for ones trained with a raised limit.")]

ModelArgument = Annotated[
    str, typer.Argument(help="A run id or reference (mnistlab ls EXPERIMENT), or a model folder (a run's or train --out's).")
]


def _load_trained(source: str, store: Path, max_params: Optional[int] = None):
    """The model a RUN_OR_FOLDER argument names: a model folder, else a run in the store."""
    from mnistlab.api import load_model
    from mnistlab.runs.store import DB_NAME, RunStore

    if Path(source).is_dir():
        return load_model(Path(source), max_params=max_params)
    if not (store / DB_NAME).is_file():
        raise MnistlabError(f"{source}: not a model folder, and {store} holds no run store to find a run in; "
                            "pass --store DIR or a model folder")
    with RunStore(store) as run_store:
        return load_model(run_store, _run_id(run_store, source), max_params=max_params)


def _top_line(top: list[tuple[int, str, float]]) -> str:
    return "  ".join(f"{_class_label(c, n)} {p:.4f}" for c, n, p in top)


def _class_label(index: int, name: str) -> str:
    return name if name == str(index) else f"{index} ({name})"


@app.command()
def predict(
    model: ModelArgument,
    inputs: Annotated[list[Path], typer.Argument(help="PNG/JPEG pictures (any size), .npy arrays or IDX image files.")],
    top: Annotated[int, typer.Option(min=1, help="How many of the likeliest classes to print per image.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    max_params: MaxParamsOption = None,
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """Classify images with a trained model: the class and the top-K probabilities per image."""
    from mnistlab.api import predict as predict_images

    trained = _load_trained(model, store, max_params)
    result = predict_images(trained, inputs)
    top = min(top, len(trained.class_names))
    if as_json:
        about = {"id": trained.spec.id, "seed": trained.info.seed, "dataset": trained.info.dataset,
                 "source": str(trained.source)}
        print(json.dumps({"model": about, "predictions": result.to_json(top)}, indent=1))
        return
    _say(trained.describe())
    for index, name in enumerate(result.names):
        best = result.top(index, top)
        note = f"  ({result.notes[index]})" if result.notes[index] else ""
        _say(f"{name}: {_class_label(best[0][0], best[0][1])}{note}")
        _say(f"    top {top}: {_top_line(best)}")


@app.command()
def evaluate(
    model: ModelArgument,
    dataset: Annotated[Optional[str], typer.Option(help=f"{DATASET_HELP} Default: the model's own.")] = None,
    threads: Annotated[Optional[int], typer.Option(
        min=1, help="CPU threads for the whole run (default: usable cores; on --resume, the checkpoint's).")] = None,
    data_dir: DataDirOption = None,
    download: Annotated[bool, typer.Option(help="Download the dataset if it is not found.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    max_params: MaxParamsOption = None,
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """Evaluate a trained model on a test set again (accuracy, loss, confusion matrix); writes nothing."""
    from mnistlab.api import evaluate as evaluate_model

    trained = _load_trained(model, store, max_params)
    result = evaluate_model(trained, dataset, data_dir=data_dir, download=download)
    if as_json:
        print(json.dumps(result.to_json(), indent=1))
        return
    _say(trained.describe())
    _say(f"{result.dataset} test set, {result.images:,} images: accuracy {result.accuracy:.4f}, loss {result.loss:.4f}")
    _say("confusion matrix (rows: true class, columns: predicted class)")
    labels = [one_line(_class_label(i, n)) for i, n in enumerate(result.class_names)]
    width = max(len(label) for label in labels)
    cell = max(5, len(str(int(result.confusion.max()))) + 1)
    _say(" " * width + "".join(f"{i:>{cell}}" for i in range(len(labels))))
    for label, row in zip(labels, result.confusion):
        _say(f"{label:<{width}}" + "".join(f"{int(v):>{cell}}" for v in row))


@app.command("export")
def export_(
    model: ModelArgument,
    format: Annotated[str, typer.Option("--format", help="onnx, pt2 (torch.export) or safetensors.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The file to write.")],
    max_params: MaxParamsOption = None,
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """Export a trained model: float32 images in [0, 1] ([N, 28, 28, 1], or [N, 784] for MLPs) in, probabilities out."""
    from mnistlab.api import export_model
    from mnistlab.trained.export import input_layout

    trained = _load_trained(model, store, max_params)
    path = export_model(trained, output, format)
    _say(f"wrote {path} ({format}); input: {input_layout(trained)}; output: probabilities")


@app.command("import-keras")
def import_keras(
    file: Annotated[Path, typer.Argument(help="Keras model code: a .py file or a Jupyter notebook (.ipynb).")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the specs here (YAML) instead of printing them.")] = None,
) -> None:
    """Translate the Keras models in FILE into mnistlab specs (the code is parsed, never run)."""
    from mnistlab import api
    from mnistlab.util.atomic import check_target, write_text
    from mnistlab.interop.spec_yaml import specs_yaml

    if output is not None:
        check_target(output)  # before the work, and again when written

    result = api.import_keras(file)
    for item in result.skipped:
        _say(f"skipped: {str(item)}", to=err_console)
    if not result.specs:
        found = f"{len(result.skipped)} skipped, listed above" if result.skipped else "no Keras model found"
        raise MnistlabError(f"{file}: no model could be translated ({found})")
    text = specs_yaml(result)
    if output is None:
        sys.stdout.write(text)
        return
    try:
        write_text(output, text)
    except OSError as error:
        raise EnvironmentFailure(f"{output}: cannot write the specs: {error.strerror or error}") from None
    ids = ", ".join(spec.id for spec in result.specs)
    _say(f"wrote {len(result.specs)} model(s) to {str(output)}: {ids}")


@app.command("export-keras")
def export_keras(
    model: Annotated[str, typer.Argument(help="A zoo id (s002-m10) or a spec file (file.yaml or file.yaml:ID).")],
) -> None:
    """Print runnable Keras 3 / tf.keras code for MODEL, with Keras 2.2's defaults written out."""
    from mnistlab import api

    sys.stdout.write(api.export_keras(model))


@app.command("import-keras-weights")
def import_keras_weights(
    model: Annotated[str, typer.Argument(help="The architecture: a zoo id or a spec file (file.yaml or file.yaml:ID).")],
    weights: Annotated[Path, typer.Argument(help="A Keras 2 HDF5 file from model.save_weights('w.h5') or model.save('m.h5').")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The model folder to write.")],
) -> None:
    """Load Keras HDF5 weights into MODEL and write a model folder that predict, evaluate and export read."""
    from mnistlab import api

    folder = api.import_keras_weights(model, weights, output)
    _say(f"wrote model folder {str(folder)}")


class RunsTarget(str, Enum):
    tensorboard = "tensorboard"
    mlflow = "mlflow"


@app.command("export-runs")
def export_runs(
    experiment: Annotated[str, typer.Argument(help="Experiment name (as stored) or file.")],
    destination: Annotated[str, typer.Argument(help="TensorBoard: a folder. MLflow: a tracking URI or a local mlruns folder.")],
    to: Annotated[RunsTarget, typer.Option("--to", help="Where the runs go.")],
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """Export an experiment's runs to TensorBoard event files or MLflow (one run per model and seed)."""
    from mnistlab import api

    written = api.export_runs(_experiment_name(experiment), to.value, destination, store)
    _say(f"exported {len(written)} run(s) to {to.value} at {destination}")


INTERRUPTED = 130


def _print_error(message: str) -> None:
    """One line on stderr: the message may quote user strings, so it is text, never markup."""
    _say(Text.assemble(("error:", "bold red"), " ", one_line(message)), to=err_console)


def main() -> None:
    """Console-script entry point: one-line errors, exit 2; Ctrl-C exits 130."""
    try:
        code = app(standalone_mode=False, prog_name="mnistlab")
    except typer.TyperException as exc:
        # Usage errors (bad option values, unknown options): typer >= 0.29 carries its own click,
        # whose ClickException derives from TyperException. One line, click's exit code (2).
        context = getattr(exc, "ctx", None)
        where = f"{context.command_path}: " if context is not None else ""
        # Click lays some messages out on several lines (a required choice lists its values): one line here.
        _print_error(" ".join((where + exc.format_message()).split()))
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        code = INTERRUPTED
    except MnistlabError as exc:
        _print_error(str(exc))
        sys.exit(exc.exit_code)
    if code == INTERRUPTED:  # Typer turns Ctrl-C into exit code 130 itself
        _say("interrupted; completed epochs are checkpointed: rerun with --resume (train) or the same command (run)",
             to=err_console)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
