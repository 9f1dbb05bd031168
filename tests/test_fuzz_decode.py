"""Fuzzing ``decode_image`` with mutated real files: it returns an upright uint8 HxWx3 array or
raises a typed input error, never anything else (a stray exception is a 500 at the API).

The corpus is a face photo re-encoded by Pillow into JPEG (baseline, progressive, with EXIF
orientations), PNG (RGB, grey, 16-bit, RGBA, palette, EXIF), WebP (lossy, lossless, EXIF),
TIFF (raw, LZW, deflate, JPEG-in-TIFF) and BMP. Mutations: bit flips, byte overwrites, inserts,
deletions, duplicated runs, truncations, and overwrites inside the EXIF block. Everything is
deterministic (hypothesis ``derandomize=True``, fixed seeds) and bounded: ~35,000 cases in about 25 s.
"""

from __future__ import annotations

import io
import random
import struct
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from faceledger.errors import FaceledgerError
from faceledger.imaging import decode_image

ALLOWED = {"INVALID_IMAGE", "EMPTY_IMAGE", "TRUNCATED_IMAGE", "IMAGE_TOO_LARGE", "PAYLOAD_TOO_LARGE"}
MAX_PIXELS = 1_000_000  # a mutated header claiming a huge size is refused from the header, not decoded
MAX_BYTES = 1_000_000
HYPOTHESIS_EXAMPLES, EXIF_EXAMPLES = 5000, 2000
LOOP_SEED, LOOP_CASES = 20240611, 20000
CASES: dict[str, int] = {"hypothesis": 0, "exif": 0, "loop": 0, "sweep": 0}

# name -> (format, save options, orientation or None)
CORPUS = {
    "jpeg": ("JPEG", {"quality": 90}, None),
    "jpeg_progressive": ("JPEG", {"quality": 80, "progressive": True}, None),
    "jpeg_exif3": ("JPEG", {"quality": 85}, 3),
    "jpeg_exif6": ("JPEG", {"quality": 85}, 6),
    "jpeg_exif8": ("JPEG", {"quality": 85}, 8),
    "png": ("PNG", {}, None),
    "png_grey": ("PNG", {}, None),
    "png16": ("PNG", {}, None),
    "png_rgba": ("PNG", {}, None),
    "png_palette": ("PNG", {}, None),
    "png_exif6": ("PNG", {}, 6),
    "webp": ("WEBP", {"quality": 80}, None),
    "webp_lossless": ("WEBP", {"lossless": True}, None),
    "webp_exif6": ("WEBP", {"quality": 80}, 6),
    "tiff": ("TIFF", {}, None),
    "tiff_lzw": ("TIFF", {"compression": "tiff_lzw"}, None),
    "tiff_deflate": ("TIFF", {"compression": "tiff_adobe_deflate"}, None),
    "tiff_jpeg": ("TIFF", {"compression": "jpeg"}, None),
    "bmp": ("BMP", {}, None),
}


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "FuzzCam"
    exif[0x011A] = 72.0
    exif[0x8769] = {0x9003: "2024:06:11 12:00:00", 0x920A: 4.5}
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.5)}
    return exif


@pytest.fixture(scope="module")
def corpus(people) -> dict[str, tuple[bytes, tuple[int, int] | None]]:
    """Each file with the byte range of its EXIF block (None without one)."""
    face = Image.open(people / "face_recognition_examples" / "obama-240p.jpg").convert("RGB").resize((96, 72))
    images = {
        "png_grey": face.convert("L"),
        "png16": Image.fromarray(np.asarray(face.convert("L")).astype(np.uint16) * 257),
        "png_rgba": face.convert("RGBA"),
        "png_palette": face.convert("P", palette=Image.Palette.ADAPTIVE),
    }
    files = {}
    for name, (fmt, options, orientation) in CORPUS.items():
        img = images.get(name, face)
        buf = io.BytesIO()
        block = None
        if orientation is not None:
            block = _exif(orientation).tobytes()
            options = {**options, "exif": block}
        img.save(buf, format=fmt, **options)
        data = buf.getvalue()
        where = None
        if block is not None:
            start = data.find(block[6:])  # the TIFF structure after "Exif\0\0"; every format stores it verbatim
            assert start > 0, name
            where = (start, start + len(block) - 6)
        out = decode_image(data, max_pixels=MAX_PIXELS)  # every unmutated file decodes, upright
        assert out.shape == ((96, 72, 3) if orientation in (6, 8) else (72, 96, 3)), name
        files[name] = (data, where)
    return files


