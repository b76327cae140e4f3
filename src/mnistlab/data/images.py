"""Images to classify, from files or arrays, as MNIST-format 28×28 grey in [0, 1].

PNG/JPEG (any size) are converted the way MNIST was made: the ink's bounding box is scaled,
aspect ratio kept and anti-aliased, to fit a 20×20 box, then pasted into a 28×28 field so that
its centre of mass sits at the centre. MNIST digits are light on dark; a picture whose
background (the median of its border) is light is inverted, and the choice is reported.
Arrays (.npy) and IDX files are taken as already in MNIST's format: uint8 0–255 or float 0–1,
shaped [28, 28], [N, 28, 28], [N, 28, 28, 1] or [N, 784].
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

from mnistlab.data.datasets import IMAGE_SIZE
from mnistlab.data.idx import MAX_CUSTOM_ITEMS, read_idx
from mnistlab.errors import MnistlabError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
ARRAY_SUFFIX = ".npy"
MASS_CENTRE = IMAGE_SIZE // 2  # the pixel index where MNIST puts each digit's centre of mass
BOX = 20  # MNIST scaled each digit to fit a 20×20 box inside the 28×28 field
INK_THRESHOLD = 0.2  # of the ink's contrast range: fainter pixels do not extend the bounding box
MIN_CONTRAST = 0.05  # below this the picture is blank, not a faint digit

# Pictures are converted to float64 grey: 40 M pixels (a 48-megapixel photo is refused, a 36 M one
# is not) is 320 MB. Pillow's own bomb limit (179 M pixels) would let through 1.4 GB.
MAX_PICTURE_PIXELS = 40_000_000

INVERTED = "inverted: dark digit on light background"
NOT_INVERTED = "not inverted: light digit on dark background"


@dataclass
class Inputs:
    """Images ready for a model: float32 [N, 28, 28] in [0, 1], one name and note per image."""

    images: np.ndarray
    names: list[str]
    notes: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.notes:
            self.notes = [None] * len(self.names)

    @staticmethod
    def join(parts: list["Inputs"]) -> "Inputs":
        return Inputs(np.concatenate([p.images for p in parts]), [n for p in parts for n in p.names],
                      [n for p in parts for n in p.notes])


# --- arrays ---------------------------------------------------------------------------------


def as_images(array: np.ndarray, source: str) -> np.ndarray:
    """An array in any accepted layout and scale → float32 [N, 28, 28] in [0, 1]."""
    array = np.asarray(array)
    side = IMAGE_SIZE
    shape = array.shape
    if shape == (side, side):
        array = array[None]
    elif len(shape) == 3 and shape[1:] == (side, side) or len(shape) == 4 and shape[1:] == (side, side, 1):
        array = array.reshape(shape[0], side, side)
    elif len(shape) == 2 and shape[1] == side * side:
        array = array.reshape(shape[0], side, side)
    else:
        raise MnistlabError(f"{source}: array of shape {list(shape)}; expected images shaped [28, 28], "
                            "[N, 28, 28], [N, 28, 28, 1] or [N, 784]")
    if len(array) == 0:
        raise MnistlabError(f"{source}: holds no images")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if np.issubdtype(array.dtype, np.integer):
        if array.min() < 0 or array.max() > 255:
            raise MnistlabError(f"{source}: integer values outside 0..255 (min {array.min()}, max {array.max()})")
        return array.astype(np.float32) / 255.0
    if not np.issubdtype(array.dtype, np.floating):
        raise MnistlabError(f"{source}: array of {array.dtype}; expected uint8 (0–255) or float (0–1) pixels")
    if not np.isfinite(array).all():
        raise MnistlabError(f"{source}: holds NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        raise MnistlabError(f"{source}: float values outside [0, 1] (min {low:g}, max {high:g}); "
                            "scale 0–255 pixels by 1/255 or save them as uint8")
    return array.astype(np.float32)


def _array_inputs(array: np.ndarray, path: Path) -> Inputs:
    images = as_images(array, str(path))
    names = [str(path)] if len(images) == 1 and array.ndim == 2 else [f"{path}[{i}]" for i in range(len(images))]
    return Inputs(images, names)


def _check_npy_header(path: Path) -> None:
    """The header's shape and dtype against the file's real size and the image limits, before
    numpy allocates what the header claims (a 128-byte file can claim 4 GB)."""
    fmt = np.lib.format
    with open(path, "rb") as handle:
        version = fmt.read_magic(handle)
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = read_header(handle, max_header_size=10_000)
        data_bytes = path.stat().st_size - handle.tell()
    if dtype.hasobject:
        raise MnistlabError(f"{path}: not a readable .npy array (it holds Python objects, which are never unpickled)")
    items = shape[0] if len(shape) > 2 else 1
    if items > MAX_CUSTOM_ITEMS:
        raise MnistlabError(f"{path}: declares {items:,} images, more than {MAX_CUSTOM_ITEMS:,}; refused")
    declared = math.prod(shape) * dtype.itemsize
    if declared != data_bytes:
        raise MnistlabError(f"{path}: header declares shape {list(shape)} of {dtype} ({declared:,} bytes), "
                            f"the file holds {data_bytes:,}; the file is damaged")


def _read_npy(path: Path) -> np.ndarray:
    try:
        _check_npy_header(path)
        return np.load(path, allow_pickle=False)  # never unpickle a file handed to us
    except (OSError, ValueError, EOFError, TypeError) as exc:
        raise MnistlabError(f"{path}: not a readable .npy array ({str(exc).splitlines()[0]})") from None


def _read_idx_images(path: Path) -> np.ndarray:
    array = read_idx(path)  # one-line DataError for anything that is not a sound IDX file
    if array.ndim != 3:
        raise MnistlabError(f"{path}: an IDX file of {array.ndim} dimension(s) (labels?); expected images [N, 28, 28]")
    return array


# --- pictures -------------------------------------------------------------------------------


def _grey(image: Image.Image) -> np.ndarray:
    """Any Pillow image → float grey in [0, 1]; transparent areas count as white paper."""
    image = ImageOps.exif_transpose(image)  # phone photos are stored sideways with an EXIF flag
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        return np.clip(array / top, 0.0, 1.0)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return np.asarray(image.convert("L"), dtype=np.float64) / 255.0


def mnist_style(grey: np.ndarray, source: str = "<image>") -> tuple[np.ndarray, bool]:
    """A grey picture of one digit → (MNIST-style float32 28×28, whether it was inverted)."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    inverted = bool(np.median(border) > 0.5)
    if inverted:
        grey = 1.0 - grey
    background = float(np.median(np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])))
    contrast = float(grey.max()) - background
    if contrast < MIN_CONTRAST:
        raise MnistlabError(f"{source}: no digit found (the picture is blank)")
    ink = np.clip((grey - background) / contrast, 0.0, 1.0)
    rows, cols = np.nonzero(ink > INK_THRESHOLD)
    crop = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    height, width = crop.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = np.asarray(Image.fromarray(crop.astype(np.float32)).resize(size, Image.Resampling.LANCZOS))
    small = np.clip(small, 0.0, 1.0)  # Lanczos rings slightly past the input's range
    # MNIST's centres of mass sit at pixel index (14, 14): the mean over its test set is
    # (13.99, 14.00), half a pixel below and right of the field's geometric centre (13.5).
    centre_row, centre_col = ndimage.center_of_mass(small)
    top = int(np.clip(round(MASS_CENTRE - centre_row), 0, IMAGE_SIZE - small.shape[0]))
    left = int(np.clip(round(MASS_CENTRE - centre_col), 0, IMAGE_SIZE - small.shape[1]))
    out = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    out[top : top + small.shape[0], left : left + small.shape[1]] = small
    return out, inverted


