"""The `mnistlab` command: a thin Typer layer over the Python API.

Every user error surfaces as a MnistlabError; `main` prints its one line and exits with 2, with
no traceback. Ctrl-C exits with 130 and leaves the last checkpoint intact.

Each command imports what it needs when it runs: at import this module loads only what its options
are built from (no torch, pandas or matplotlib), so `mnistlab ls` and `--help` start fast. The work is
`mnistlab.api`'s, the tables `cli.views`' and the lines `cli.output`'s.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from mnistlab import __version__
from mnistlab.cli.json_output import print_json
from mnistlab.cli.options import (PRECISION_HELP, ArchivesOption, BudgetOption, DryRunOption, EpochsOverride,
                                  FlushDenormalOption, JsonOption, MarginOption, MaxSeedsOption, ModelsOverride, OverrunOption,
                                  ProbeSecondsOption, SeedsOverride, SetOverride, StoreOption, UntilDecidedOption,
                                  VaryOverride)
from mnistlab.cli.runs_io import export_runs, import_runs
from mnistlab.cli.live import EveryOption, LogToOption, WatchOption, live_report, watched  # the live report and logs
from mnistlab.cli.output import console, err_console, print_error, say
from mnistlab.cli.store_commands import register_store_commands
from mnistlab.data.datasets import DATASETS
from mnistlab.errors import MnistlabError
from mnistlab.report.folders import REPORTS_DIR
from mnistlab.report.log_formats import LOG_FORMATS
from mnistlab.runs.store import DEFAULT_ROOT
from mnistlab.spec.fields import SEED_BOUND
from mnistlab.training.precision import COMPILE_MODES, PRECISIONS

app = typer.Typer(
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Design, train and compare neural networks on MNIST-family datasets (Keras 2.2 semantics, PyTorch speed).",
)

DataDirOption = Annotated[
    Optional[Path],
    typer.Option("--data-dir", envvar="MNISTLAB_DATA_DIR",
                 help="Folder holding the dataset files (or <name>/ subfolders)."),
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
LogFormat = Enum("LogFormat", {name: name for name in LOG_FORMATS}, type=str)  # log_formats.py's

LogFormatOption = Annotated[LogFormat, typer.Option(
    help="text: a progress bar on a terminal, else one line per epoch; json: one JSON object per epoch and per "
         "finished run on stderr (schema: README), even with --quiet.")]


@app.command()
def zoo(as_json: JsonOption = False) -> None:
    """List the built-in seed models with their parameter counts and the notebook's test accuracy."""
    from mnistlab.cli.views import zoo_table
    from mnistlab.zoo import zoo_catalogue

    if as_json:
        return print_json({"models": zoo_catalogue()}, indent=1)
    console.print(zoo_table())


