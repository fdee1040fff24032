"""Tests for safe image input/output: mode handling, refusal messages, atomic writes."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vqcodec.io import image as image_io
from vqcodec.io.atomic import atomic_output, write_atomically
from vqcodec.io.image import InputError, as_image_array, load_image, save_image


def _rgb(height: int = 5, width: int = 7) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _save(tmp_path: Path, im: Image.Image, name: str = "in.png") -> Path:
    path = tmp_path / name
    im.save(path)
    return path


# --- load_image: modes and shapes -------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "expected_shape"),
    [
        ("RGB", (5, 7, 3)),
        ("L", (5, 7)),
        ("RGBA", (5, 7, 3)),
        ("P", (5, 7, 3)),
        ("LA", (5, 7)),
        ("1", (5, 7)),
    ],
)
def test_load_modes(tmp_path: Path, mode: str, expected_shape: tuple[int, ...]) -> None:
    path = _save(tmp_path, Image.new(mode, (7, 5)))
    array = load_image(path)
    assert array.shape == expected_shape
    assert array.dtype == np.uint8
    assert array.flags.c_contiguous and array.flags.writeable


def test_load_rgb_pixels_exact(tmp_path: Path) -> None:
    pixels = _rgb(3, 9)
    path = _save(tmp_path, Image.fromarray(pixels))
    np.testing.assert_array_equal(load_image(str(path)), pixels)


def test_rgba_drops_alpha(tmp_path: Path) -> None:
    path = _save(tmp_path, Image.new("RGBA", (3, 2), (10, 20, 30, 0)))
    np.testing.assert_array_equal(load_image(path)[0, 0], [10, 20, 30])


def test_la_drops_alpha(tmp_path: Path) -> None:
    path = _save(tmp_path, Image.new("LA", (3, 2), (77, 5)))
    assert (load_image(path) == 77).all()


def test_palette_with_transparency(tmp_path: Path) -> None:
    im = Image.new("P", (4, 4), 1)
    im.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    im.info["transparency"] = bytes([255, 0] + [255] * 254)
    path = _save(tmp_path, im)
    np.testing.assert_array_equal(load_image(path)[0, 0], [200, 100, 50])


def test_cmyk_becomes_rgb(tmp_path: Path) -> None:
    path = _save(tmp_path, Image.new("CMYK", (3, 2), (0, 0, 0, 0)), "in.jpg")
    array = load_image(path)
    assert array.shape == (2, 3, 3)


@pytest.mark.parametrize("size", [(1, 1), (1, 9), (9, 1), (13, 7)])
def test_odd_sizes(tmp_path: Path, size: tuple[int, int]) -> None:
    path = _save(tmp_path, Image.new("RGB", size, (1, 2, 3)))
    width, height = size
    assert load_image(path).shape == (height, width, 3)


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_high_depth_refused(tmp_path: Path, mode: str) -> None:
    path = _save(tmp_path, Image.new(mode, (4, 3)), "in.tif")
    with Image.open(path) as im:
        stored_mode = im.mode  # the mode as read back, which the message names
    with pytest.raises(InputError) as info:
        load_image(path)
    assert str(info.value) == (
        f"16-bit/float images are not supported (mode {stored_mode}): convert to 8-bit first"
    )


def test_exif_orientation_applied(tmp_path: Path) -> None:
    im = Image.new("RGB", (4, 2), (0, 0, 0))
    im.putpixel((0, 0), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rot.png"  # lossless, so the marker pixel survives exactly
    im.save(path, exif=exif)
    array = load_image(path)
    assert array.shape == (4, 2, 3)  # width and height swapped, as viewers show it
    np.testing.assert_array_equal(array[0, -1], [255, 0, 0])  # top-left red pixel ends at top-right


# --- load_image: refusals ---------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.png"
    with pytest.raises(InputError, match=f"^no such file: {path}$"):
        load_image(path)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="^not a file: "):
        load_image(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.touch()
    with pytest.raises(InputError, match=f"^empty file: {path}$"):
        load_image(path)


def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("hello, not pixels")
    with pytest.raises(InputError, match=f"^not an image PIL can read: {path}$"):
        load_image(path)


def test_truncated_image(tmp_path: Path) -> None:
    path = _save(tmp_path, Image.fromarray(_rgb(64, 64)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=f"^truncated or corrupted image: {path}$"):
        load_image(path)


def test_too_large_refused_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save(tmp_path, Image.new("RGB", (4, 3)))

    def no_decoding(self: Image.Image) -> None:
        raise AssertionError("pixels decoded before the size check")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    with pytest.raises(InputError, match=r"^image too large: 4x3 pixels \(limit 10\)$"):
        load_image(path, max_pixels=10)


def test_limit_is_inclusive(tmp_path: Path) -> None:
    path = _save(tmp_path, Image.new("L", (4, 3)))
    assert load_image(path, max_pixels=12).shape == (3, 4)


def test_pil_bomb_warning_defers_to_our_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save(tmp_path, Image.new("L", (10, 10)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 60)  # 100 px: PIL warns (> 60, < 120)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the PIL warning must not leak out
        assert load_image(path).shape == (10, 10)
    with pytest.raises(InputError, match=r"^image too large: 10x10 pixels \(limit 50\)$"):
        load_image(path, max_pixels=50)


def test_pil_bomb_error_becomes_input_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save(tmp_path, Image.new("L", (10, 10)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # 100 px > 2 * 10: PIL refuses on open
    with pytest.raises(InputError, match=r"^image too large: more than 20 pixels \(limit 20\)$"):
        load_image(path)


def test_max_pixels_default() -> None:
    assert image_io.MAX_PIXELS == 64 * 1024 * 1024


# --- as_image_array ---------------------------------------------------------------------------


def test_array_inputs() -> None:
    rgb = _rgb()
    assert as_image_array(rgb) is rgb  # already fine: no copy
    gray = rgb[:, :, 0].copy()
    np.testing.assert_array_equal(as_image_array(gray[:, :, None]), gray)
    strided = rgb[:, ::2]
    out = as_image_array(strided)
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, strided)


def test_pil_inputs() -> None:
    assert as_image_array(Image.new("RGBA", (3, 2))).shape == (2, 3, 3)
    assert as_image_array(Image.new("LA", (3, 2))).shape == (2, 3)
    assert as_image_array(Image.new("P", (3, 2))).shape == (2, 3, 3)
    with pytest.raises(InputError, match="mode I;16"):
        as_image_array(Image.new("I;16", (3, 2)))


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((4, 5, 2), np.float32), "expected a uint8 array of shape HxW or HxWx3, got float32 (4, 5, 2)"),
        (np.zeros((4, 5, 4), np.uint8), "expected a uint8 array of shape HxW or HxWx3, got uint8 (4, 5, 4)"),
        (np.zeros((4, 5), np.uint16), "expected a uint8 array of shape HxW or HxWx3, got uint16 (4, 5)"),
        (np.zeros(5, np.uint8), "expected a uint8 array of shape HxW or HxWx3, got uint8 (5,)"),
        (np.zeros((0, 5, 3), np.uint8), "image has zero size: 5x0 pixels"),
        (np.zeros((4, 3), np.uint8), "image too large: 3x4 pixels (limit 10)"),
    ],
)
def test_array_refusals(array: np.ndarray, message: str) -> None:
    with pytest.raises(InputError) as info:
        as_image_array(array, max_pixels=10)
    assert str(info.value) == message


def test_zero_sized_pil_image() -> None:
    with pytest.raises(InputError, match="^image has zero size: 0x3 pixels$"):
        as_image_array(Image.new("RGB", (0, 3)))


def test_other_types_refused() -> None:
    with pytest.raises(InputError, match="^expected a PIL image or a numpy uint8 array, got list$"):
        as_image_array([[1, 2], [3, 4]])  # type: ignore[arg-type]


# --- save_image and atomic output -------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tiff", ".PNG", ".ppm"])
def test_save_round_trip(tmp_path: Path, suffix: str) -> None:
    pixels = _rgb(6, 5)
    path = tmp_path / f"out{suffix}"
    save_image(pixels, path)
    np.testing.assert_array_equal(load_image(path), pixels)
    assert sorted(os.listdir(tmp_path)) == [path.name]  # no temporary file left


def test_save_grayscale_as_l(tmp_path: Path) -> None:
    path = tmp_path / "gray.png"
    save_image(np.full((3, 4, 1), 9, np.uint8), path)
    with Image.open(path) as im:
        assert im.mode == "L" and im.size == (4, 3)


def test_save_unknown_suffix_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^cannot write image format '\.xyz'; use \.png$"):
        save_image(_rgb(), tmp_path / "out.xyz")
    with pytest.raises(InputError, match="without a file suffix"):
        save_image(_rgb(), tmp_path / "out")
    assert os.listdir(tmp_path) == []


def test_save_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="^no such folder: "):
        save_image(_rgb(), tmp_path / "sub" / "out.png")


def test_save_failure_mid_write_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "out.png"
    path.write_bytes(b"previous contents")

    def failing_save(self: Image.Image, fp: Path, *args: object, **kwargs: object) -> None:
        Path(fp).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_image(_rgb(), path)
    assert path.read_bytes() == b"previous contents"
    assert os.listdir(tmp_path) == ["out.png"]


def test_save_failure_leaves_no_destination(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_save(self: Image.Image, fp: Path, *args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError):
        save_image(_rgb(), tmp_path / "out.png")
    assert os.listdir(tmp_path) == []


def test_write_atomically(tmp_path: Path) -> None:
    path = tmp_path / "file.vqc"
    write_atomically(path, b"one")
    write_atomically(path, b"two")
    assert path.read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["file.vqc"]


def test_atomic_output_permissions(tmp_path: Path) -> None:
    path = tmp_path / "new.bin"
    write_atomically(path, b"x")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not tempfile's 0600
    path.chmod(0o640)
    write_atomically(path, b"y")
    assert path.stat().st_mode & 0o777 == 0o640  # replacing keeps the existing mode


def test_atomic_output_cleans_up_on_interrupt(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(tmp_path / "x.bin") as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []
