"""What the workers build for the writing process: HDF5 chunks, TFRecord features, and how they travel."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import REPO, needs, photo, two_classes, write_image

import imgpack
from imgpack.engines import Engine
from imgpack.engines.local import LocalEngine
from imgpack.formats import Encoded
from imgpack.process import InSlot, Job, process_into, slot_bytes, unpack
from imgpack.writers.h5chunk import ChunkEncoder, fletcher32, unfiltered

RNG = np.random.default_rng(7)
ARRAYS = {
    "zeros": np.zeros((5, 7, 3), np.uint8),
    "white": np.full((256, 256, 3), 255, np.uint8),  # every tile's row and column sums at their largest
    "noise 224": RNG.integers(0, 256, (224, 224, 3), dtype=np.uint8),
    "odd bytes": RNG.integers(0, 256, (3, 5, 1), dtype=np.uint8),
    "one byte": np.full((1, 1, 1), 1, np.uint8),
    "bright 601x401": RNG.integers(250, 256, (601, 401, 3), dtype=np.uint8),
    "over 2**16 words": RNG.integers(0, 256, (700, 500, 3), dtype=np.uint8),
    "photo": photo(320, 240, 3),
    "a strided view": photo(128, 96, 5)[::2, ::2],  # not contiguous: the chunk holds its pixels in C order
    # the small-chunk path (dot products, up to 8,192 words) at its largest terms and at its limit
    "white 64x64": np.full((64, 64, 3), 255, np.uint8),
    "noise 64x64": RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8),
    "white 8192 words": np.full((64, 64, 4), 255, np.uint8),
    "white 8193 words": np.full((1, 8193, 2), 255, np.uint8),
}


def libhdf5_chunk(image: np.ndarray, level: int | None, where: Path) -> bytes:
    """The chunk libhdf5 itself stores for ``image``, read back raw."""
    with h5py.File(where / "ref.h5", "w") as f:
        kw = {"compression": "gzip", "compression_opts": level} if level is not None else {}
        ds = f.create_dataset("x", shape=(1, *image.shape), chunks=(1, *image.shape), dtype=np.uint8,
                              fletcher32=True, **kw)
        ds[0] = image
        mask, data = ds.id.read_direct_chunk((0,) * (image.ndim + 1))
    assert mask == 0
    return bytes(data)


@pytest.mark.parametrize("level", [None, 1, 4, 9])
@pytest.mark.parametrize("name", list(ARRAYS))
def test_chunk_is_the_one_libhdf5_writes(name: str, level: int | None, tmp_path: Path) -> None:
    image = ARRAYS[name]
    assert ChunkEncoder(level)(image) == libhdf5_chunk(image, level, tmp_path)


@pytest.mark.parametrize("level", [None, 1])
@pytest.mark.parametrize("name", ["zeros", "noise 64x64", "a strided view", "over 2**16 words"])
def test_chunk_written_into_a_row_is_the_one_libhdf5_writes(name: str, level: int | None, tmp_path: Path) -> None:
    image = ARRAYS[name]
    expected = libhdf5_chunk(image, level, tmp_path)
    row = np.full(image.nbytes + 4096, 7, np.uint8)
    assert ChunkEncoder(level).into(image, row) == len(expected)
    assert row[:len(expected)].tobytes() == expected
    assert (row[len(expected):] == 7).all()  # nothing written past it


@pytest.mark.parametrize("level", [None, 1, 9])
@pytest.mark.parametrize("name", ["zeros", "odd bytes", "noise 64x64", "a strided view"])
def test_a_chunk_libhdf5_wrote_gives_its_pixels_back(name: str, level: int | None, tmp_path: Path) -> None:
    image = ARRAYS[name]
    found = unfiltered(libhdf5_chunk(image, level, tmp_path), image.shape, True, level is not None)
    assert found is not None and np.array_equal(found, image)


def test_a_chunk_that_is_not_its_pixels_gives_none() -> None:
    image = ARRAYS["noise 64x64"]
    deflated = ChunkEncoder(6)(image)
    assert unfiltered(deflated, (64, 64, 2), True, True) is None  # inflates to more than asked: stopped there
    assert unfiltered(deflated[:40] + deflated[-4:], image.shape, True, True) is None  # cut short
    assert unfiltered(b"\x00" * 30, image.shape, True, True) is None  # not zlib's
    assert unfiltered(ChunkEncoder(None)(image), (64, 64, 2), True, False) is None  # another size
    assert unfiltered(b"", image.shape, True, False) is None


def test_chunk_that_does_not_fit_its_row_is_not_written_there() -> None:
    image = ARRAYS["noise 64x64"]
    for level in (None, 9):  # (noise does not deflate: its chunk is a little longer than the pixels)
        row = np.zeros(image.nbytes + 3, np.uint8)
        assert ChunkEncoder(level).into(image, row) == -1
        assert not row.any()


def test_fletcher32_of_nothing_but_zeros_is_zero_and_of_a_multiple_of_65535_is_not() -> None:
    assert fletcher32(bytes(10)) == bytes(4)
    # two words 0xFFFF: the plain sums are multiples of 65535, which HDF5's folding keeps as 0xFFFF, not 0
    assert fletcher32(b"\xff\xff\xff\xff") == (0xFFFF << 16 | 0xFFFF).to_bytes(4, "little")


def test_gzip_level_0_chunks_read_back_as_the_pixels(tmp_path: Path) -> None:
    """zlib frames level 0's stored blocks as Python calls it, not byte for byte as libhdf5 does: same pixels."""
    image = ARRAYS["noise 224"]
    with h5py.File(tmp_path / "x.h5", "w") as f:
        ds = f.create_dataset("x", shape=(1, *image.shape), chunks=(1, *image.shape), dtype=np.uint8,
                              fletcher32=True, compression="gzip", compression_opts=0)
        ds.id.write_direct_chunk((0, 0, 0, 0), ChunkEncoder(0)(image))
        assert np.array_equal(ds[0], image)  # the checksum is checked on this read


