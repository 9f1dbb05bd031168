"""Image decoding: bytes, a path or base64 in; an upright 8-bit BGR array out.

Limits are enforced before the pixels are decoded: the byte size first, then the
pixel count from the header, so a decompression bomb costs a header read, not memory.
Then the decode reserves its estimated peak memory in the process-wide decode budget
(``faceledger.imaging.budget``), so many large images at once wait instead of exhausting memory.

Every failure is a ``FaceledgerError``: whatever a decoder raises on corrupt data becomes
``InvalidImage`` (``TruncatedImage`` where the data is cut short). EXIF metadata is only read
for the orientation; EXIF that cannot be read is ignored, as browsers do, and the pixels are
shown as stored.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from faceledger.errors import (
    EmptyImage,
    FaceledgerError,
    ImageTooLarge,
    InvalidImage,
    PayloadTooLarge,
    TruncatedImage,
)
from faceledger.imaging.budget import decode_budget

ImageInput = Union[bytes, bytearray, memoryview, str, Path, np.ndarray]
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")
MAX_PIXELS = 25_000_000  # the default of the max_image_pixels setting; see its description
Image.MAX_IMAGE_PIXELS = None  # faceledger checks its own max_pixels setting before decoding
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, never half a face

_CHUNK_PIXELS = 1 << 16  # conversions work on row strips of about this many pixels
_DECODER_BUFFERS = 4 << 20  # strips, decoder line buffers and the like, per decode
_TRUNCATION_HINTS = ("truncated", "end of file", "unexpected end", "not enough data", "premature end")


def _read_file(path: Path, max_bytes: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise PayloadTooLarge(f"image file is {size} bytes, the limit is {max_bytes}", size=size, limit=max_bytes)
        return path.read_bytes()
    except OSError as exc:
        raise InvalidImage(f"cannot read image file {path}: {exc.strerror}", path=str(path)) from None


def _is_data_url(text: str) -> bool:
    return text[:5].lower() == "data:"


def _data_url_payload(text: str, what: str, details: dict) -> str:
    """The base64 part of ``data:image/...;base64,<payload>``; any other data: URL is refused."""
    header, comma, payload = text.partition(",")
    if not comma:
        raise InvalidImage(f"{what} is a data: URL without a ',' before its data", **details)
    media_type, *params = (part.strip().lower() for part in header[5:].split(";"))
    if not media_type.startswith("image/"):
        raise InvalidImage(f"{what} is a data: URL of type {media_type or 'text/plain'}, not image/*", **details)
    if "base64" not in params:
        raise InvalidImage(f"{what} is a data: URL that is not base64-encoded (;base64, is required)", **details)
    return payload


def decode_base64(text: str, max_bytes: int, what: str = "image", **details) -> bytes:
    """Base64 text or a ``data:image/...;base64,`` URL to bytes; over ``max_bytes`` is refused before decoding.

    A ``data:`` URL of any other media type (``text/plain``, none at all, ...) is ``InvalidImage``.
    """
    if _is_data_url(text):
        text = _data_url_payload(text, what, details)
    if len(text) * 3 // 4 > max_bytes:
        raise PayloadTooLarge(f"{what} is over {max_bytes} bytes", limit=max_bytes, **details)
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImage(f"{what} is not valid base64", **details) from None


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except (OSError, ValueError):  # ENAMETOOLONG and the like: base64 text, not a file name
        return False


def _read_bytes(source: ImageInput, max_bytes: int) -> bytes:
    """A Path is a file; a str is a ``data:`` URL, an existing file, or base64 text."""
    if isinstance(source, Path):
        return _read_file(source, max_bytes)
    if isinstance(source, str):
        if not _is_data_url(source) and len(source) < 4096 and _is_file(source):
            return _read_file(Path(source), max_bytes)
        return decode_base64(source, max_bytes, "the image string (not an existing file)")
    if not isinstance(source, (bytes, bytearray, memoryview)):
        raise InvalidImage(f"cannot read an image from a {type(source).__name__}")
    data = bytes(source)
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"image is {len(data)} bytes, the limit is {max_bytes}", size=len(data), limit=max_bytes)
    return data


# ---------------------------------------------------------------- memory estimate


def _storage_bytes(mode: str) -> int:
    """Bytes a pixel takes in Pillow's own storage (multi-band modes are stored 4 bytes a pixel)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


