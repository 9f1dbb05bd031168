"""Image input: formats, sources, orientation and modes; every bad input gets its typed error."""

from __future__ import annotations

import base64
import inspect
import io
import struct
import threading
import time
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from faceledger.config import Settings
from faceledger.errors import EmptyImage, ImageTooLarge, InvalidImage, Overloaded, PayloadTooLarge, TruncatedImage
from faceledger.imaging import DecodeBudget, decode_at_least, decode_base64, decode_image
from faceledger.imaging import budget as budget_module


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


def test_transparency_is_composited_over_white(face_rgb):
    rgba = face_rgb.convert("RGBA")
    alpha = np.full((face_rgb.height, face_rgb.width), 255, dtype=np.uint8)
    alpha[:, : face_rgb.width // 2] = 0  # the left half fully transparent
    rgba.putalpha(Image.fromarray(alpha))
    out = decode_image(encode(rgba, "PNG"))
    assert (out[:, : face_rgb.width // 2] == 255).all()
    assert np.array_equal(out[:, face_rgb.width // 2 :], np.asarray(face_rgb)[:, face_rgb.width // 2 :, ::-1])
    half = face_rgb.convert("RGBA")
    half.putalpha(128)
    expected = (np.asarray(face_rgb).astype(int) * 128 + 255 * 127 + 127) // 255
    assert np.abs(decode_image(encode(half, "PNG")).astype(int) - expected[:, :, ::-1]).max() <= 1
    palette = face_rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    index = np.asarray(palette)[0, 0]
    out = decode_image(encode(palette, "PNG", transparency=int(index)))
    assert (out[np.asarray(palette) == index] == 255).all()


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


def png_bomb(width: int, height: int, bit_depth: int = 8) -> bytes:
    """A tiny PNG that claims width x height: the header is all a decoder needs to refuse it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)  # greyscale
    row = b"\x00" + b"\x00" * (width * bit_depth // 8)
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


# ---------------------------------------------------------------- pixel cap and decode memory


def test_default_pixel_cap_fits_the_detector():
    """The detector sees at most detect_max_side (640) px; 25 MP keeps 24 MP camera photos, refuses 40 MP bombs."""
    cap = Settings.model_fields["max_image_pixels"].default
    assert 16_000_000 <= cap <= 25_000_000
    assert inspect.signature(decode_image).parameters["max_pixels"].default == cap
    bomb = png_bomb(6300, 6300, bit_depth=16)  # 39.7 MP of 16-bit grey in a few hundred bytes
    assert len(bomb) < 100_000
    with pytest.raises(ImageTooLarge):
        decode_image(bomb)
    try:  # a 6000x4000 (24 MP) photo is not refused for its size (Pillow may or may not mind the missing rows)
        assert decode_image(png_bomb(6000, 4000)).shape == (4000, 6000, 3)
    except ImageTooLarge:
        raise
    except InvalidImage:
        pass


def test_16bit_rounds_exactly_without_float64(face_rgb):
    values = np.arange(65536, dtype=np.uint32).reshape(256, 256).astype(np.uint16)
    out = decode_image(encode(Image.fromarray(values), "PNG"))
    assert out.dtype == np.uint8 and out.flags.writeable and out.flags.c_contiguous
    assert np.array_equal(out[:, :, 0], np.floor(values / 257 + 0.5).astype(np.uint8))
    assert np.array_equal(out[:, :, 0], out[:, :, 1]) and np.array_equal(out[:, :, 0], out[:, :, 2])
    side = 1024
    big = Image.fromarray(np.asarray(face_rgb.convert("L").resize((side, side))).astype(np.uint16) * 257)
    data = encode(big, "PNG")
    tracemalloc.start()  # numpy reports its buffers to tracemalloc: a single float64 HxW array is 8 bytes a pixel
    try:
        decode_image(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * side * side, f"decoding a 16-bit image peaked at {peak / side / side:.1f} bytes a pixel"


@pytest.mark.parametrize("mode", ["I", "F"])
def test_32bit_greys_scale_to_their_maximum(face_rgb, mode):
    grey = np.asarray(face_rgb.convert("L")).astype(np.int32) * 1000
    img = Image.fromarray(grey.astype(np.int32 if mode == "I" else np.float32), mode)
    out = decode_image(encode(img, "TIFF"))
    expected = np.floor(grey / grey.max() * 255 + 0.5)
    assert out.dtype == np.uint8 and np.abs(out[:, :, 1].astype(int) - expected).max() <= 1


def test_decode_budget_waits_then_overloads():
    budget = DecodeBudget(100, timeout=0.2)
    with budget.reserve(60):
        assert budget.in_use == 60
        start = time.monotonic()
        with pytest.raises(Overloaded), budget.reserve(60):
            pass
        assert 0.15 <= time.monotonic() - start < 3
    assert budget.in_use == 0
    with budget.reserve(100):
        assert budget.in_use == 100
    with pytest.raises(ImageTooLarge), budget.reserve(101):  # more than the whole budget never fits: no wait
        pass
    assert budget.in_use == 0


def test_decode_budget_wakes_a_waiter_on_release():
    budget = DecodeBudget(100, timeout=5)
    held = threading.Event()

    def hold():
        with budget.reserve(80):
            held.set()
            time.sleep(0.3)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    start = time.monotonic()
    with budget.reserve(50):
        waited = time.monotonic() - start
    holder.join()
    assert 0.1 < waited < 4 and budget.in_use == 0


def test_decode_image_reserves_its_decoded_bytes(people, monkeypatch):
    raw = (people / "face_recognition_examples" / "obama-240p.jpg").read_bytes()
    width, height = Image.open(io.BytesIO(raw)).size
    reserved = []

    class Spy(DecodeBudget):
        def reserve(self, nbytes, **details):
            reserved.append(nbytes)
            return super().reserve(nbytes, **details)

    spy = Spy(10**9, timeout=0.2)
    monkeypatch.setattr(budget_module, "_process_budget", spy)
    decode_image(raw)
    assert reserved and reserved[0] >= width * height * 3 and spy.in_use == 0
    with pytest.raises(TruncatedImage):
        decode_image(raw[: len(raw) // 2])
    assert spy.in_use == 0  # released when decoding fails too
    with spy.reserve(10**9 - 1000), pytest.raises(Overloaded):  # the budget is taken: it waits, then gives up
        decode_image(raw)
    monkeypatch.setattr(budget_module, "_process_budget", DecodeBudget(1000, timeout=0.2))
    with pytest.raises(ImageTooLarge):
        decode_image(raw)


# ---------------------------------------------------------------- EXIF


def tiff_ifd(entries, extra: bytes = b"") -> bytes:
    """A little-endian TIFF header and one IFD: entries are (tag, type, count, 4 value bytes)."""
    out = b"II*\x00" + struct.pack("<IH", 8, len(entries))
    for tag, kind, count, value in entries:
        out += struct.pack("<HHI", tag, kind, count) + value
    return out + struct.pack("<I", 0) + extra


ROTATE_6 = (0x0112, 3, 1, struct.pack("<HH", 6, 0))
CORRUPT_EXIF = {  # (EXIF block, whether its orientation 6 is still readable)
    "xresolution_as_text": (tiff_ifd([ROTATE_6, (0x011A, 2, 4, b"abc\x00")]), True),
    "resolution_unit_as_text": (tiff_ifd([ROTATE_6, (0x0128, 2, 4, b"in\x00\x00")]), True),
    "make_as_number": (tiff_ifd([ROTATE_6, (0x010F, 3, 1, struct.pack("<HH", 7, 0))]), True),
    "short_header": (b"II*\x00\x08\x00", False),
    "ifd_without_entries": (b"II*\x00" + struct.pack("<IH", 8, 5), False),
    "orientation_as_text": (tiff_ifd([(0x0112, 2, 4, b"six\x00")]), False),
    "orientation_out_of_range": (tiff_ifd([(0x0112, 3, 1, struct.pack("<HH", 9, 0))]), False),
    "exif_ifd_far_away": (tiff_ifd([ROTATE_6, (0x8769, 4, 1, struct.pack("<I", 0xFFFFFF))]), True),
}


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("name", sorted(CORRUPT_EXIF))
def test_corrupt_exif_never_escapes(face_rgb, name, fmt):
    block, rotated = CORRUPT_EXIF[name]
    small = face_rgb.resize((40, 30))
    data = encode(small, fmt, exif=(b"Exif\x00\x00" if fmt == "JPEG" else b"") + block)
    out = decode_image(data)  # metadata that cannot be read is ignored: the pixels are shown as stored
    assert out.dtype == np.uint8 and out.shape == ((40, 30, 3) if rotated else (30, 40, 3))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillow(face_rgb, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(face_rgb.resize((48, 32)), "PNG", exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))[:, :, ::-1]
    out = decode_image(data)
    assert np.array_equal(out, expected) and out.flags.c_contiguous and out.flags.writeable


# ---------------------------------------------------------------- text sources


def test_data_url_must_name_an_image_type(people):
    raw = (people / "face_recognition_examples" / "obama-240p.jpg").read_bytes()
    b64 = base64.b64encode(raw).decode()
    for prefix in ("data:text/plain;base64,", "data:;base64,", "data:application/octet-stream;base64,",
                   "data:image/jpeg,", "data:image/jpeg;base64", "data:text/html;charset=utf-8;base64,"):
        with pytest.raises(InvalidImage):
            decode_base64(prefix + b64, 10**8)
        with pytest.raises(InvalidImage):
            decode_image(prefix + b64)
    assert decode_base64("DATA:Image/JPEG;BASE64," + b64, 10**8) == raw
    assert decode_base64("data:image/jpeg;name=face.jpg;base64," + b64, 10**8) == raw


def test_text_that_is_no_file_name_is_base64():
    with pytest.raises(InvalidImage):
        decode_image("A" * 400)  # a 400-character "file name": the OS answers ENAMETOOLONG, not "no such file"
    with pytest.raises(InvalidImage):
        decode_image("abc\x00def")


# ---------------------------------------------------------------- reduced decoding of large JPEGs


def _large(face_rgb: Image.Image, size=(2600, 1700), **kw) -> bytes:
    return encode(face_rgb.resize(size, Image.LANCZOS), "JPEG", quality=92, **kw)


@pytest.mark.parametrize(("size", "reduced"), [((2600, 1700), (650, 425)), ((1300, 900), (650, 450)),
                                               ((1279, 900), (640, 450)), ((1278, 900), (1278, 900)), ((5400, 3600), (675, 450))])
def test_large_jpeg_is_decoded_reduced_but_never_below_min_side(face_rgb, size, reduced):
    data = _large(face_rgb, size)
    view = decode_at_least(data, 640)
    assert (view.width, view.height) == size  # the whole image's size, always
    assert (view.bgr.shape[1], view.bgr.shape[0]) == reduced and view.reduced == (reduced != size)
    whole = decode_image(data)
    assert np.array_equal(view.whole(), whole)
    if view.reduced:  # the same picture, smaller: compared with the whole image shrunk to its size
        import cv2

        shrunk = cv2.resize(whole, reduced, interpolation=cv2.INTER_AREA)
        assert np.abs(view.bgr.astype(int) - shrunk.astype(int)).mean() < 3
        assert view.k == round(size[0] / reduced[0]) and view.offset == (0, 0)


def test_only_jpeg_is_reduced_and_arrays_never(face_rgb):
    big = face_rgb.resize((1600, 1200))
    for data in (encode(big, "PNG"), encode(big, "WEBP")):
        view = decode_at_least(data, 640)
        assert not view.reduced and view.bgr.shape == (1200, 1600, 3)
    array = np.asarray(big)[:, :, ::-1]
    view = decode_at_least(array, 640)
    assert not view.reduced and np.array_equal(view.bgr, array) and np.array_equal(view.whole(), array)


def test_reduced_decode_is_upright_and_sized_as_the_upright_whole(face_rgb):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 2600 x 1700, shown 1700 x 2600
    data = _large(face_rgb, exif=exif.tobytes())
    view = decode_at_least(data, 640)
    assert (view.width, view.height) == (1700, 2600) and view.bgr.shape == (650, 425, 3)
    assert view.whole().shape == (2600, 1700, 3) and np.array_equal(view.whole(), decode_image(data))


def test_reduced_decode_keeps_the_whole_images_limits_and_errors(face_rgb, monkeypatch):
    data = _large(face_rgb, (5400, 3600))
    with pytest.raises(ImageTooLarge):  # the pixel limit is the whole image's, whatever is decoded
        decode_at_least(data, 640, max_pixels=5400 * 3600 - 1)
    with pytest.raises(PayloadTooLarge):
        decode_at_least(data, 640, max_bytes=len(data) - 1)
    with pytest.raises(TruncatedImage):
        decode_at_least(data[: len(data) // 2], 640)
    # an image that could never be decoded whole within the budget is refused up front, whatever it shows (it
    # may be needed whole); while the reduced one is decoded, only its own memory is held
    monkeypatch.setattr(budget_module, "_process_budget", DecodeBudget(16 << 20, timeout=0.2))
    for decode in (decode_image, lambda d: decode_at_least(d, 640)):
        with pytest.raises(ImageTooLarge):
            decode(data)
    reserved = []

    class Spy(DecodeBudget):
        def reserve(self, nbytes, **details):
            reserved.append(nbytes)
            return super().reserve(nbytes, **details)

    monkeypatch.setattr(budget_module, "_process_budget", Spy(1 << 30, timeout=0.2))
    view = decode_at_least(data, 640)
    assert view.bgr.shape == (450, 675, 3) and reserved == [675 * 450 * 7 + (4 << 20)]
    view.whole()
    assert reserved[-1] == 5400 * 3600 * 7 + (4 << 20)


def test_a_thin_jpeg_is_reduced_no_more_than_its_short_side_allows(face_rgb):
    """Pillow divides by the asked size: a reduction larger than the short side would raise (and be refused)."""
    for size, shape in (((5200, 1), (1, 5200, 3)), ((1, 5200), (5200, 1, 3)), ((5200, 3), (2, 2600, 3))):
        view = decode_at_least(encode(face_rgb.resize(size), "JPEG"), 640)
        assert (view.width, view.height) == size and view.bgr.shape == shape


@pytest.mark.parametrize("orientation", range(1, 9))
def test_reduced_pixels_map_onto_the_whole_image_exactly_in_every_orientation(orientation):
    """A bright square at a known place of the upright picture, stored under each EXIF orientation, with sides
    that 4 does not divide (the last DCT block is partial, and comes first along a reversed axis): found in the
    reduced decode, mapped with ``x * k + offset``, it lands where it is in the whole image."""
    width, height, (x0, y0), side = 2563, 1921, (1001, 603), 40
    upright = np.zeros((height, width), np.uint8)
    upright[y0:y0 + side, x0:x0 + side] = 255
    stored = {1: upright, 2: upright[:, ::-1], 3: upright[::-1, ::-1], 4: upright[::-1], 5: upright.T,
              6: upright[:, ::-1].T, 7: upright[::-1, ::-1].T, 8: upright[::-1].T}[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(Image.fromarray(np.ascontiguousarray(stored)), "JPEG", quality=95, exif=exif.tobytes())
    assert np.array_equal(decode_image(data)[:, :, 0] > 127, upright > 127)  # the orientation itself is right
    view = decode_at_least(data, 640)
    assert view.reduced and view.k == 4 and (view.width, view.height) == (width, height)
    grey = view.bgr[:, :, 0].astype(np.float64)
    ys, xs = np.indices(grey.shape)
    # pixel centres: reduced index i covers whole indices [i k, i k + k) shifted by the offset
    cx = (grey * xs).sum() / grey.sum() * view.k + (view.k - 1) / 2 + view.offset[0]
    cy = (grey * ys).sum() / grey.sum() * view.k + (view.k - 1) / 2 + view.offset[1]
    assert abs(cx - (x0 + (side - 1) / 2)) < 0.3 and abs(cy - (y0 + (side - 1) / 2)) < 0.3, (cx, cy)
