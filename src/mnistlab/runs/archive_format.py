"""The run archive's format, its one home: member names, bounds, and reading an archive as checked data.

An archive (``.tar.xz``, ``.tar.gz``; written by runs/archive.py) holds, under fixed member names:

    manifest.json              format, version, when and by which mnistlab, the experiments' configs, the run count
    runs/NNNNN/run.json        one run (N = 1, 2, ...): identity, spec, status, final metrics, error, notes,
                               provenance (device, versions: the machine and packages it trained with;
                               recorded: the store's per-run provenance, null when not recorded), times,
                               the user's tags and user notes (text and created_at)
    runs/NNNNN/epochs.npy      float64 [epochs, columns]: the per-epoch history, columns as run.json names them
    runs/NNNNN/predictions.npy uint8 [2, n]: the test labels and predicted classes (what the store keeps)
    models/NNNNN/model.json    with ``--with-models``: the run's model folder (trained/folder.py's format)
    models/NNNNN/model.safetensors

An archive is data, never instructions, read the way checkpoints are: every member name must be one of
those (anything else, a link, a folder entry or a duplicate refuses the archive), its declared size is
bounded before a byte of it is read, no name from the archive is ever used as a path, every field of
every JSON document is checked for kind and range, every array's header for dtype and shape, and the
spec's hash against the identity. Strings are text: valid Unicode, and in the user's notes and the
provenance no terminal control characters but newline and tab (the exporter replaces any, as util/safetext
shows them); a tag is what the store accepts as one; a provenance is bounded in depth and size, and the
keys that `show` and `compare` read have the kinds they read.

Version 2 added ``provenance.recorded`` and filled ``tags`` and ``user_notes``. It is a version and not
only added fields because a version 1 reader refuses unknown fields as damage; with the bump it says
"upgrade mnistlab" instead. Version 1 archives are still read: ``upgrade_record`` gives their runs the
version 2 shape (no recorded provenance; a user note, had one been written, dated by the archive).
A newer version is refused with one line.
"""

from __future__ import annotations

import io
import json
import lzma
import math
import re
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import numpy as np

from mnistlab.errors import MnistlabError
from mnistlab.runs.records import NOTE_MAX_LENGTH, TAG_MAX_LENGTH, check_note, check_tag, spec_hash
from mnistlab.spec.fields import SEED_BOUND
from mnistlab.training.checkpoint import MAX_EPOCH
from mnistlab.training.history import COMPLETED, DIVERGED, EPOCH_METRICS, FAILED, Protocol
from mnistlab.training.limits import MAX_PARAMS
from mnistlab.util.safetext import REPLACEMENT, clean

__all__ = ["ARCHIVED_STATUSES", "EPOCHS", "MODEL_JSON", "MODEL_TENSORS", "PREDICTIONS", "RUN_JSON", "FORMAT", "FORMAT_VERSION", "HISTORY_COLUMNS", "MANIFEST", "MODEL_FILES", "RUN_FILES",
           "READ_VERSIONS", "SUFFIXES", "Archive", "ArchiveError", "ArchivedRun", "compression", "npy_bytes", "portable",
           "read_archive", "upgrade_record"]