def _read_picture(path: Path) -> Inputs:
    try:
        with warnings.catch_warnings():
            # Pillow warns past 89 M pixels; our own, lower limit refuses those in one line below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
        with image:
            width, height = image.size  # from the header: checked before any pixel is decoded
            if width * height > MAX_PICTURE_PIXELS:
                raise MnistlabError(f"{path}: a picture of {width:,}x{height:,} pixels, more than "
                                    f"{MAX_PICTURE_PIXELS:,}; scale it down first")
            image.load()
            grey = _grey(image)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise MnistlabError(f"{path}: not a readable image ({str(exc).splitlines()[0]})") from None
    if not np.isfinite(grey).all():  # float TIFFs can hold NaN
        raise MnistlabError(f"{path}: holds NaN or infinite pixel values")
    digit, inverted = mnist_style(grey, str(path))
    return Inputs(digit[None], [str(path)], [INVERTED if inverted else NOT_INVERTED])


# --- files ----------------------------------------------------------------------------------


def read_inputs(path: Path | str) -> Inputs:
    """One input file: a picture (PNG, JPEG, ...), a .npy array, or an IDX images file."""
    path = Path(path)
    if not path.is_file():
        raise MnistlabError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return _read_picture(path)
    if suffix == ARRAY_SUFFIX:
        return _array_inputs(_read_npy(path), path)
    return _array_inputs(_read_idx_images(path), path)