def check(data: bytes) -> None:
    try:
        out = decode_image(data, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    except FaceledgerError as exc:
        assert exc.code in ALLOWED, f"{exc.code}: {exc}"
        return
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8, type(out)
    assert out.ndim == 3 and out.shape[2] == 3 and out.shape[0] > 0 and out.shape[1] > 0, out.shape
    assert out.shape[0] * out.shape[1] <= MAX_PIXELS and out.flags.c_contiguous


KINDS = ("flip", "set", "special", "insert", "delete", "duplicate", "truncate", "exif", "exif_special")
SPECIAL = (0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF)


def mutate(data: bytes, exif: tuple[int, int] | None, ops) -> bytes:
    buf = bytearray(data)
    for kind, where, value, length in ops:
        if not buf:
            break
        if kind.startswith("exif"):
            if exif is None or exif[1] > len(buf):
                kind = kind[5:] or "set"  # no EXIF block left: an ordinary overwrite
            else:
                start, end = exif
                buf[start + where % (end - start)] = SPECIAL[value % len(SPECIAL)] if kind == "exif_special" else value
                continue
        at = where % len(buf)
        if kind == "flip":
            buf[at] ^= 1 << (value % 8)
        elif kind == "set":
            buf[at] = value
        elif kind == "special":
            buf[at] = SPECIAL[value % len(SPECIAL)]
        elif kind == "insert":
            buf[at:at] = bytes([value]) * length
        elif kind == "delete":
            del buf[at:at + length]
        elif kind == "duplicate":
            buf[at:at] = buf[max(0, at - length):at]
        elif kind == "truncate":
            del buf[at:]
    return bytes(buf)


operations = st.lists(
    st.tuples(st.sampled_from(KINDS), st.integers(0, 1 << 20), st.integers(0, 255), st.integers(1, 64)),
    min_size=1, max_size=6,
)


@settings(max_examples=HYPOTHESIS_EXAMPLES, derandomize=True, database=None, deadline=timedelta(seconds=5),
          suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(CORPUS)), ops=operations)
def test_mutated_files_decode_or_fail_typed(corpus, name, ops):
    data, exif = corpus[name]
    CASES["hypothesis"] += 1
    check(mutate(data, exif, ops))


EXIF_TAGS = (0x0112, 0x010F, 0x0110, 0x011A, 0x011B, 0x0128, 0x0131, 0x0132, 0x013B, 0x8769, 0x8825, 0xA005,
             0x9003, 0x920A, 0x927C, 0x0001, 0x0002)


def tiff_ifd(orientation, entries, extra: bytes, big_endian: bool) -> bytes:
    """A TIFF header and one IFD: an orientation entry (type, count, value), then (tag, type, count,
    4 value bytes) entries, then ``extra`` bytes."""
    e = ">" if big_endian else "<"
    kind, count, value = orientation
    entries = [(0x0112, kind, count, struct.pack(e + "HH", value, 0)), *entries]
    out = (b"MM\x00*" if big_endian else b"II*\x00") + struct.pack(e + "IH", 8, len(entries))
    for tag, kind, count, value in entries:
        out += struct.pack(e + "HHI", tag, kind, count) + value
    return out + struct.pack(e + "I", 0) + extra


exif_blocks = st.builds(
    tiff_ifd,
    st.tuples(st.sampled_from([3, 3, 4, 2, 5, 7, 13]), st.sampled_from([1, 1, 0, 2, 9]), st.integers(0, 9)),
    st.lists(st.tuples(st.one_of(st.sampled_from(EXIF_TAGS), st.integers(0, 0xFFFF)), st.integers(0, 14),
                       st.one_of(st.integers(0, 8), st.integers(0, 2**32 - 1)), st.binary(min_size=4, max_size=4)),
             max_size=6),
    st.binary(max_size=48),
    st.booleans(),
)


@settings(max_examples=EXIF_EXAMPLES, derandomize=True, database=None, deadline=timedelta(seconds=5),
          suppress_health_check=[HealthCheck.too_slow])
@given(fmt=st.sampled_from(["JPEG", "PNG", "WEBP"]), block=exif_blocks)
def test_made_up_exif_decodes_or_fails_typed(corpus, fmt, block):
    """EXIF blocks of an orientation (of any type, count and value) next to arbitrary tags, types, counts, values."""
    face = Image.open(io.BytesIO(corpus["png"][0]))
    buf = io.BytesIO()
    face.save(buf, format=fmt, exif=(b"Exif\x00\x00" if fmt == "JPEG" else b"") + block)
    CASES["exif"] += 1
    check(buf.getvalue())


def test_seeded_mutation_loop(corpus):
    """Many cheap random mutations per file, fixed seed: the same cases on every run."""
    rng = random.Random(LOOP_SEED)
    names = sorted(corpus)
    for i in range(LOOP_CASES):
        data, exif = corpus[names[i % len(names)]]
        ops = [(rng.choice(KINDS), rng.randrange(1 << 20), rng.randrange(256), rng.randint(1, 64))
               for _ in range(rng.randint(1, 4))]
        CASES["loop"] += 1
        check(mutate(data, exif, ops))


def test_truncation_flip_and_exif_sweeps(corpus):
    """Every file cut at 128 points and inverted at 128 bytes; every EXIF byte set to 0x00, 0xFF and 0x80."""
    for data, exif in corpus.values():
        points = sorted({len(data) * k // 128 for k in range(128)})
        for at in points:
            CASES["sweep"] += 2
            check(data[:at])
            check(data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:])
        if exif is not None:
            for at in range(*exif):
                for value in (0x00, 0xFF, 0x80):
                    CASES["sweep"] += 1
                    check(data[:at] + bytes([value]) + data[at + 1:])


def test_zz_report_case_counts(corpus):
    """Runs last in this module: prints how many cases each fuzzer ran (see -s or -rA)."""
    print(f"fuzz cases: {CASES} total={sum(CASES.values())}")