class _Fixed:
    """An encoder whose output has a given length (picklable)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self, image: np.ndarray) -> bytes:
        return bytes([image.flat[0]]) * self.n


def test_encoded_bytes_travel_in_the_ring_when_they_fit_and_by_pipe_when_not(tmp_path: Path) -> None:
    from imgpack.decode import DEFAULT_MAX_PIXELS

    src = two_classes(tmp_path / "src", 2, (8, 8))
    paths = sorted(str(p) for p in src.rglob("*.png"))
    shape = (8, 8, 3)
    for n, travels in ((100, InSlot), (slot_bytes(Job((), shape, encoder=_Fixed(1))) + 1, Encoded)):
        job = Job((), shape, DEFAULT_MAX_PIXELS, encoder=_Fixed(n))
        slots = np.zeros((4, slot_bytes(job)), np.uint8)
        results = process_into(slots, 1, paths, job)
        assert results.errors == [None, None]
        assert all(isinstance(x, travels) for x in results.extras.values())
        _, extras = unpack(slots, 1, results, shape)
        for i, path in enumerate(paths):
            import cv2

            first = cv2.imread(path, cv2.IMREAD_COLOR_RGB).flat[0]
            assert bytes(extras[i].data) == bytes([first]) * n  # type: ignore[union-attr]
            assert extras[i].shape == shape  # type: ignore[union-attr]


def test_an_encoder_with_into_writes_its_chunk_in_the_ring_or_sends_it_when_it_does_not_fit(tmp_path: Path) -> None:
    src = two_classes(tmp_path / "src", 2, (8, 8))
    paths = sorted(str(p) for p in src.rglob("*.png"))
    shape = (8, 8, 3)
    job = Job((), shape, encoder=ChunkEncoder(None))
    for rows, travels in ((slot_bytes(job), InSlot), (8 * 8 * 3 + 3, Encoded)):  # (192 pixels + 4 bytes)
        slots = np.zeros((3, rows), np.uint8)
        results = process_into(slots, 1, paths, job)
        assert results.errors == [None, None]
        assert all(isinstance(x, travels) for x in results.extras.values())
        _, extras = unpack(slots, 1, results, shape)
        for i, path in enumerate(paths):
            import cv2

            expected = ChunkEncoder(None)(cv2.imread(path, cv2.IMREAD_COLOR_RGB))
            assert bytes(extras[i].data) == expected  # type: ignore[union-attr]


class _Broken(ChunkEncoder):
    """An encoder that fails on every image, writing in place or as bytes."""

    def into(self, image: np.ndarray, out: np.ndarray) -> int:
        raise ValueError("no room at the inn")

    def __call__(self, image: np.ndarray) -> bytes:
        raise ValueError("no room at the inn")


def test_an_encoder_that_fails_skips_the_image_saying_why(tmp_path: Path) -> None:
    src = two_classes(tmp_path / "src", 1, (8, 8))
    paths = sorted(str(p) for p in src.rglob("*.png"))
    job = Job((), (8, 8, 3), encoder=_Broken())
    results = process_into(np.zeros((len(paths), slot_bytes(job)), np.uint8), 0, paths, job)
    assert paths and results.errors == ["encoding failed: ValueError: no room at the inn"] * len(paths)


@pytest.mark.parametrize("output", ["o.h5", "o.tar"])  # one file; shard by shard
def test_json_reports_the_cpu_of_the_writing_process_and_of_the_workers(tmp_path: Path, output: str) -> None:
    src = two_classes(tmp_path / "src", 6, (32, 24))
    out = subprocess.run([sys.executable, "-m", "imgpack", "-q", "convert", str(src), "-o", str(tmp_path / output),
                          "--workers", "1", "--json"], capture_output=True, text=True, cwd=REPO, check=True)
    cpu = json.loads(out.stdout)["cpu_seconds"]
    assert cpu["parent"] > 0 and cpu["workers"] > 0 and cpu["workers"] >= cpu["notes"] >= 0


class _NotesTakeASecond(LocalEngine):
    """The local engine without a pool, as if each chunk's notes took a second of its workers' CPU."""

    def __init__(self) -> None:
        super().__init__(0)
        self.chunks = 0

    def run(self, job, paths, batch_size, progress=None):  # type: ignore[no-untyped-def]
        for chunk in super().run(job, paths, batch_size, progress):
            chunk.cpu, chunk.notes_cpu = 2.0, 1.0
            self.chunks += 1
            yield chunk


@pytest.mark.parametrize("output", ["o.h5", "o.tar"])  # noted as the chunks come; added up with each shard
def test_the_notes_cpu_of_every_chunk_is_counted(tmp_path: Path, output: str) -> None:
    """(The notes of a few small images take less than the millisecond --json rounds to: a run's own would not
    tell a count lost from a small one.)"""
    src = two_classes(tmp_path / "src", 6, (32, 24))
    engine = _NotesTakeASecond()
    res = imgpack.convert(str(src), str(tmp_path / output), engine=engine, batch_size=4, progress="off",
                          options={"shard_size": 5} if output == "o.tar" else None)
    assert engine.chunks >= 2 and res.cpu_seconds["notes"] == engine.chunks
    assert res.cpu_seconds["workers"] == 2 * engine.chunks


class _Wrapping(Engine):
    name = "wrapping"

    def __init__(self, inner: Engine) -> None:
        self.inner = inner

    def run(self, job, paths, batch_size, progress=None):  # type: ignore[no-untyped-def]
        return self.inner.run(job, paths, batch_size, progress)


@pytest.mark.parametrize("output", ["o.h5", "o.tar"])
def test_an_updates_workers_cpu_is_counted(tmp_path: Path, output: str) -> None:
    """An update copies the old output's images and converts the new ones: their workers' CPU, and of it the
    notes', still come back (the engine that mixes the two had passed on neither)."""
    src = two_classes(tmp_path / "src", 6, (32, 24))
    options = {"shard_size": 50} if output == "o.tar" else None
    imgpack.convert(str(src), str(tmp_path / output), workers=0, progress="off", options=options)
    for i in range(6):
        write_image(src / "a" / f"new{i}.png", photo(32, 24, 40 + i))
    inner = _NotesTakeASecond()
    res = imgpack.convert(str(src), str(tmp_path / output), engine=_Wrapping(inner), batch_size=4, progress="off",
                          update=True, options=options)  # (not a LocalEngine: 6 new images would get one of their own)
    assert res.update is not None and (res.update["added"], res.update["decoded"]) == (6, 6)
    assert inner.chunks >= 2 and res.cpu_seconds == {**res.cpu_seconds, "workers": 2.0 * inner.chunks,
                                                     "notes": 1.0 * inner.chunks}


