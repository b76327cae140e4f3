"""Publishing files whole: the one home of atomic writes.

Every file mnistlab publishes (checkpoints, weights, datasets it downloads, reports) is written
to a temporary file in the same folder, fsynced, renamed over its final name, and the folder is
fsynced, so a reader or a crash sees the old file or the new one, never half of one, and the new
one survives a power cut once the call returns.

Only new paths and regular files are replaced: a target that is a symbolic link, a folder, a
device, a FIFO or a socket is refused with one line (``check_target``), so an output path never
turns a device into a file or writes through a link to somewhere else.

Writers that are not Python file objects (safetensors' Rust serializer) report a full disk as
``SafetensorError``, not ``OSError``; it is turned into an ``OSError`` here, so each caller has one
kind of environment failure to handle.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Callable

from safetensors import SafetensorError

from mnistlab.errors import MnistlabError

__all__ = ["check_target", "fsync_dir", "replace_folder", "staging_folder", "write_atomically", "write_bytes", "write_text"]

TEMP_SUFFIX = ".part"
# safetensors prints the Rust io::Error, e.g. "... Os { code: 28, kind: StorageFull, message: ... }".
_OS_CODE = re.compile(r"code: (\d+)")


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it; set it straight back
    os.umask(mask)
    return mask


def _as_os_error(error: SafetensorError, path: Path) -> OSError:
    match = _OS_CODE.search(str(error))
    code = int(match.group(1)) if match else errno.EIO
    return OSError(code, os.strerror(code) if match else str(error), str(path))


_KINDS = {stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFIFO: "a FIFO",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder", stat.S_IFREG: "a file"}


def check_target(path: Path | str, folder: bool = False) -> None:
    """Refuse, in one line, an output path that a publish must not replace: a symbolic link, or an
    existing thing of another kind than a regular file (``folder``: than a folder)."""
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as error:
        raise MnistlabError(f"{path}: cannot be used as an output ({error.strerror or error})") from None
    if stat.S_ISLNK(mode):
        raise MnistlabError(f"{path}: is a symbolic link; refused as an output (give the real path, or a new one)")
    wanted = stat.S_IFDIR if folder else stat.S_IFREG
    if stat.S_IFMT(mode) != wanted:
        kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        need = "a folder" if folder else "a file"
        raise MnistlabError(f"{path}: is {kind}, not {need}; refused as an output")


def write_atomically(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(temp_path)``, fsync the result, rename it over ``path``, fsync the folder.

    ``path`` must be new or a regular file (check_target). On any failure the temporary file is
    removed and ``path`` is untouched; a safetensors write failure is raised as ``OSError``.
    """
    path = Path(path)
    check_target(path)
    if not path.parent.is_dir():
        raise MnistlabError(f"{path}: its folder {path.parent} does not exist")
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    os.close(fd)
    temp = Path(temp_name)
    try:
        try:
            write(temp)
        except SafetensorError as error:
            raise _as_os_error(error, path) from error
        # mkstemp makes 0600 files; a published file gets what an ordinary new file would.
        temp.chmod(0o666 & ~_umask())
        with open(temp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, path)
        fsync_dir(path.parent)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    """Publish ``data`` as ``path`` atomically."""
    return write_atomically(path, lambda temp: temp.write_bytes(data))


def write_text(path: Path, text: str) -> Path:
    """Publish ``text`` (UTF-8) as ``path`` atomically."""
    return write_atomically(path, lambda temp: temp.write_text(text, encoding="utf-8"))


def staging_folder(parent: Path, prefix: str) -> Path:
    """A fresh, private, empty folder inside ``parent`` in which to assemble files before they are moved
    into place (an import's model folders); the caller moves or removes it."""
    return Path(tempfile.mkdtemp(dir=parent, prefix=prefix))


def replace_folder(folder: Path, files: dict[str, bytes]) -> None:
    """Fill a fresh temporary folder with ``files``, then swap it in for ``folder``: the old
    contents stay whole until the new ones are all written and synced, and files no longer
    listed go."""
    folder = Path(folder)
    check_target(folder, folder=True)
    fresh = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=TEMP_SUFFIX))
    try:
        for name, data in files.items():
            with open(fresh / name, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        fsync_dir(fresh)
        if folder.exists():
            # A folder cannot be renamed over a non-empty one: move the old aside first.
            old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.old."))
            os.replace(folder, old / folder.name)
            os.replace(fresh, folder)
            fsync_dir(folder.parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(fresh, folder)
            fsync_dir(folder.parent)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
