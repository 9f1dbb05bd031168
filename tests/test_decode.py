"""Image input: formats, sources, orientation and modes; every bad input gets its typed error."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from faceledger.errors import EmptyImage, ImageTooLarge, InvalidImage, PayloadTooLarge, TruncatedImage
from faceledger.imaging import decode_image


@pytest.fixture(scope="module")
def face_rgb(people) -> Image.Image:
    return Image.open(people / "face_recognition_examples" / "obama-240p.jpg").convert("RGB")


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF"])
def test_formats_decode_to_bgr(face_rgb, fmt):
    bgr = decode_image(encode(face_rgb, fmt))
    assert bgr.shape == (face_rgb.height, face_rgb.width, 3) and bgr.dtype == np.uint8
    reference = np.asarray(face_rgb)[:, :, ::-1].astype(int)
    assert np.abs(bgr.astype(int) - reference).mean() < 4  # lossy formats differ a little, channel order must not


def test_sources_path_bytes_base64_dataurl(people):
    path = people / "face_recognition_examples" / "obama-240p.jpg"
    raw = path.read_bytes()
    b64 = base64.b64encode(raw).decode()
    expected = decode_image(raw)
    for source in (path, str(path), b64, "data:image/jpeg;base64," + b64, bytearray(raw), memoryview(raw)):
        assert np.array_equal(decode_image(source), expected)


def test_exif_orientation_is_applied(people):
    rotated = decode_image(people / "meds" / "face_meds-aa-S001-01-exif-rotation.jpg")
    raw = Image.open(people / "meds" / "face_meds-aa-S001-01-exif-rotation.jpg")
    assert raw.getexif().get(0x0112) not in (None, 1)  # the file really carries a rotation flag
    assert rotated.shape[:2] == (raw.width, raw.height)  # 90 degrees: width and height swap


def test_grey_rgba_and_16bit(face_rgb):
    grey = decode_image(encode(face_rgb.convert("L"), "PNG"))
    assert grey.shape[2] == 3 and np.array_equal(grey[:, :, 0], grey[:, :, 1])
    rgba = face_rgb.convert("RGBA")
    rgba.putalpha(128)
    out = decode_image(encode(rgba, "PNG"))
    assert out.shape == (face_rgb.height, face_rgb.width, 3)
    sixteen = Image.fromarray(np.asarray(face_rgb.convert("L")).astype(np.uint16) * 257)
    assert sixteen.mode.startswith("I;16")
    out16 = decode_image(encode(sixteen, "PNG"))
    assert np.abs(out16[:, :, 0].astype(int) - np.asarray(face_rgb.convert("L")).astype(int)).max() <= 1


def test_truncated_jpeg(people):
    raw = (people / "face_recognition_examples" / "obama.jpg").read_bytes()
    with pytest.raises(TruncatedImage):
        decode_image(raw[: len(raw) // 2])


def test_random_bytes_empty_and_text(tmp_path):
    with pytest.raises(InvalidImage):
        decode_image(np.random.default_rng(0).bytes(5000))
    with pytest.raises(EmptyImage):
        decode_image(b"")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(EmptyImage):
        decode_image(empty)
    text = tmp_path / "notes.txt"
    text.write_text("this is not an image\n" * 20)
    with pytest.raises(InvalidImage):
        decode_image(text)
    with pytest.raises(InvalidImage):
        decode_image(tmp_path / "missing.jpg")
    with pytest.raises(InvalidImage):
        decode_image(12345)  # type: ignore[arg-type]


def png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG that claims width x height: the header is all a decoder needs to refuse it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    row = b"\x00" + b"\x00" * width
    idat = zlib.compress(row * 64, 9)  # only the first rows: decoding would need all 900M pixels
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_decompression_bomb_refused_before_decoding():
    bomb = png_bomb(30000, 30000)
    assert len(bomb) < 100_000
    with pytest.raises(ImageTooLarge) as info:
        decode_image(bomb, max_pixels=40_000_000)
    assert info.value.details["width"] == 30000


def test_byte_limit(people):
    raw = (people / "face_recognition_examples" / "obama.jpg").read_bytes()
    with pytest.raises(PayloadTooLarge):
        decode_image(raw, max_bytes=len(raw) - 1)
    with pytest.raises(PayloadTooLarge):
        decode_image(people / "face_recognition_examples" / "obama.jpg", max_bytes=1000)
    with pytest.raises(PayloadTooLarge):
        decode_image(base64.b64encode(raw).decode(), max_bytes=1000)


def test_invalid_base64():
    with pytest.raises(InvalidImage):
        decode_image("data:image/png;base64,@@@not-base64@@@")