def _decode_cost(img: Image.Image) -> int:
    """An upper bound of the bytes one decode holds at its peak (measured: RSS rises by about this).

    While converting: Pillow's decoded image, for WebP libwebp's canvas, its previous-frame
    canvas and the frame bytes handed to Pillow (12 bytes a pixel), and the BGR result (3 bytes
    a pixel); the conversion goes strip by strip, so nothing else is full-size. Then, for a
    rotated image, the result and its upright copy (3 + 3). Plus a few MB of decoder buffers.
    An RGB JPEG or PNG: 4 + 3 = 7 bytes a pixel, 175 MB at 25 MP; a 16-bit grey PNG 6.
    """
    frame = 12 if img.format == "WEBP" else 0
    return img.width * img.height * (max(_storage_bytes(img.mode) + frame, 3) + 3) + _DECODER_BUFFERS


# ---------------------------------------------------------------- conversions (strip by strip, never via float64)


def _row_blocks(height: int, width: int):
    step = max(1, _CHUNK_PIXELS // max(width, 1))
    for top in range(0, height, step):
        yield slice(top, min(top + step, height))


def _grey_scale(img: Image.Image) -> float | None:
    """The factor taking a 32-bit integer or float grey image's maximum to 255 (None: 16-bit, exact integers)."""
    if img.mode.startswith("I;16") and not img.mode.endswith("S"):  # unsigned 16-bit: a fixed scale
        return None
    top = img.getextrema()[1]
    if not np.isfinite(top):  # NaN or infinity in a float image: the largest finite value
        top = -np.inf
        for rows in _row_blocks(img.height, img.width):
            strip = np.asarray(img.crop((0, rows.start, img.width, rows.stop)))
            finite = strip[np.isfinite(strip)]
            top = max(top, float(finite.max()) if finite.size else top)
    return 255.0 / max(float(top), 1.0)


def _grey_strip(strip: Image.Image, scale: float | None) -> np.ndarray:
    """A strip of a 16-bit, 32-bit integer or float grey image to uint8, in integers or float32."""
    arr = np.asarray(strip)  # uint16 (either byte order), int16, int32 or float32: the storage's own type
    if scale is None:
        block = arr.astype(np.uint32)
        block *= 255
        block += 32767
        block //= 65535  # round(v * 255 / 65535) exactly (65535 is odd: no ties)
        return block.astype(np.uint8)
    block = arr.astype(np.float32)
    block *= np.float32(scale)
    block += np.float32(0.5)
    np.nan_to_num(block, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
    np.clip(block, 0, 255, out=block)
    return block.astype(np.uint8)


def _on_white(rgba: np.ndarray) -> np.ndarray:
    """RGBA composited over white, in integers, as BGR: c * a / 255 + 255 * (1 - a / 255), rounded."""
    block = rgba.astype(np.uint16)
    alpha = block[:, :, 3:4]
    return ((block[:, :, 2::-1] * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)  # <= 65152: uint16


def _to_bgr(img: Image.Image) -> np.ndarray:
    """The image as a new ``HxWx3`` uint8 BGR array, in its stored orientation; closes ``img``.

    Converted strip by strip into the result, so the only full-size buffers are Pillow's own
    image and the result: no full-size float, RGBA or RGB copy is ever made.
    """
    mode, (width, height) = img.mode, img.size
    numeric = mode.startswith("I;16") or mode in ("I", "F")
    alpha = mode in ("RGBA", "LA", "La", "PA", "RGBa") or (mode == "P" and "transparency" in img.info)
    scale = _grey_scale(img) if numeric else None
    out = np.empty((height, width, 3), dtype=np.uint8)
    for rows in _row_blocks(height, width):
        strip = img.crop((0, rows.start, width, rows.stop))
        n = rows.stop - rows.start
        if numeric:
            out[rows] = _grey_strip(strip, scale)[:, :, None]
        elif alpha:
            out[rows] = _on_white(np.asarray(strip if mode == "RGBA" else strip.convert("RGBA")))
        elif mode in ("L", "1"):
            grey = strip if mode == "L" else strip.convert("L")
            out[rows] = np.frombuffer(grey.tobytes(), dtype=np.uint8).reshape(n, width, 1)
        else:
            rgb = strip if mode == "RGB" else strip.convert("RGB")
            out[rows] = np.frombuffer(rgb.tobytes("raw", "BGR"), dtype=np.uint8).reshape(n, width, 3)
    img.close()
    return out


# ---------------------------------------------------------------- orientation


def _orientation(img: Image.Image) -> int:
    """EXIF (or XMP) orientation 1-8; unreadable or invalid metadata counts as 1 (as stored)."""
    try:
        value = img.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - corrupt metadata must not cost the image
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """The upright view of an ``HxWxC`` array stored with EXIF ``orientation`` (as Pillow's exif_transpose)."""
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1]
    if orientation == 5:
        return arr.transpose(1, 0, 2)
    if orientation == 6:
        return arr.transpose(1, 0, 2)[:, ::-1]
    if orientation == 7:
        return arr.transpose(1, 0, 2)[::-1, ::-1]
    if orientation == 8:
        return arr.transpose(1, 0, 2)[::-1]
    return arr


# ---------------------------------------------------------------- decoding


@dataclass(frozen=True)
class Decoded:
    """An upright BGR image, whole or reduced: ``width`` x ``height`` is always the whole image's size."""

    bgr: np.ndarray
    width: int
    height: int
    data: bytes | None = None  # the encoded image, kept while ``bgr`` is reduced
    max_pixels: int = MAX_PIXELS
    k: int = 1  # whole pixels per pixel of ``bgr`` along each axis: whole x = x * k + offset[0]
    offset: tuple[int, int] = (0, 0)  # whole-image x, y of ``bgr``'s (0, 0) corner (<= 0)

    @property
    def reduced(self) -> bool:
        return self.data is not None

    def whole(self) -> np.ndarray:
        """The whole image's pixels (``bgr`` itself when it is not reduced)."""
        if self.data is None:
            return self.bgr
        return _decode_bytes(self.data, self.max_pixels, None)[0]


def _scale_for(width: int, height: int, min_side: int | None) -> int:
    """The largest JPEG DCT-domain reduction (8, 4, 2 or 1) that keeps the longer side at least ``min_side``."""
    if not min_side:
        return 1
    longer = max(width, height)
    return next((k for k in (8, 4, 2) if (longer + k - 1) // k >= min_side and min(width, height) >= k), 1)


def _decode(data: bytes, max_pixels: int, min_side: int | None = None):
    """The upright BGR pixels, the whole image's upright (width, height), the reduction k and the EXIF orientation;
    a JPEG whose longer side is at least
    twice ``min_side`` is decoded at 1/2, 1/4 or 1/8 of its size in the DCT domain (libjpeg's scaled IDCT: less
    work and memory than decoding it whole, and a proper low-pass where resizing afterwards would alias)."""
    img = Image.open(io.BytesIO(data), formats=FORMATS)
    width, height = img.size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"image is {width}x{height} = {width * height} pixels, the limit is {max_pixels}",
            width=width, height=height, limit=max_pixels,
        )
    if width <= 0 or height <= 0:
        raise InvalidImage("image has no pixels", width=width, height=height)
    k = _scale_for(width, height, min_side) if img.format == "JPEG" else 1
    if k > 1:
        # the whole image may be needed after all: one that could never be decoded whole is refused now, whatever
        # it shows (and while the reduced one is decoded, only its own memory is held)
        decode_budget().check_fits(_decode_cost(img), width=width, height=height)
        img.draft(img.mode, (width // k, height // k))  # Pillow picks the scale: the largest not below this size
    with decode_budget().reserve(_decode_cost(img), width=width, height=height):
        img.load()
        k = round(width / img.width)  # what the decoder did (1 when it could not reduce)
        orientation = _orientation(img)
        bgr = np.ascontiguousarray(_orient(_to_bgr(img), orientation))
    return bgr, ((height, width) if orientation >= 5 else (width, height)), k, orientation


def _decoded(source: ImageInput, max_bytes: int, max_pixels: int, min_side: int | None) -> Decoded:
    if isinstance(source, np.ndarray):
        bgr = _from_array(source, max_pixels)
        return Decoded(bgr, bgr.shape[1], bgr.shape[0])
    data = _read_bytes(source, max_bytes)
    rgb, (width, height), k, orientation = _decode_bytes(data, max_pixels, min_side)
    if k == 1:
        return Decoded(rgb, width, height)
    # reduced pixel i covers whole pixels [i k, i k + k), the last one a partial block; an axis that the EXIF
    # orientation reverses has that partial block first, shifting it by the block's missing part
    flip_x, flip_y = orientation in (2, 3, 6, 7), orientation in (3, 4, 7, 8)
    offset = (width - rgb.shape[1] * k if flip_x else 0, height - rgb.shape[0] * k if flip_y else 0)
    return Decoded(rgb, width, height, data, max_pixels, k, offset)


def _decode_bytes(data: bytes, max_pixels: int, min_side: int | None):
    """``_decode``, with whatever a decoder raises turned into a typed error."""
    if not data:
        raise EmptyImage("the image is empty (0 bytes)")
    try:
        rgb, size, k, orientation = _decode(data, max_pixels, min_side)
    except FaceledgerError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"image refused as a decompression bomb: {exc}", limit=max_pixels) from None
    except UnidentifiedImageError:
        raise InvalidImage("data is not an image in a supported format (JPEG, PNG, WebP, BMP, TIFF)") from None
    except MemoryError:
        raise ImageTooLarge("there is not enough memory to decode this image", limit=max_pixels) from None
    except Exception as exc:  # noqa: BLE001 - decoders raise OSError, SyntaxError, struct.error, TypeError, ...
        text = str(exc).lower()
        if isinstance(exc, EOFError) or any(hint in text for hint in _TRUNCATION_HINTS):
            raise TruncatedImage(f"image data is truncated or corrupt: {exc}") from None
        raise InvalidImage(f"image could not be decoded: {type(exc).__name__}: {exc}") from None
    if rgb.ndim != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0 or rgb.shape[2] != 3:
        raise InvalidImage("image has no pixels")
    return rgb, size, k, orientation


def decode_image(source: ImageInput, *, max_bytes: int = 20 * 1024 * 1024, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an image to an upright ``HxWx3`` uint8 BGR array, or raise a typed error.

    ``source`` may be raw bytes, a filesystem path, base64 text (optionally a ``data:image/...``
    URL, which is decoded, never fetched), or an already decoded BGR/grey array. Only
    ``FaceledgerError`` subclasses are raised.
    """
    return _decoded(source, max_bytes, max_pixels, None).bgr


def decode_at_least(source: ImageInput, min_side: int, *, max_bytes: int = 20 * 1024 * 1024,
                    max_pixels: int = MAX_PIXELS) -> Decoded:
    """As ``decode_image``, but a large JPEG comes back reduced in the DCT domain to no less than ``min_side`` on
    its longer side (``Decoded.reduced``); ``Decoded.whole()`` decodes it whole when the pixels turn out to be
    needed. The limits are the whole image's, checked the same way."""
    return _decoded(source, max_bytes, max_pixels, min_side)


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
