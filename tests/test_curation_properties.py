"""Property-based tests (hypothesis): whatever a source holds, `deepeyes curate` ends without a
traceback, and every row read is either written out or quarantined with a reason.

Inputs drawn: sources of random bytes and of random lines; rows whose every field holds a random
JSON value of any type (as JSON Lines and as a JSON array, with random field mappings from the
command line); images of every pillow mode, many sizes, truncated or whole, with every kind of
EXIF state (none, each orientation, an invalid one, a broken header, random bytes). Each run goes
through the CLI's own code (`tests.curate_cli`)."""

from __future__ import annotations

import base64
import io
import json
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from curation.shards import read_table
from tests.curate_cli import assert_every_row_counted, curate

PROPERTY = settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

GOOD_ROW = {"question": "How many bars are taller than the red one?", "answer": "3", "category": "reasoning"}

json_scalars = st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)
FIELDS = ("id", "question", "answer", "images", "category", "answer_type", "choices", "meta")
# Values a field plausibly holds, so rows get past the first check often enough to reach the next.
PLAUSIBLE = {
    "question": st.sampled_from(["What is shown?", "Which is larger, A or B?", "", "  ", "\x00\u200b"]),
    "answer": st.sampled_from(["B", "42", "1,000", "\\frac{1}{2}", "a cat", "", "E"]),
    "category": st.sampled_from(["perception", "reasoning", "search", "color", "count", "", "Perception"]),
    "answer_type": st.sampled_from(["choice", "number", "math", "text", "boolean", ""]),
    "choices": st.sampled_from([["cat", "dog"], {"A": "x", "B": "y"}, [], ["A. one", "B. two", "C. three"]]),
    "images": st.sampled_from([[], "missing.png", ["img.png"], ["!!!"], ["img.png", "img.png"]]),
    "id": st.sampled_from(["x1", "x2", 7, ""]),
    "meta": st.sampled_from([{}, {"k": 1}, "{\"k\": 2}", "not json"]),
}


def rows_strategy():
    field = lambda name: st.one_of(PLAUSIBLE[name], json_values)  # noqa: E731
    row = st.fixed_dictionaries({}, optional={name: field(name) for name in FIELDS})
    extra = st.dictionaries(st.sampled_from(["label", "query", "kind"]), json_values, max_size=2)
    return st.lists(st.tuples(row, extra).map(lambda pair: {**pair[1], **pair[0]}), min_size=1, max_size=8)


def png_bytes(seed: int = 0) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


def write_folder(folder: Path) -> None:
    (folder / "img.png").write_bytes(png_bytes())


@PROPERTY
@given(chunks=st.lists(st.one_of(st.binary(max_size=120), st.sampled_from([json.dumps(GOOD_ROW).encode(), b"[1, 2]", b"{", b"\xff\xfe",
                                                                            b'{"question": "\\ud800?", "answer": "1", "category": "search"}']),
                                 json_values.map(lambda v: json.dumps(v).encode())), max_size=12),
       separator=st.sampled_from([b"\n", b"\r\n", b"\n\n"]), as_array=st.booleans())
def test_random_bytes_and_lines_never_crash_and_every_row_is_counted(chunks, separator, as_array):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_folder(folder)
        data = (b"[" + b",".join(chunks) + b"]") if as_array else separator.join(chunks)
        (folder / "src.jsonl").write_bytes(data)
        done = curate("--source", f"jsonl:{folder / 'src.jsonl'}", "--out", str(folder / "out"))
        if done.code == 0:
            assert_every_row_counted(folder / "out")
        else:  # a file that is not rows, or a source whose rows are all unusable: one line that says so
            assert done.code == 2 and "\n" not in done.error, done.error
            assert "neither JSON Lines nor a JSON array" in done.error or "holds one JSON object" in done.error \
                or "rows are unusable" in done.error
            if "rows are unusable" in done.error:
                assert_every_row_counted(folder / "out")


@PROPERTY
@given(rows=rows_strategy(), as_array=st.booleans(), mapping=st.fixed_dictionaries({}, optional={
    "fields.answer": st.sampled_from(["label", "answer", "query"]), "fields.category": st.sampled_from(["kind", "category"]),
    "category": st.sampled_from(["perception", "reasoning", "search"]), "category_map.color": st.sampled_from(["perception", "search"]),
    "category_map.count": st.just("reasoning"), "answer_type": st.sampled_from(["text", "number", "choice", "math"])}))
def test_random_json_in_every_field_never_crashes_and_every_row_is_counted(rows, as_array, mapping):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_folder(folder)
        rows = [*rows, GOOD_ROW]  # one usable row: the source as a whole is fine, so the run must succeed
        source = folder / ("src.json" if as_array else "src.jsonl")
        source.write_text(json.dumps(rows, indent=2) if as_array else "\n".join(json.dumps(r) for r in rows) + "\n")
        if mapping.get("fields.answer") not in (None, "answer") or mapping.get("fields.category") == "kind":
            rows_have = {"label", "kind", "query"}  # the good row must stay good under the mapping
            rows[-1] = {**GOOD_ROW, **{c: GOOD_ROW["answer"] if c != "kind" else "reasoning" for c in rows_have}}
            source.write_text(json.dumps(rows, indent=2) if as_array else "\n".join(json.dumps(r) for r in rows) + "\n")
        spec = ",".join([f"{'json' if as_array else 'jsonl'}:{source}", *(f"{k}={v}" for k, v in mapping.items())])
        done = curate("--source", spec, "--out", str(folder / "out"))
        assert done.code == 0, done.error
        seen = assert_every_row_counted(folder / "out", rows_in=len(rows))
        assert done.summary["counts"]["rows_in"] == len(rows) and done.summary["counts"]["rows_out"] == seen.rows_out >= 1
        for row in read_table(folder / "out").to_pylist():  # what goes out is usable downstream
            assert row["question"].strip() and row["answer"].strip() and row["category"] in ("perception", "reasoning", "search")
            json.loads(row["meta"])


