"""Reading and writing user images safely.

Everything the codec sees is a C-contiguous uint8 array, HxWx3 (RGB) or HxW (grayscale).
Untrusted files are sized from their header and refused before any pixel is decoded when too
large; every failure becomes an `InputError` with a one-line message for the user.
"""
from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .atomic import atomic_output
from ..errors import InputError

__all__ = ["MAX_PIXELS", "SAVE_EXTENSIONS", "InputError", "as_image_array", "as_rgb",
           "check_image_target", "load_image", "save_image"]

MAX_PIXELS = 64 * 1024 * 1024
"""Largest image accepted (width * height), checked on the file header before decoding pixels.

64 Mpx is about 192 MiB as RGB uint8, before the model's own activations. Note that PIL's own
decompression-bomb ceiling (2 * `PIL.Image.MAX_IMAGE_PIXELS`) still applies if a caller passes
a larger `max_pixels`.
"""

# Output suffix -> PIL format. Deliberately short: formats that round-trip 8-bit RGB/L as-is
# (plus JPEG, which users expect to be able to ask for).
_SAVE_FORMATS = {
    ".png": "PNG",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".ppm": "PPM",
    ".pgm": "PPM",
    ".pnm": "PPM",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
}

SAVE_EXTENSIONS = frozenset(_SAVE_FORMATS)
"""Output suffixes (lower case) `save_image` writes."""

# Modes holding more than 8 bits per sample; silently squashing them would lose data.
_HIGH_DEPTH_MODES = {"I", "F", "I;16", "I;16L", "I;16B", "I;16N"}
# Modes whose grayscale content maps directly to "L" (alpha dropped, bilevel spread to 0/255).
_GRAY_MODES = {"1", "LA", "La"}

# What PIL's decoders raise on malformed data once a format has been identified.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError)


def _check_size(width: int, height: int, max_pixels: int | None) -> None:
    if width <= 0 or height <= 0:
        raise InputError(f"image has zero size: {width}x{height} pixels")
    if max_pixels is not None and width * height > max_pixels:
        raise InputError(f"image too large: {width}x{height} pixels (limit {max_pixels})")


def _to_codec_mode(im: Image.Image) -> Image.Image:
    """Convert a PIL image to "RGB" or "L" (alpha dropped); refuse >8-bit samples.

    Args:
        im: any PIL image; may still be lazily loaded (conversion decodes it).
    """
    mode = im.mode
    if mode in ("RGB", "L"):
        return im
    if mode in _HIGH_DEPTH_MODES or mode.startswith("I;16"):
        raise InputError(
            f"16-bit/float images are not supported (mode {mode}): convert to 8-bit first"
        )
    if mode in _GRAY_MODES:
        return im.convert("L")
    if mode in ("P", "PA"):
        # Via RGBA so palette transparency is honoured by PIL (and then dropped) without the
        # "transparency expressed in bytes" warning a direct P -> RGB conversion gives.
        return im.convert("RGBA").convert("RGB")
    try:
        return im.convert("RGB")  # RGBA, RGBa, RGBX, CMYK, YCbCr, HSV, ...
    except ValueError:
        raise InputError(f"unsupported image mode {mode}: convert to RGB first") from None


def _pil_to_array(im: Image.Image, band_rows: int = 512) -> np.ndarray:
    """An "RGB" or "L" image as a new writable uint8 array, filled band by band: numpy's
    conversion of a whole image goes through one bytes copy of all of it (0.2 GB more at
    the peak for a 64-Mpixel photo)."""
    width, height = im.size
    out = np.empty((height, width) if im.mode == "L" else (height, width, 3), dtype=np.uint8)
    for top in range(0, height, band_rows):
        out[top:top + band_rows] = np.asarray(im.crop((0, top, width,
                                                       min(top + band_rows, height))))
    return out


def as_rgb(array: np.ndarray) -> np.ndarray:
    """A uint8 picture as HxWx3: a grayscale one (HxW) as three equal channels, the way the
    codec codes it; an RGB one as it is."""
    return np.repeat(array[..., None], 3, axis=2) if array.ndim == 2 else array


