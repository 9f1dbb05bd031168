"""Image decoding: bytes, a path or base64 in; an upright 8-bit BGR array out.

Limits are enforced before the pixels are decoded: the byte size first, then the
pixel count from the header, so a decompression bomb costs a header read, not memory.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from faceledger.errors import EmptyImage, ImageTooLarge, InvalidImage, PayloadTooLarge, TruncatedImage

ImageInput = Union[bytes, bytearray, memoryview, str, Path, np.ndarray]
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")
Image.MAX_IMAGE_PIXELS = None  # faceledger checks its own max_pixels setting before decoding
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, never half a face


def _read_file(path: Path, max_bytes: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise PayloadTooLarge(f"image file is {size} bytes, the limit is {max_bytes}", size=size, limit=max_bytes)
        return path.read_bytes()
    except OSError as exc:
        raise InvalidImage(f"cannot read image file {path}: {exc.strerror}", path=str(path)) from None


def decode_base64(text: str, max_bytes: int, what: str = "image", **details) -> bytes:
    """Base64 text or a ``data:`` URL to bytes; over ``max_bytes`` is refused before decoding."""
    if text.startswith("data:"):
        text = text.split(",", 1)[-1]
    if len(text) * 3 // 4 > max_bytes:
        raise PayloadTooLarge(f"{what} is over {max_bytes} bytes", limit=max_bytes, **details)
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImage(f"{what} is not valid base64", **details) from None


def _read_bytes(source: ImageInput, max_bytes: int) -> bytes:
    """A Path is a file; a str is a ``data:`` URL, an existing file, or base64 text."""
    if isinstance(source, Path):
        return _read_file(source, max_bytes)
    if isinstance(source, str):
        if not source.startswith("data:") and len(source) < 4096 and Path(source).is_file():
            return _read_file(Path(source), max_bytes)
        return decode_base64(source, max_bytes, "the image string (not an existing file)")
    if not isinstance(source, (bytes, bytearray, memoryview)):
        raise InvalidImage(f"cannot read an image from a {type(source).__name__}")
    data = bytes(source)
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"image is {len(data)} bytes, the limit is {max_bytes}", size=len(data), limit=max_bytes)
    return data


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") else max(float(arr.max()), 1.0)
        grey = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(img.convert("RGB"))


def decode_image(source: ImageInput, *, max_bytes: int = 20 * 1024 * 1024, max_pixels: int = 40_000_000) -> np.ndarray:
    """Decode an image to an upright ``HxWx3`` uint8 BGR array, or raise a typed error.

    ``source`` may be raw bytes, a filesystem path, base64 text (optionally a ``data:``
    URL, which is decoded, never fetched), or an already decoded BGR/grey array.
    """
    if isinstance(source, np.ndarray):
        return _from_array(source, max_pixels)
    data = _read_bytes(source, max_bytes)
    if not data:
        raise EmptyImage("the image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=FORMATS)
            width, height = img.size
            if width * height > max_pixels:
                raise ImageTooLarge(
                    f"image is {width}x{height} = {width * height} pixels, the limit is {max_pixels}",
                    width=width, height=height, limit=max_pixels,
                )
            img.load()
            img = ImageOps.exif_transpose(img)
            rgb = _to_rgb_array(img)
    except ImageTooLarge:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"image refused as a decompression bomb: {exc}", limit=max_pixels) from None
    except UnidentifiedImageError:
        raise InvalidImage("data is not an image in a supported format (JPEG, PNG, WebP, BMP, TIFF)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        if "truncated" in str(exc).lower() or isinstance(exc, EOFError):
            raise TruncatedImage(f"image data is truncated or corrupt: {exc}") from None
        raise InvalidImage(f"image could not be decoded: {exc}") from None
    if rgb.ndim != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise InvalidImage("image has no pixels")
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _from_array(arr: np.ndarray, max_pixels: int) -> np.ndarray:
    if arr.ndim not in (2, 3) or arr.size == 0 or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise InvalidImage(f"array of shape {arr.shape} is not an image")
    if arr.shape[0] * arr.shape[1] > max_pixels:
        raise ImageTooLarge(f"image has {arr.shape[0] * arr.shape[1]} pixels, the limit is {max_pixels}")
    if arr.dtype != np.uint8:
        raise InvalidImage(f"array images must be uint8, got {arr.dtype}")
    if arr.ndim == 2 or arr.shape[2] == 1:
        arr = np.repeat(arr.reshape(arr.shape[0], arr.shape[1], 1), 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3])