FORMAT = "mnistlab-run-archive"
FORMAT_VERSION = 2
READ_VERSIONS = (1, FORMAT_VERSION)  # what read_archive reads: version 1 through upgrade_record
ARCHIVED_STATUSES = (COMPLETED, DIVERGED, FAILED)  # runs with an outcome; pending and running ones stay home
SUFFIXES = {".tar.xz": "xz", ".txz": "xz", ".tar.gz": "gz", ".tgz": "gz"}
MANIFEST = "manifest.json"
RUN_JSON, EPOCHS, PREDICTIONS = "run.json", "epochs.npy", "predictions.npy"
MODEL_JSON, MODEL_TENSORS = "model.json", "model.safetensors"  # trained/folder.py's names (it imports torch)
HISTORY_COLUMNS = ("epoch", *EPOCH_METRICS)
MAX_RUNS = 100_000
MAX_TEST_IMAGES = 1_000_000
MAX_TEXT = 1_000  # identity fields: experiment and model names, dataset
MAX_NOTE = 100_000  # a note, a tag or an error message
MAX_TAGS, MAX_USER_NOTES = 1_000, 10_000  # per run (a tag's and a user note's length: the store's rules)
# A run's recorded provenance (util/provenance.py: three levels deep, some hundreds of packages and CPU flags).
MAX_PROVENANCE_DEPTH, MAX_PROVENANCE_ITEMS = 8, 100_000
# The provenance keys that `show` and `compare` read, and the kind each must have when present and not null.
PROVENANCE_KINDS: dict[str, type] = {"command": dict, "environment": dict, "distributions": dict, "sources": list,
                                     "host": str, "distributions_sha256": str}
MAX_TOTAL_BYTES = 8 << 30  # everything an archive holds, models included: it is read into memory
# Declared member sizes above these refuse the archive before the member is read.
MAX_BYTES = {
    MANIFEST: 8 << 20, RUN_JSON: 4 << 20,
    EPOCHS: 1024 + 8 * len(HISTORY_COLUMNS) * MAX_EPOCH // 10,  # 100,000 epochs
    PREDICTIONS: 1024 + 2 * MAX_TEST_IMAGES,
    MODEL_JSON: 4 << 20, MODEL_TENSORS: (1 << 20) + 8 * MAX_PARAMS,  # float32 parameters and as many buffers
}
_MEMBER = re.compile(r"(runs|models)/(\d{5,6})/([a-z.]+)")
RUN_FILES, MODEL_FILES = (RUN_JSON, EPOCHS, PREDICTIONS), (MODEL_JSON, MODEL_TENSORS)
RUN_FIELDS = ("identity", "spec", "epochs_planned", "status", "final", "error", "notes", "provenance", "times",
              "tags", "user_notes", "history_columns", "predictions", "model")
IDENTITY_FIELDS = ("experiment", "model_id", "spec_hash", "seed", "dataset", "protocol")


class ArchiveError(MnistlabError):
    """An archive is damaged, tampered with, of another format, or conflicts with the store: one line, exit 2."""


@dataclass(frozen=True)
class ArchivedRun:
    """One run as an archive holds it, checked."""

    record: dict[str, Any]  # run.json
    epochs: np.ndarray  # float64 [epochs, len(record["history_columns"])]
    predictions: np.ndarray | None  # uint8 [2, n]: labels, predicted
    model: dict[str, bytes] | None = None  # model.json / model.safetensors bytes

    @property
    def identity(self) -> tuple[Any, ...]:
        return tuple(self.record["identity"][key] for key in IDENTITY_FIELDS)

    def label(self) -> str:
        ident = self.record["identity"]
        return f"{ident['experiment']}/{ident['model_id']} seed {ident['seed']}"


@dataclass(frozen=True)
class Archive:
    """A whole archive, read and checked, nothing written anywhere yet."""

    path: Path
    manifest: dict[str, Any]
    runs: list[ArchivedRun]


# -- names and arrays --------------------------------------------------------------------------


def compression(path: Path | str) -> str:
    """The tar compression an archive's file name asks for; one line when it names none."""
    name = Path(path).name.lower()
    for suffix, kind in SUFFIXES.items():
        if name.endswith(suffix):
            return kind
    raise ArchiveError(f"{path}: an archive's name ends in {', '.join(SUFFIXES)}")


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(array), version=(1, 0), allow_pickle=False)
    return buffer.getvalue()


def _surrogate(char: str) -> bool:
    return "\ud800" <= char <= "\udfff"  # half of a UTF-16 pair: JSON's \ud800 escape reads as one, UTF-8 has none


def portable(value: Any) -> Any:
    """A value (strings, keys too) as an archive carries it: terminal control characters but newline and tab,
    and lone surrogates, replaced by U+FFFD (as util/safetext shows them), so that what an export writes,
    an import's checks accept. Text without them, all there is in practice, stays exactly as it was."""
    if isinstance(value, str):
        if value.isprintable():
            return value
        return "".join(REPLACEMENT if _surrogate(char) else char for char in clean(value))
    if isinstance(value, dict):
        return {portable(key): portable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [portable(item) for item in value]
    return value


def upgrade_record(record: dict[str, Any], version: int, created_at: float) -> dict[str, Any]:
    """A run.json of format ``version`` in the current shape, before it is checked. Version 1 had no
    recorded provenance and, as written, always empty tags and user notes; a user note as plain text
    (never written by mnistlab) is dated ``created_at``, the archive's own time, by which it existed."""
    if version >= FORMAT_VERSION:
        return record
    record = dict(record)
    if isinstance(record.get("provenance"), dict) and "recorded" not in record["provenance"]:
        record["provenance"] = {**record["provenance"], "recorded": None}
    if isinstance(record.get("user_notes"), list):
        record["user_notes"] = [{"text": note, "created_at": created_at} if isinstance(note, str) else note
                                for note in record["user_notes"]]
    return record


# -- reading and checking -----------------------------------------------------------------------------


def _refuse_constant(word: str) -> None:
    raise ValueError(f"{word} is not JSON")  # Python's json reads NaN and Infinity; the format has none


class _Checker:
    """One archive's checks; every failure is one ArchiveError line naming the archive and the member."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, what: str) -> ArchiveError:
        return ArchiveError(f"{self.path}: {where}: {what}; the archive is damaged or was tampered with, "
                            "nothing was imported")

    def json(self, name: str, data: bytes) -> dict[str, Any]:
        try:
            value = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as error:
            raise self.fail(name, f"not valid JSON ({type(error).__name__})") from None
        if not isinstance(value, dict):
            raise self.fail(name, "not a JSON object")
        return value

    def fields(self, where: str, value: dict[str, Any], names: tuple[str, ...]) -> None:
        missing, unknown = sorted(set(names) - set(value)), sorted(set(value) - set(names))
        if missing or unknown:
            raise self.fail(where, f"lacks fields {missing} / has unknown fields {unknown}")

    def kind(self, where: str, value: Any, kinds: tuple[type, ...], *, optional: bool = False) -> Any:
        if value is None and optional:
            return value
        wrong = isinstance(value, bool) and bool not in kinds
        if wrong or not isinstance(value, kinds):
            names = " or ".join(kind.__name__ for kind in kinds) + (" or null" if optional else "")
            raise self.fail(where, f"is {type(value).__name__}, not {names}")
        return value

    def text(self, where: str, value: Any, *, optional: bool = False, limit: int = MAX_TEXT, empty: bool = False) -> Any:
        self.kind(where, value, (str,), optional=optional)
        if value is not None and not ((empty or value) and len(value) <= limit):
            raise self.fail(where, f"is empty or longer than {limit:,} characters")
        if value is not None and not value.isprintable() and any(_surrogate(char) for char in value):
            raise self.fail(where, "is not valid Unicode text (a lone surrogate)")  # SQLite would refuse it
        return value

    def plain(self, where: str, value: str) -> str:
        """Text without terminal control characters but newline and tab (what ``portable`` writes)."""
        if not value.isprintable() and clean(value) != value:
            raise self.fail(where, "holds a terminal control character")
        return value

    def tags(self, where: str, value: Any) -> None:
        self.kind(where, value, (list,))
        if len(value) > MAX_TAGS:
            raise self.fail(where, f"holds more than {MAX_TAGS:,} tags")
        for number, tag in enumerate(value):
            self.kind(f"{where}[{number}]", tag, (str,))
            try:
                check_tag(tag)  # the store's rule for a tag, its one home
            except MnistlabError:
                raise self.fail(f"{where}[{number}]", f"is not a tag (1 to {TAG_MAX_LENGTH} printable characters "
                                                      "without spaces)") from None

    def user_notes(self, where: str, value: Any) -> None:
        self.kind(where, value, (list,))
        if len(value) > MAX_USER_NOTES:
            raise self.fail(where, f"holds more than {MAX_USER_NOTES:,} notes")
        for number, note in enumerate(value):
            at = f"{where}[{number}]"
            self.kind(at, note, (dict,))
            self.fields(at, note, ("text", "created_at"))
            self.text(f"{at}.text", note["text"], limit=NOTE_MAX_LENGTH)
            try:
                check_note(note["text"])  # the store's rule for a user note
            except MnistlabError:
                raise self.fail(f"{at}.text", f"is blank or longer than {NOTE_MAX_LENGTH:,} characters") from None
            self.plain(f"{at}.text", note["text"])
            self.number(f"{at}.created_at", note["created_at"], optional=False)

    def provenance(self, where: str, recorded: dict[str, Any]) -> None:
        """A recorded provenance: JSON data of bounded depth and size, its strings plain text, and the keys
        that `show` and `compare` read of the kinds they read."""
        left = [MAX_PROVENANCE_ITEMS]

        def walk(at: str, value: Any, depth: int) -> None:
            left[0] -= 1
            if left[0] < 0:
                raise self.fail(where, f"holds more than {MAX_PROVENANCE_ITEMS:,} values")
            if depth > MAX_PROVENANCE_DEPTH:
                raise self.fail(at, f"nests deeper than {MAX_PROVENANCE_DEPTH} levels")
            if isinstance(value, str):
                self.plain(at, self.text(at, value, limit=MAX_NOTE, empty=True))
            elif isinstance(value, dict):
                for key, item in value.items():
                    self.plain(f"{at}: a key", self.text(f"{at}: a key", key))
                    walk(f"{at}.{key}", item, depth + 1)
            elif isinstance(value, list):
                for number, item in enumerate(value):
                    walk(f"{at}[{number}]", item, depth + 1)
            elif value is not None and not isinstance(value, bool):
                self.number(at, value)  # JSON has nothing else

        walk(where, recorded, 1)
        for key, kind in PROVENANCE_KINDS.items():
            self.kind(f"{where}.{key}", recorded.get(key), (kind,), optional=True)
        flags = (recorded.get("environment") or {}).get("cpu_flags")
        for number, flag in enumerate(self.kind(f"{where}.environment.cpu_flags", flags, (list,), optional=True) or []):
            self.kind(f"{where}.environment.cpu_flags[{number}]", flag, (str,))
        for number, source in enumerate(recorded.get("sources") or []):
            self.kind(f"{where}.sources[{number}]", source, (dict,))

    def whole(self, where: str, value: Any, low: int, high: int) -> int:
        self.kind(where, value, (int,))
        if not low <= value <= high:
            raise self.fail(where, f"{value} is outside {low}..{high}")
        return value

    def number(self, where: str, value: Any, *, optional: bool = True) -> Any:
        self.kind(where, value, (int, float), optional=optional)
        if value is not None and not math.isfinite(value):
            raise self.fail(where, "is not a finite number")
        return value

    def texts(self, where: str, value: Any) -> list[str]:
        self.kind(where, value, (list,))
        for number, item in enumerate(value):
            self.text(f"{where}[{number}]", item, limit=MAX_NOTE, empty=True)
        return value

    def array(self, name: str, data: bytes, dtype: str, rows: int | None, columns: int | None) -> np.ndarray:
        """A .npy member as data: version 1.0 header, C order, two dimensions, the dtype and the rows or
        columns asked for (None: any), and exactly as many bytes as its shape says."""
        stream = io.BytesIO(data)
        try:
            if np.lib.format.read_magic(stream) != (1, 0):
                raise ValueError("not a version 1.0 .npy header")
            shape, fortran, found = np.lib.format.read_array_header_1_0(stream)
        except (ValueError, SyntaxError, TypeError, EOFError) as error:
            raise self.fail(name, f"not a .npy array ({str(error).splitlines()[0] if str(error) else 'bad header'})") from None
        if fortran or found != np.dtype(dtype) or len(shape) != 2 or rows not in (None, shape[0]) \
                or columns not in (None, shape[1]):
            raise self.fail(name, f"array is {found} {list(shape)}{' (Fortran order)' if fortran else ''}, "
                                  f"expected {np.dtype(dtype)} [{rows or 'n'}, {columns or 'n'}]")
        if len(data) - stream.tell() != shape[0] * shape[1] * found.itemsize:
            raise self.fail(name, f"holds {len(data) - stream.tell()} bytes of data for shape {list(shape)}")
        return np.frombuffer(data, dtype=found, offset=stream.tell()).reshape(shape)


def _read_members(path: Path, check: _Checker) -> dict[str, bytes]:
    """Every member's bytes by name, each name and declared size checked before it is read."""
    members: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(path, "r|*") as tar:
            for member in tar:
                name = member.name
                match = _MEMBER.fullmatch(name)
                leaf = name if name == MANIFEST else (match.group(3) if match else "")
                allowed = RUN_FILES if match and match.group(1) == "runs" else MODEL_FILES
                if name != MANIFEST and (match is None or leaf not in allowed):
                    raise check.fail(f"member {name!r}", "is not a name an archive holds")
                if not member.isreg():
                    raise check.fail(f"member {name!r}", "is not a regular file (a link, folder or device)")
                if name in members:
                    raise check.fail(f"member {name!r}", "appears twice")
                if member.size > MAX_BYTES[leaf]:
                    raise check.fail(f"member {name!r}", f"declares {member.size:,} bytes, more than the "
                                                         f"{MAX_BYTES[leaf]:,} allowed")
                if len(members) > 3 + 5 * MAX_RUNS:
                    raise check.fail("archive", f"holds more than {MAX_RUNS:,} runs")
                total += member.size
                if total > MAX_TOTAL_BYTES:
                    raise check.fail("archive", f"holds more than {MAX_TOTAL_BYTES:,} bytes")
                handle = tar.extractfile(member)
                data = handle.read(member.size) if handle is not None else b""
                if len(data) != member.size:
                    raise check.fail(f"member {name!r}", "is cut short (truncated file)")
                members[name] = data
    except (tarfile.TarError, EOFError, lzma.LZMAError, zlib.error) as error:
        raise check.fail("archive", f"not a readable compressed tar file ({type(error).__name__}: "
                                    f"{str(error).splitlines()[0] if str(error) else 'truncated'})") from None
    except OSError as error:
        raise ArchiveError(f"{path}: cannot be read: {error.strerror or error}") from None
    return members


def _check_manifest(check: _Checker, members: dict[str, bytes]) -> dict[str, Any]:
    if MANIFEST not in members:
        raise check.fail(MANIFEST, "is missing: not an mnistlab run archive")
    manifest = check.json(MANIFEST, members[MANIFEST])
    if manifest.get("format") != FORMAT:
        raise check.fail(MANIFEST, f"format is {manifest.get('format')!r}, not {FORMAT!r}")
    version = manifest.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise ArchiveError(f"{check.path}: archive format version {version} is newer than this mnistlab reads "
                           f"({FORMAT_VERSION}); upgrade mnistlab")
    check.fields(MANIFEST, manifest, ("format", "version", "mnistlab", "created_at", "runs", "with_models",
                                      "experiments"))
    check.whole(f"{MANIFEST}: field 'version'", version, READ_VERSIONS[0], FORMAT_VERSION)
    check.text(f"{MANIFEST}: field 'mnistlab'", manifest["mnistlab"])
    check.number(f"{MANIFEST}: field 'created_at'", manifest["created_at"], optional=False)
    check.whole(f"{MANIFEST}: field 'runs'", manifest["runs"], 1, MAX_RUNS)
    check.kind(f"{MANIFEST}: field 'with_models'", manifest["with_models"], (bool,))
    experiments = check.kind(f"{MANIFEST}: field 'experiments'", manifest["experiments"], (list,))
    for number, entry in enumerate(experiments):
        where = f"{MANIFEST}: experiments[{number}]"
        check.kind(where, entry, (dict,))
        check.fields(where, entry, ("name", "config"))
        check.text(f"{where}.name", entry["name"])
        check.kind(f"{where}.config", entry["config"], (dict,))
    return manifest


def _check_run(check: _Checker, where: str, record: dict[str, Any], experiments: set[str]) -> None:
    check.fields(where, record, RUN_FIELDS)
    identity = check.kind(f"{where}: field 'identity'", record["identity"], (dict,))
    check.fields(f"{where}: identity", identity, IDENTITY_FIELDS)
    for key in ("experiment", "model_id", "dataset"):
        check.text(f"{where}: identity.{key}", identity[key])
    if identity["experiment"] not in experiments:
        raise check.fail(f"{where}: identity.experiment", f"{identity['experiment']!r} is not in the manifest")
    check.whole(f"{where}: identity.seed", identity["seed"], 0, SEED_BOUND - 1)
    if identity["protocol"] not in get_args(Protocol):
        raise check.fail(f"{where}: identity.protocol", f"{identity['protocol']!r} is not one of {get_args(Protocol)}")
    spec = check.kind(f"{where}: field 'spec'", record["spec"], (dict,))
    if identity["spec_hash"] != spec_hash(spec):
        raise check.fail(f"{where}: identity.spec_hash", "does not match the spec it identifies")
    check.whole(f"{where}: field 'epochs_planned'", record["epochs_planned"], 0, MAX_EPOCH)
    if record["status"] not in ARCHIVED_STATUSES:
        raise check.fail(f"{where}: field 'status'", f"{record['status']!r} is not one of {ARCHIVED_STATUSES}")
    final = check.kind(f"{where}: field 'final'", record["final"], (dict,), optional=True) or {}
    for key in ("test_acc", "test_loss", "reference_test_acc", "images_per_second", "params"):
        check.number(f"{where}: final.{key}", final.get(key))
    if final.get("reference_differences") is not None:
        check.texts(f"{where}: final.reference_differences", final["reference_differences"])
    check.text(f"{where}: field 'error'", record["error"], optional=True, limit=MAX_NOTE, empty=True)
    check.texts(f"{where}: field 'notes'", record["notes"])
    check.tags(f"{where}: field 'tags'", record["tags"])
    check.user_notes(f"{where}: field 'user_notes'", record["user_notes"])
    provenance = check.kind(f"{where}: field 'provenance'", record["provenance"], (dict,))
    check.fields(f"{where}: provenance", provenance, ("device", "versions", "recorded"))
    recorded = check.kind(f"{where}: provenance.recorded", provenance["recorded"], (dict,), optional=True)
    if recorded is not None:
        check.provenance(f"{where}: provenance.recorded", recorded)
    check.text(f"{where}: provenance.device", provenance["device"], optional=True, empty=True)
    versions = check.kind(f"{where}: provenance.versions", provenance["versions"], (dict,), optional=True) or {}
    for key, value in versions.items():
        check.kind(f"{where}: provenance.versions.{key}", value, (str, int, float, bool), optional=True)
    times = check.kind(f"{where}: field 'times'", record["times"], (dict,))
    check.fields(f"{where}: times", times, ("started_at", "ended_at"))
    for key in times:
        check.number(f"{where}: times.{key}", times[key])
    columns = check.texts(f"{where}: field 'history_columns'", record["history_columns"])
    if not columns or columns[0] != "epoch" or not set(columns[1:]) <= set(EPOCH_METRICS) or len(set(columns)) != len(columns):
        raise check.fail(f"{where}: field 'history_columns'", f"{columns} is not 'epoch' and known metrics {EPOCH_METRICS}")
    check.kind(f"{where}: field 'predictions'", record["predictions"], (bool,))
    check.kind(f"{where}: field 'model'", record["model"], (bool,))


def _check_epochs(check: _Checker, name: str, epochs: np.ndarray) -> None:
    numbers = epochs[:, 0] if len(epochs) else np.zeros(0)
    if not np.all(np.isfinite(numbers)) or np.any(numbers != np.round(numbers)) or np.any(numbers < 1) \
            or np.any(numbers > MAX_EPOCH) or np.any(np.diff(numbers) <= 0):
        raise check.fail(name, f"epoch numbers are not increasing whole numbers in 1..{MAX_EPOCH}")
    # Metrics may be NaN or infinite: a diverged run's last epoch is.


def read_archive(path: Path | str) -> Archive:
    """The archive at ``path``, every member checked (module docstring); ArchiveError when anything is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ArchiveError(f"{path}: no such archive file")
    check = _Checker(path)
    members = _read_members(path, check)
    manifest = _check_manifest(check, members)
    experiments = {entry["name"] for entry in manifest["experiments"]}
    count = manifest["runs"]
    expected_runs = {f"runs/{index:05d}/{leaf}" for index in range(1, count + 1) for leaf in RUN_FILES}
    expected_models = {f"models/{index:05d}/{leaf}" for index in range(1, count + 1) for leaf in MODEL_FILES}
    stray = sorted(set(members) - expected_runs - expected_models - {MANIFEST})
    if stray:
        raise check.fail(f"member {stray[0]!r}", f"is not one of the manifest's {count} runs")
    runs, identities = [], set()
    for index in range(1, count + 1):
        prefix = f"runs/{index:05d}/"
        for leaf in (RUN_JSON, EPOCHS):
            if prefix + leaf not in members:
                raise check.fail(prefix + leaf, "is missing")
        record = upgrade_record(check.json(prefix + RUN_JSON, members[prefix + RUN_JSON]), manifest["version"],
                                manifest["created_at"])
        _check_run(check, prefix + RUN_JSON, record, experiments)
        epochs = check.array(prefix + EPOCHS, members[prefix + EPOCHS], "<f8", None, len(record["history_columns"]))
        _check_epochs(check, prefix + EPOCHS, epochs)
        predictions = None
        if record["predictions"] != (prefix + PREDICTIONS in members):
            raise check.fail(prefix + PREDICTIONS, f"is {'missing' if record['predictions'] else 'there'} but "
                                                   f"run.json says predictions: {record['predictions']}")
        if record["predictions"]:
            predictions = check.array(prefix + PREDICTIONS, members[prefix + PREDICTIONS], "|u1", 2, None)
            if not 0 < predictions.shape[1] <= MAX_TEST_IMAGES:
                raise check.fail(prefix + PREDICTIONS, f"array is {list(predictions.shape)}, expected "
                                                       f"[2, n] with 0 < n <= {MAX_TEST_IMAGES:,}")
        model_names = [f"models/{index:05d}/{leaf}" for leaf in MODEL_FILES]
        present = [name in members for name in model_names]
        if any(present) and not (all(present) and record["model"]) or record["model"] and not all(present):
            raise check.fail(f"models/{index:05d}/", "model files do not match run.json's 'model' field")
        model = {leaf: members[name] for leaf, name in zip(MODEL_FILES, model_names)} if record["model"] else None
        run = ArchivedRun(record, epochs, predictions, model)
        if run.identity in identities:
            raise check.fail(prefix + RUN_JSON, f"{run.label()} appears twice in the archive")
        identities.add(run.identity)
        runs.append(run)
    return Archive(path, manifest, runs)