def check_input_file(path: str | Path) -> Path:
    """The path of an existing, non-empty regular file, or an InputError saying what it is not
    (shared by every loader, so missing/folder/empty read the same for images and audio)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"no such file: {path}")
    if not path.is_file():
        raise InputError(f"not a file: {path}")
    if path.stat().st_size == 0:
        raise InputError(f"empty file: {path}")
    return path


def load_image(path: str | Path, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file into a uint8 array, HxWx3 (RGB) or HxW (grayscale).

    The EXIF orientation is applied (what users see is what gets coded), alpha is dropped,
    palette/CMYK/YCbCr images become RGB, and bilevel/gray+alpha images become grayscale.

    Args:
        path: the image file.
        max_pixels: largest width * height accepted; checked on the header, before decoding.

    Returns:
        A C-contiguous, writable uint8 array.

    Raises:
        InputError: missing, empty, unreadable, truncated, too large, zero-sized or
            16-bit/float images.
    """
    path = check_input_file(path)

    # PIL's bomb warning is redundant with our (stricter by default) header check below, and its
    # hard error becomes an InputError; neither should escape as a PIL-specific exception.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(path)
        except UnidentifiedImageError:
            raise InputError(f"not an image PIL can read: {path}") from None
        except Image.DecompressionBombError:
            raise InputError(_bomb_message(max_pixels)) from None
        except PermissionError:
            raise InputError(f"permission denied: {path}") from None
        except _DECODE_ERRORS:
            raise InputError(f"truncated or corrupted image: {path}") from None

        with im:
            width, height = im.size
            _check_size(width, height, max_pixels)  # before any pixel is decoded
            try:
                im.load()
                ImageOps.exif_transpose(im, in_place=True)  # (a copy would double the peak)
                im = _to_codec_mode(im)
                return _pil_to_array(im)
            except Image.DecompressionBombError:
                raise InputError(_bomb_message(max_pixels)) from None
            except InputError:
                raise
            except _DECODE_ERRORS:
                raise InputError(f"truncated or corrupted image: {path}") from None


def _bomb_message(max_pixels: int) -> str:
    pil_limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    return f"image too large: more than {pil_limit} pixels (limit {min(max_pixels, pil_limit)})"


def _check_array(array: np.ndarray, max_pixels: int | None) -> np.ndarray:
    """Validate a uint8 HxW / HxWx1 / HxWx3 array and return it as C-contiguous HxW or HxWx3."""
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (
        array.ndim == 3 and array.shape[2] not in (1, 3)
    ):
        raise InputError(
            f"expected a uint8 array of shape HxW or HxWx3, got {array.dtype} {tuple(array.shape)}"
        )
    height, width = array.shape[:2]
    _check_size(width, height, max_pixels)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return np.ascontiguousarray(array)


def as_image_array(
    image: Image.Image | np.ndarray, *, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """Normalise an in-memory image to a C-contiguous uint8 array, HxWx3 (RGB) or HxW.

    Args:
        image: a PIL image (converted with the same mode rules as `load_image`, without EXIF
            transposition) or a numpy uint8 array of shape HxW, HxWx1 or HxWx3. A contiguous
            array of the right shape is returned as is, not copied.
        max_pixels: largest width * height accepted.

    Raises:
        InputError: other types, dtypes or shapes; zero-sized or too large images.
    """
    if isinstance(image, Image.Image):
        width, height = image.size
        _check_size(width, height, max_pixels)
        try:
            return _pil_to_array(_to_codec_mode(image))
        except InputError:
            raise
        except _DECODE_ERRORS:  # a lazily opened image whose data turns out bad
            raise InputError("truncated or corrupted image") from None
    if isinstance(image, np.ndarray):
        return _check_array(image, max_pixels)
    raise InputError(f"expected a PIL image or a numpy uint8 array, got {type(image).__name__}")


def check_image_target(path: str | Path) -> str:
    """The PIL format `save_image` writes `path` in, or an InputError.

    Args:
        path: the destination.

    Raises:
        InputError: no suffix, a suffix not in `SAVE_EXTENSIONS`, or a missing destination
            folder.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not suffix:
        raise InputError(f"cannot tell the image format without a file suffix: {path}; use .png")
    image_format = _SAVE_FORMATS.get(suffix)
    if image_format is None:
        raise InputError(f"cannot write image format '{path.suffix}'; use .png")
    if not path.parent.is_dir():
        raise InputError(f"no such folder: {path.parent}")
    return image_format


# zlib level 1 for PNG (Pillow's default is 6): a 2048x2048 decode is written in 0.37 s
# against 1.78 s (session 8), the file 12 % larger; a decoded image is usually an
# intermediate, and whoever keeps it can recompress it.
_SAVE_OPTIONS = {"PNG": {"compress_level": 1}}


def save_image(array: np.ndarray, path: str | Path) -> None:
    """Write a uint8 image array atomically, in the format named by the file suffix.

    Grayscale (HxW or HxWx1) is saved as mode "L", HxWx3 as "RGB". The file is written to a
    temporary file beside `path` and renamed over it, so a failure leaves no partial output.

    Args:
        array: uint8 array, HxW, HxWx1 or HxWx3.
        path: destination; suffix one of .png, .bmp, .tif/.tiff, .ppm/.pgm/.pnm, .jpg/.jpeg.

    Raises:
        InputError: bad array, unknown suffix or missing destination folder.
    """
    path = Path(path)
    if not isinstance(array, np.ndarray):
        raise InputError(f"expected a numpy uint8 array, got {type(array).__name__}")
    array = _check_array(array, max_pixels=None)
    image_format = check_image_target(path)

    image = Image.fromarray(array)  # HxW uint8 -> "L", HxWx3 uint8 -> "RGB"
    with atomic_output(path) as tmp:
        image.save(tmp, format=image_format, **_SAVE_OPTIONS.get(image_format, {}))