# Every mode pillow can write to a file, with the formats that hold it.
MODE_FORMATS = {
    "1": ["PNG", "TIFF", "BMP"], "L": ["PNG", "JPEG", "TIFF", "WEBP", "GIF"], "P": ["PNG", "GIF", "TIFF", "BMP"],
    "RGB": ["PNG", "JPEG", "TIFF", "WEBP", "BMP"], "RGBA": ["PNG", "TIFF", "WEBP"], "CMYK": ["JPEG", "TIFF"], "YCbCr": ["TIFF"],
    "LAB": ["TIFF"], "I": ["TIFF"], "F": ["TIFF"], "LA": ["PNG", "TIFF"], "PA": ["TIFF"], "RGBX": ["TIFF"],
    "I;16": ["PNG", "TIFF"], "I;16B": ["PNG", "TIFF"], "I;16L": ["TIFF"], "HSV": ["WEBP"],
}
EXIF_STATES = ["none", "orientation", "bad_orientation", "broken_header", "random"]


@st.composite
def images(draw):
    mode = draw(st.sampled_from(sorted(MODE_FORMATS)))
    fmt = draw(st.sampled_from(MODE_FORMATS[mode]))
    size = (draw(st.integers(1, 90)), draw(st.integers(1, 90)))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    image = Image.frombytes(mode, size, rng.integers(0, 256, len(Image.new(mode, size).tobytes()), dtype=np.uint8).tobytes())
    exif_state = draw(st.sampled_from(EXIF_STATES))
    out = io.BytesIO()
    options = {}
    if exif_state in ("orientation", "bad_orientation") and fmt in ("PNG", "JPEG", "TIFF", "WEBP"):
        exif = Image.Exif()
        exif[0x0112] = draw(st.integers(1, 8)) if exif_state == "orientation" else draw(st.sampled_from([0, 9, 255, 65535]))
        options["exif"] = exif
    elif exif_state == "random" and fmt in ("PNG", "JPEG", "WEBP"):
        options["exif"] = draw(st.binary(min_size=1, max_size=64))
    image.save(out, format=fmt, **options)
    data = out.getvalue()
    if exif_state == "broken_header" and fmt == "PNG":
        data = with_chunk(data, b"eXIf", b"XXXX" + draw(st.binary(max_size=40)))
    cut = draw(st.one_of(st.none(), st.integers(0, max(0, len(data) - 1))))
    return {"mode": mode, "format": fmt, "size": size, "exif": exif_state, "truncated": cut is not None,
            "data": data if cut is None else data[:cut]}


def with_chunk(png: bytes, kind: bytes, payload: bytes) -> bytes:
    """A PNG with one more chunk right after IHDR."""
    import struct
    import zlib

    chunk = struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    return png[:33] + chunk + png[33:]


@PROPERTY
@given(drawn=st.lists(images(), min_size=1, max_size=5), as_files=st.booleans())
def test_images_of_every_mode_size_truncation_and_metadata_never_crash_and_whole_ones_are_kept(drawn, as_files):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = []
        for i, image in enumerate(drawn):
            if as_files:
                (folder / f"{i}.img.png").write_bytes(image["data"])
                ref = f"{i}.img.png"
            else:
                ref = base64.b64encode(image["data"]).decode()
            rows.append({"id": f"r{i}", "question": f"What is in picture number {i}?", "answer": str(i), "category": "perception",
                         "images": [ref]})
        rows.append({**GOOD_ROW, "id": "good"})
        (folder / "src.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        done = curate("--source", f"jsonl:{folder / 'src.jsonl'}", "--out", str(folder / "out"), "--config", str(_no_near_dup(folder)))
        assert done.code == 0, done.error
        seen = assert_every_row_counted(folder / "out", rows_in=len(rows))
        kept = {row["id"]: row for row in read_table(folder / "out").to_pylist()}
        reasons = {row["origin"]: row["reason"] for row in seen.quarantined}
        for i, image in enumerate(drawn):
            width, height = image["size"]
            usable = not image["truncated"] and min(width, height) >= 28 and max(width, height) / min(width, height) <= 200
            if usable:  # a whole image of an allowed size is kept, whatever its mode or metadata
                assert f"r{i}" in kept, (image["mode"], image["format"], image["exif"], reasons)
        for row in kept.values():  # and what is kept opens as 8-bit RGB with readable metadata
            for ref in row["images"]:
                with Image.open(io.BytesIO(ref["bytes"])) as opened:
                    assert opened.convert("RGB").mode == "RGB"
                    opened.getexif()


def _no_near_dup(folder: Path) -> Path:
    """Random pixels can look alike to a 64-bit perceptual hash: near-dup is not what is tested here."""
    config = folder / "curate.yaml"
    config.write_text("curate: {near_dup: {enabled: false}}\n")
    return config