# --------------------------------------------------------------------------- TFRecord features


def _expected(tf: object, image: np.ndarray, label: object, id_: str, encoding: str = "raw",
              annotation: str | None = None, classes: int | None = None) -> object:
    """The Example as TensorFlow's own API builds it."""
    ex = tf.train.Example()  # type: ignore[attr-defined]
    f = ex.features.feature
    f["height"].int64_list.value.append(image.shape[0])
    f["width"].int64_list.value.append(image.shape[1])
    f["channel"].int64_list.value.append(image.shape[2])
    f["label"].int64_list.value.extend(np.asarray(label).ravel().tolist())
    f["id"].bytes_list.value.append(id_.encode())
    if encoding == "raw":
        f["image_raw"].bytes_list.value.append(image.tobytes())
    else:
        f["format"].bytes_list.value.append(encoding.encode())
    if annotation is not None:
        f["annotation"].bytes_list.value.append(annotation.encode())
    if classes is not None:
        hot = np.zeros(classes, np.uint8)
        hot[int(label)] = 1  # type: ignore[call-overload]
        f["label_one_hot"].bytes_list.value.append(hot.tobytes())
    return ex


@pytest.mark.parametrize("case", ["raw", "negative label", "multi-label", "annotation and one-hot", "long id and note",
                                  "png", "jpeg"])