@app.command()
def data(
    data_dir: DataDirOption = None,
    download: Annotated[bool, typer.Option(help="Download missing datasets into the cache.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Show where each dataset is found and check its files (sizes, magic numbers, sha256)."""
    from mnistlab import api
    from mnistlab.cli.views import datasets_table
    from mnistlab.data.datasets import dataset_status
    from mnistlab.errors import DataError

    found = api.check_datasets(data_dir=data_dir, download=download)
    if as_json:  # the same exit status as the table: 1 when no dataset is usable
        print_json({"datasets": [dataset_status(name, dataset) for name, dataset in found]}, indent=1)
    else:
        console.print(datasets_table(found))
    if all(isinstance(dataset, DataError) for _, dataset in found):
        raise typer.Exit(1)


@app.command()
def summary(
    model: Annotated[str, typer.Argument(help="Zoo id (s002-m10) or spec file (file.yaml or file.yaml:MODEL_ID).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Print a Keras-style summary: layers, output shapes, parameter counts."""
    from mnistlab.api import model_spec
    from mnistlab.spec.summary import summary_data, summary_text
    from mnistlab.util.safetext import clean

    spec = model_spec(model)
    if as_json:
        print_json(summary_data(spec), indent=2)
    else:
        print(clean(summary_text(spec)))  # ids and layer names are user text: no control characters


@app.command()
def train(
    model: Annotated[str, typer.Argument(help="Zoo id or spec file (file.yaml or file.yaml:MODEL_ID).")],
    dataset: Annotated[str, typer.Option(help=DATASET_HELP)] = "mnist",
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Default: the spec's.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Default: the spec's.")] = None,
    seed: Annotated[Optional[int], typer.Option(
        min=0, max=SEED_BOUND - 1, help="Seeds initial weights, shuffles and dropout (default 0).")] = None,
    seeds: Annotated[Optional[str], typer.Option(
        help="Train these seeds (e.g. 0,1,2,3) as one seed bundle; --out DIR then holds DIR/seed-N model "
             "folders.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    precision: Annotated[Precision, typer.Option(help=PRECISION_HELP)] = Precision.fp32,
    deterministic: Annotated[bool, typer.Option(
        "--deterministic", help="CUDA: deterministic kernels only (slower; an op without one fails).")] = False,
    flush_denormal: FlushDenormalOption = False,
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
        typer.Option(min=1,
                     help="Refuse batches needing more MiB of activations (default: limits.MAX_ACTIVATION_MIB)."),
    ] = None,
) -> None:
    """Train one model and evaluate it once on the test set."""
    from mnistlab import api
    from mnistlab.cli.output import train_summary
    from mnistlab.report.progress import make_reporter
    from mnistlab.training.bundle import check_seed_list

    # --seeds: one seed bundle, with one summary (or JSON line) and one --out DIR/seed-N per seed.
    bundled = seeds is not None
    seed_list = check_seed_list(seeds, seed is not None) if bundled else [seed if seed is not None else 0]
    spec = api.model_spec(model)
    # --json's summary owns stdout: no text progress then (json events go to stderr).
    reporter = make_reporter(console, log_format.value, quiet or as_json,
                             label=f"{len(seed_list)} seeds " if bundled else "", model=spec.id, seed=seed_list[0])
    trained = api.train(  # --out becomes a model folder (seed-N with --seeds), with its history.json
        spec, dataset, data_dir=data_dir, download=download, reporter=reporter, save_history=True,
        **({"seeds": seed_list} if bundled else {"seed": seed_list[0]}), epochs=epochs, batch_size=batch_size,
        device=device, precision=precision.value, validate_on=validate_on.value, train_limit=train_limit, out_dir=out,
        resume=resume, compile=compile_mode.value if compile_mode is not None else compile, max_params=max_params,
        max_activation_mib=max_activation_mib, patience=patience, threads=threads, deterministic=deterministic,
        flush_denormal=flush_denormal)
    for history in trained if bundled else [trained]:
        if as_json:
            print_json(history.to_json())
        elif not quiet:
            train_summary(history, prefix=f"seed {history.seed}: " if bundled else "")


@app.command()
def experiments(as_json: JsonOption = False) -> None:
    """List the built-in experiments."""
    from mnistlab.cli.views import builtin_experiments_table
    from mnistlab.experiments.definition import builtin_catalogue

    if as_json:
        return print_json({"experiments": builtin_catalogue()}, indent=1)
    console.print(builtin_experiments_table())


@app.command()
def run(
    experiment: Annotated[str, typer.Argument(
        help="A built-in experiment (mnistlab experiments) or an experiment file.")],
    store: StoreOption = DEFAULT_ROOT,
    data_dir: DataDirOption = None,
    download: Annotated[bool, typer.Option(help="Download the dataset if it is not found.")] = False,
    report: Annotated[bool, typer.Option(help="Write the report as runs finish and when done.")] = True,
    quiet: Annotated[bool, typer.Option(help="No progress output.")] = False,
    log_format: LogFormatOption = LogFormat.text,
    heartbeat_seconds: Annotated[Optional[float], typer.Option(
        min=0.01, envvar="MNISTLAB_HEARTBEAT_SECONDS",
        help="How often a training process refreshes its claim (default 10).")] = None,
    lease_seconds: Annotated[Optional[float], typer.Option(
        min=0.0, envvar="MNISTLAB_LEASE_SECONDS",
        help="Take a run over from another process only after its claim is this old (default: 6 heartbeats).")] = None,
    bundle: Annotated[str, typer.Option(
        help="Train up to K seeds of a model together as one seed bundle; auto: the K a short probe here finds "
             "fastest (1 unless a bundle is faster).")] = "1",
    backend: Annotated[Backend, typer.Option(
        help="Where tasks train: here, or on a Ray cluster (needs the ray extra).")] = Backend.local,
    address: Annotated[Optional[str], typer.Option(
        help="Ray cluster address (host:port, or auto); default: a private Ray instance on this machine.")] = None,
    gpus_per_task: Annotated[Optional[float], typer.Option(
        min=0.0, help="GPUs each Ray task reserves (0.25: four tasks share a GPU); default 0.")] = None,
    cpus_per_task: Annotated[Optional[int], typer.Option(
        min=1, help="CPUs each Ray task reserves and uses as torch threads; default: 1 reserved, the local thread "
                    "count used.")] = None,
    artifacts: Annotated[Optional[Path], typer.Option(
        help="Checkpoint folder every Ray worker can reach (shared storage); default: the store's artifacts "
             "folder.")] = None,
    until_decided: UntilDecidedOption = False, max_seeds: MaxSeedsOption = None, budget: BudgetOption = None,
    overrun: OverrunOption = False, margin: MarginOption = None, log_to: LogToOption = None,
    epochs: EpochsOverride = None, seeds: SeedsOverride = None, models: ModelsOverride = None,
    set_: SetOverride = None, vary: VaryOverride = None,
    dry_run: DryRunOption = False, probe_seconds: ProbeSecondsOption = None,
) -> None:
    """Train every (model, seed) of an experiment not already in the store; resume interrupted ones."""
    from mnistlab import api
    from mnistlab.experiments.definition import expand
    from mnistlab.experiments.overrides import load_with_overrides
    from mnistlab.report.progress import task_reporters

    bundle_size = api.bundle_size(bundle)
    overrides = api.parse_overrides(epochs, seeds, models, set_ or (), vary or ())
    study, source = load_with_overrides(experiment, overrides)  # validated before the store is opened
    if overrides and not quiet:
        say(f"experiment {study.name}: {source} with overrides; its runs are its own")
    if dry_run:
        from mnistlab.cli.views import dry_run_view

        return console.print(dry_run_view(api.dry_run(study, store, probe_seconds=probe_seconds)))
    options: dict = dict(bundle=bundle_size, backend=backend.value, address=address, gpus_per_task=gpus_per_task,
                         cpus_per_task=cpus_per_task, artifacts=artifacts, download=download, source=source,
                         reporter_for=task_reporters(expand(study, source), console, log_format.value, quiet),
                         heartbeat_seconds=heartbeat_seconds, lease_seconds=lease_seconds, log_to=log_to or [])
    from mnistlab.cli.rounds import run_study  # once, or in rounds --until-decided; it says the summary
    with live_report(study, store, data_dir, report) as live:  # leaving it (an error, Ctrl-C) stops its thread
        run_ids = run_study(study, store, data_dir, {**options, "listeners": [live] if live else []}, log_format.value,
                            quiet, until_decided=until_decided, max_seeds=max_seeds, budget=budget,
                            overrun=overrun or None, margin=margin)
    if not report:
        return
    # Whichever process finds, after its own last write, that no run is left writes the final report.
    paths = live.finish(run_ids)
    if not quiet:
        say(f"report: {paths.html}  and  {paths.markdown}" if paths is not None else
            f"report: left to the process still training; or later: mnistlab report {study.name}")


@app.command()
def report(
    experiment: Annotated[str, typer.Argument(help="Experiment name (as stored) or file.")],
    store: StoreOption = DEFAULT_ROOT,
    out: Annotated[Optional[Path], typer.Option(
        help=f"Folder for the HTML and Markdown (default: STORE/{REPORTS_DIR}).")] = None,
    data_dir: DataDirOption = None, watch: WatchOption = False, every: EveryOption = None,
) -> None:
    """Write the comparison report (one self-contained HTML page and a Markdown file)."""
    from mnistlab import api

    paths = watched(experiment, store, out, data_dir, every) if watch else api.report(experiment, store, out, data_dir)
    say(f"report: {paths.html}  and  {paths.markdown}")


@app.command()
def conclusions(
    experiment: Annotated[str, typer.Argument(help="Experiment name (as stored) or file.")],
    store: StoreOption = DEFAULT_ROOT,
    as_json: JsonOption = False,
) -> None:
    """Print the report's written conclusions: one sentence per finding, Holm-corrected."""
    from mnistlab import api

    found = api.conclusions(experiment, store)
    if as_json:
        return print_json({"experiment": api.experiment_name(experiment), **found.to_json()}, indent=1)
    for sentence in found.sentences:
        say(f"- {sentence}")
    say(Text(found.method, style="dim"))


@app.command()
def reproduction(
    store: Annotated[Optional[list[Path]], typer.Option("--store", envvar="MNISTLAB_STORE",
                                                        help="Run store folder(s) to read; repeat for several.")] = None,
    archive: ArchivesOption = None,
    out: Annotated[Optional[Path], typer.Option(
        help="Write the Markdown table here (e.g. docs/REPRODUCTION.md).")] = None,
    estimate_seconds: Annotated[Optional[float], typer.Option(
        help="With --out: probe each model not run yet for this many seconds here (fp32) and give its "
             "estimated hours per seed in the document.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Seed notebooks vs mnistlab under each notebook's protocol: mean ± 95% CI over seeds and a verdict."""
    from mnistlab import api
    from mnistlab.cli.views import reproduction_view
    from mnistlab.report.reproduction import reproduction_json

    lines = api.reproduction(store or [], out, estimate_seconds, archive or [])
    if as_json:  # stdout holds the document alone; --out still writes the Markdown
        return print_json(reproduction_json(lines), indent=1)
    table, rule = reproduction_view(lines)
    console.print(table)
    say(rule)
    if out is not None:
        say(f"wrote {out}")


@app.command()
def estimate(
    model: Annotated[str, typer.Argument(help="Zoo id or spec file (file.yaml or file.yaml:MODEL_ID).")],
    epochs: Annotated[Optional[int], typer.Option(
        min=1, help="Default: the spec's (the notebook's, for zoo models).")] = None,
    train_images: Annotated[Optional[int], typer.Option(
        min=1, help="Images trained on per epoch (default: the whole training set, or 54,000 with --validate-on "
                    "split).")] = None,
    precision: Annotated[Precision, typer.Option(help="fp32, tf32 (CUDA) or bf16 autocast.")] = Precision.fp32,
    validate_on: Annotated[
        Protocol, typer.Option(
            help="test: the notebooks' protocol (the default here); split: a stratified 10% of train.")
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
    from mnistlab.cli.views import estimate_view
    from mnistlab.training.cost import forward_flops

    spec = api.model_spec(model)
    cost = api.estimate(spec, epochs, train_images, precision.value, validate_on=validate_on.value,
                        probe_seconds=probe_seconds, batch_size=batch_size, threads=threads, device=device)
    flops = forward_flops(spec)
    if as_json:
        print_json({**cost.to_json(), "forward_flops_per_image": flops})
        return
    for part in estimate_view(spec, cost, flops):
        console.print(part)


@app.command()
def show(
    run_id: Annotated[str, typer.Argument(help="A run id (from mnistlab ls EXPERIMENT).")],
    store: StoreOption = DEFAULT_ROOT,
    as_json: JsonOption = False,
) -> None:
    """One run: its spec, status, per-epoch metrics, final metrics and diagnosis."""
    from mnistlab import api
    from mnistlab.cli.views import run_panel
    from mnistlab.report.overview import run_json

    with api.open_store(store, create=False) as run_store:
        found = api.find_run(run_store, run_id)
        if as_json:
            return print_json(run_json(run_store, found), indent=1)
        console.print(run_panel(run_store, found))


@app.command()
def compare(
    a: Annotated[str, typer.Argument(help="Run id, or model id (with --experiment when several hold it).")],
    b: Annotated[str, typer.Argument(help="Run id, or model id (with --experiment when several hold it).")],
    experiment: Annotated[Optional[str], typer.Option(help="The experiment whose runs model ids refer to.")] = None,
    store: StoreOption = DEFAULT_ROOT,
    as_json: JsonOption = False,
) -> None:
    """Two runs (or two models) side by side, with McNemar's exact test on their test predictions."""
    from mnistlab import api
    from mnistlab.cli.views import compare_table
    from mnistlab.report.pair import compare_pair
    from mnistlab.runs.listing import environment_json

    with api.open_store(store, create=False) as run_store:
        named = api.experiment_name(experiment) if experiment else None
        if as_json:
            pair = compare_pair(run_store, a, b, experiment=named)
            extra = {"environment": environment_json(run_store, pair.sides[0].run_ids[0], pair.sides[1].run_ids[0])} \
                if pair.kind == "runs" else {}
            return print_json({**pair.to_json(), **extra}, indent=1)
        console.print(compare_table(run_store, a, b, experiment=named))


MaxParamsOption = Annotated[Optional[int], typer.Option(
    min=1, help="Load models with up to this many parameters (default: limits.MAX_PARAMS), for ones trained with a "
                "raised limit.")]

ModelArgument = Annotated[
    str, typer.Argument(
        help="A run id or reference (mnistlab ls EXPERIMENT), or a model folder (a run's or train --out's).")
]


@app.command()
def predict(
    model: ModelArgument,
    inputs: Annotated[list[Path], typer.Argument(help="PNG/JPEG pictures (any size), .npy arrays or IDX image files.")],
    top: Annotated[int, typer.Option(min=1, help="How many of the likeliest classes to print per image.")] = 3,
    as_json: JsonOption = False,
    max_params: MaxParamsOption = None,
    store: StoreOption = DEFAULT_ROOT,
) -> None:
    """Classify images with a trained model: the class and the top-K probabilities per image."""
    from mnistlab import api
    from mnistlab.cli.output import prediction_lines

    trained = api.find_model(model, store, max_params)
    result = api.predict(trained, inputs)
    top = min(top, len(trained.class_names))
    if as_json:
        return print_json({"model": trained.about(), "predictions": result.to_json(top)}, indent=1)
    prediction_lines(trained, result, top)


@app.command()
def evaluate(
    model: ModelArgument,
    dataset: Annotated[Optional[str], typer.Option(help=f"{DATASET_HELP} Default: the model's own.")] = None,
    threads: Annotated[Optional[int], typer.Option(
        min=1, help="CPU threads for the whole run (default: usable cores; on --resume, the checkpoint's).")] = None,
    data_dir: DataDirOption = None,
    download: Annotated[bool, typer.Option(help="Download the dataset if it is not found.")] = False,
    as_json: JsonOption = False,
    max_params: MaxParamsOption = None,
    store: StoreOption = DEFAULT_ROOT,
) -> None:
    """Evaluate a trained model on a test set again (accuracy, loss, confusion matrix); writes nothing."""
    from mnistlab import api
    from mnistlab.cli.output import evaluation_lines

    trained = api.find_model(model, store, max_params)
    result = api.evaluate(trained, dataset, data_dir=data_dir, download=download)
    if as_json:
        return print_json(result.to_json(), indent=1)
    evaluation_lines(trained, result)


@app.command("export")
def export_(
    model: ModelArgument,
    format: Annotated[str, typer.Option("--format", help="onnx, pt2 (torch.export) or safetensors.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The file to write.")],
    max_params: MaxParamsOption = None,
    store: StoreOption = DEFAULT_ROOT,
) -> None:
    """Export a trained model: float32 images in [0, 1] ([N, 28, 28, 1], or [N, 784] for MLPs) in, probabilities out."""
    from mnistlab import api
    from mnistlab.trained.export import input_layout

    trained = api.find_model(model, store, max_params)
    path = api.export_model(trained, output, format)
    say(f"wrote {path} ({format}); input: {input_layout(trained)}; output: probabilities")


@app.command("import-keras")
def import_keras(
    file: Annotated[Path, typer.Argument(help="Keras model code: a .py file or a Jupyter notebook (.ipynb).")],
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Write the specs here (YAML) instead of printing them.")] = None,
) -> None:
    """Translate the Keras models in FILE into mnistlab specs (the code is parsed, never run)."""
    from mnistlab import api
    from mnistlab.util.atomic import check_target

    if output is not None:
        check_target(output)  # before the work, and again when written

    result = api.import_keras(file)
    for item in result.skipped:
        say(f"skipped: {str(item)}", to=err_console)
    if not result.specs:
        found = f"{len(result.skipped)} skipped, listed above" if result.skipped else "no Keras model found"
        raise MnistlabError(f"{file}: no model could be translated ({found})")
    text = api.write_specs(result, output)
    if output is None:
        sys.stdout.write(text)
        return
    ids = ", ".join(spec.id for spec in result.specs)
    say(f"wrote {len(result.specs)} model(s) to {str(output)}: {ids}")


@app.command("export-keras")
def export_keras(
    model: Annotated[str, typer.Argument(help="A zoo id (s002-m10) or a spec file (file.yaml or file.yaml:ID).")],
) -> None:
    """Print runnable Keras 3 / tf.keras code for MODEL, with Keras 2.2's defaults written out."""
    from mnistlab import api

    sys.stdout.write(api.export_keras(model))


@app.command("import-keras-weights")
def import_keras_weights(
    model: Annotated[str, typer.Argument(
        help="The architecture: a zoo id or a spec file (file.yaml or file.yaml:ID).")],
    weights: Annotated[Path, typer.Argument(
        help="A Keras 2 HDF5 file from model.save_weights('w.h5') or model.save('m.h5').")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The model folder to write.")],
) -> None:
    """Load Keras HDF5 weights into MODEL and write a model folder that predict, evaluate and export read."""
    from mnistlab import api

    folder = api.import_keras_weights(model, weights, output)
    say(f"wrote model folder {str(folder)}")


# The runs-out-and-in commands live in cli/runs_io.py (this file would pass 600 lines).
app.command("export-runs")(export_runs)
app.command("import-runs")(import_runs)


register_store_commands(app)  # ls, tag, untag, note, rm, gc

INTERRUPTED = 130


def main() -> None:
    """Console-script entry point: one-line errors, exit 2; Ctrl-C exits 130."""
    from mnistlab.util.provenance import set_invocation

    set_invocation(["mnistlab", *sys.argv[1:]])  # the command line each run it trains records
    try:
        _main()
    finally:
        set_invocation(None)  # a later API call in this interpreter is an API call


def _main() -> None:
    try:
        code = app(standalone_mode=False, prog_name="mnistlab")
    except typer.TyperException as exc:
        # Usage errors (bad option values, unknown options): typer >= 0.29 carries its own click,
        # whose ClickException derives from TyperException. One line, click's exit code (2).
        context = getattr(exc, "ctx", None)
        where = f"{context.command_path}: " if context is not None else ""
        # Click lays some messages out on several lines (a required choice lists its values): one line here.
        print_error(" ".join((where + exc.format_message()).split()))
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        code = INTERRUPTED
    except MnistlabError as exc:
        print_error(str(exc))
        sys.exit(exc.exit_code)
    if code == INTERRUPTED:  # Typer turns Ctrl-C into exit code 130 itself
        say("interrupted; completed epochs are checkpointed: rerun with --resume (train) or the same command (run)",
             to=err_console)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
