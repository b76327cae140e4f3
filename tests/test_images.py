"""Pictures to MNIST format: crop to the ink, fit a 20×20 box, centre by mass, invert dark-on-light."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from mnistlab.data.idx import read_idx
from mnistlab.errors import MnistlabError
from mnistlab.data.images import INVERTED, NOT_INVERTED, as_images, mnist_style, read_inputs

from conftest import REAL_DATA_DIR, needs_mnist


def ink_box(image: np.ndarray, threshold: float = 0.2) -> tuple[int, int]:
    rows, cols = np.nonzero(image > threshold)
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


def seven(size: tuple[int, int], ink: int, paper: int, offset: tuple[int, int] = (0, 0)) -> Image.Image:
    """A thick '7' drawn off-centre on a canvas, as a user's scan or drawing would be."""
    picture = Image.new("L", size, paper)
    draw = ImageDraw.Draw(picture)
    x, y = offset
    draw.line([(x + 20, y + 20), (x + 110, y + 20), (x + 50, y + 180)], fill=ink, width=18)
    return picture


@pytest.mark.parametrize("ink, paper, note", [(20, 235, INVERTED), (250, 10, NOT_INVERTED)])
def test_a_large_off_centre_picture_becomes_an_mnist_digit(tmp_path, ink, paper, note):
    path = tmp_path / "seven.png"
    seven((300, 260), ink, paper, offset=(150, 40)).save(path)
    inputs = read_inputs(path)
    digit = inputs.images[0]
    assert inputs.images.shape == (1, 28, 28) and inputs.images.dtype == np.float32
    assert inputs.notes == [note] and inputs.names == [str(path)]
    assert digit.min() >= 0.0 and digit.max() == pytest.approx(1.0, abs=0.05)
    # The background is black (MNIST's polarity) whatever the picture's was.
    assert digit[0].max() == 0.0 and digit[:, 0].max() == 0.0
    height, width = ink_box(digit)
    assert height == 20 and width < 20  # fitted to the box by its longer side, aspect ratio kept
    row, col = ndimage.center_of_mass(digit)
    assert abs(row - 14) <= 0.5 and abs(col - 14) <= 0.5  # centre of mass where MNIST puts it
    levels = np.unique(digit)
    assert ((levels > 0.1) & (levels < 0.9)).sum() > 10  # anti-aliased edges, not a hard threshold


def test_aspect_ratio_is_kept():
    picture = np.zeros((120, 240))
    picture[30:90, 20:220] = 1.0  # a 60 × 200 bar
    digit, inverted = mnist_style(picture)
    assert not inverted
    height, width = ink_box(digit, 0.5)
    assert width == 20 and height == 6


def test_transparent_pictures_count_as_paper(tmp_path):
    picture = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(picture).ellipse([16, 8, 48, 56], outline=(0, 0, 0, 255), width=6)
    picture.save(tmp_path / "zero.png")
    inputs = read_inputs(tmp_path / "zero.png")
    assert inputs.notes == [INVERTED] and inputs.images.max() > 0.9


def test_colour_jpeg_is_read(tmp_path):
    picture = seven((200, 220), 0, 255).convert("RGB")
    picture.save(tmp_path / "seven.jpg", quality=85)
    inputs = read_inputs(tmp_path / "seven.jpg")
    assert inputs.notes == [INVERTED] and ink_box(inputs.images[0])[0] == 20


@needs_mnist
def test_a_real_mnist_digit_comes_back_almost_unchanged(tmp_path):
    from pathlib import Path

    root = Path(REAL_DATA_DIR)
    folder = root / "mnist" if (root / "mnist").is_dir() else root
    images = read_idx(next(folder.glob("t10k-images-idx3-ubyte*")))[:200] / 255.0
    differences = []
    for image in images:
        digit, inverted = mnist_style(image)
        assert not inverted
        differences.append(np.abs(digit - image).mean())
    # Re-making an MNIST digit the way MNIST was made gives it back: most exactly, a few shifted
    # by a pixel where rounding the centre of mass goes the other way.
    assert np.median(differences) < 1e-4 and np.mean(differences) < 0.005


@pytest.mark.parametrize("shape", [(28, 28), (3, 28, 28), (3, 28, 28, 1), (3, 784)])
def test_every_accepted_array_layout(shape):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=shape, dtype=np.uint8)
    images = as_images(array, "a.npy")
    assert images.shape == (1 if shape == (28, 28) else 3, 28, 28) and images.dtype == np.float32
    assert np.allclose(images.reshape(-1), array.reshape(-1) / 255.0)
    assert np.array_equal(as_images(array.astype(np.float32) / 255, "a.npy"), images)


@pytest.mark.parametrize("array, fragment", [
    (np.zeros((3, 28)), "shape [3, 28]"),
    (np.zeros((0, 28, 28)), "no images"),
    (np.full((28, 28), 255.0), "outside [0, 1]"),
    (np.full((28, 28), -1, dtype=np.int16), "outside 0..255"),
    (np.full((28, 28), np.inf), "NaN or infinite"),
    (np.zeros((28, 28), dtype=complex), "complex"),
])
def test_bad_arrays_name_the_source(array, fragment):
    with pytest.raises(MnistlabError) as info:
        as_images(array, "mine.npy")
    assert str(info.value).startswith("mine.npy: ") and fragment in str(info.value)


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(MnistlabError, match="no such file"):
        read_inputs(tmp_path / "absent.png")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(MnistlabError, match="notes.txt"):
        read_inputs(tmp_path / "notes.txt")  # neither a picture nor .npy: read as IDX, which it is not