def test_records_parse_as_the_examples_tensorflow_builds(case: str) -> None:
    needs("tfrecord")
    from imgpack.writers.tfexample import ExampleEncoder, record, sample_features
    from imgpack.writers.tfrecord import import_tensorflow

    tf = import_tensorflow()
    image = photo(40, 30, 1)
    label: object = {"negative label": -1, "multi-label": np.array([0, 1, 1], np.uint8)}.get(case, 2)
    multi = case == "multi-label"
    encoding = case if case in ("png", "jpeg") else "raw"
    note, classes = ('{"box": [1, 2]}', 4) if case == "annotation and one-hot" else (None, None)
    id_ = "id-7"
    if case == "long id and note":  # lengths past one varint byte (127), in several places
        id_, note, label = "é" * 200, json.dumps({"text": "x" * 20000}), 300
    data = record(ExampleEncoder(encoding)(image), sample_features(label, id_, multi, note, classes))
    parsed = tf.train.Example.FromString(data)
    expected = _expected(tf, image, label, id_, encoding, note, classes)
    if encoding != "raw":
        encoded = parsed.features.feature["image_encoded"].bytes_list.value[0]
        decoded = tf.io.decode_image(encoded).numpy()
        assert decoded.shape == image.shape
        if encoding == "png":
            assert np.array_equal(decoded, image)
        del parsed.features.feature["image_encoded"]
    assert parsed == expected


def test_raw_entries_written_into_a_row_are_the_encoders_bytes() -> None:
    """(The entries are pure Python: no TensorFlow needed; the test above parses the encoder's bytes with it.)"""
    from imgpack.writers.tfexample import ExampleEncoder

    image = photo(40, 30, 1)[::-1]  # (not contiguous: copied in C order)
    expected = ExampleEncoder("raw")(image)
    row = np.full(len(expected) + 10, 7, np.uint8)
    assert ExampleEncoder("raw").into(image, row) == len(expected)
    assert row[:len(expected)].tobytes() == expected and (row[len(expected):] == 7).all()
    assert ExampleEncoder("raw").into(image, row[:len(expected) - 1]) == -1
    assert ExampleEncoder("png").into(image, row) == -1  # (encoded as bytes, then copied in)


def test_writing_tfrecords_does_not_import_tensorflow(tmp_path: Path) -> None:
    needs("tfrecord")
    src = two_classes(tmp_path / "src", 3, (16, 16))
    code = ("import sys, imgpack; imgpack.convert(sys.argv[1], sys.argv[2], workers=1); "
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(src), str(tmp_path / "o.tfrecord")],
                         capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"
    import tensorflow as tf

    files = sorted(str(p) for p in tmp_path.glob("o-*.tfrecord"))
    records = list(tf.data.TFRecordDataset(files))  # checks every record's framing CRCs
    assert len(records) == 3


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16383, 16384, 2**21, 2**63 - 1, -1, -300, -(2**63)])
def test_int64_entries_are_the_ones_tensorflow_serialises(value: int) -> None:
    """Varints of one, two (the fast path's edges) and more bytes, and negative ones (ten bytes)."""
    needs("tfrecord")
    from imgpack.writers.tfexample import int64_feature
    from imgpack.writers.tfrecord import import_tensorflow

    tf = import_tensorflow()
    feature = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
    assert int64_feature("k", [value]) == tf.train.Features(feature={"k": feature}).SerializeToString()


@pytest.mark.parametrize("shape", [(64, 64, 3), (1, 1, 3), (3, 5, 1), (7, 2, 4), (5, 9, 2), (9, 4)])
def test_the_png_encoder_is_lossless_for_opencv_and_pillow(shape: tuple[int, ...]) -> None:
    import io

    import cv2
    from PIL import Image

    from imgpack.process import encode_png

    rng = np.random.default_rng(len(shape) * 100 + shape[0])
    for image in (rng.integers(0, 256, shape, dtype=np.uint8), np.full(shape, 255, np.uint8),
                  np.zeros(shape, np.uint8)):
        png = encode_png(image)
        with Image.open(io.BytesIO(png)) as pil:
            assert np.array_equal(np.asarray(pil).reshape(shape), image)
        back = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
        if image.ndim == 3 and image.shape[2] >= 2:  # (OpenCV gives BGR, BGRA; grey and alpha as BGRA)
            back = back[..., {2: [0, 3], 3: [2, 1, 0], 4: [2, 1, 0, 3]}[image.shape[2]]]
        assert np.array_equal(back.reshape(shape), image)
    with pytest.raises(imgpack.ImageError, match="as PNG"):
        encode_png(np.zeros((4, 4, 3), np.uint16))
