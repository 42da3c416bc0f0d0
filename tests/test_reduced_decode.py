"""--decode reduced: JPEGs decoded at 1/2, 1/4 or 1/8 scale where the recipe shrinks them anyway."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from conftest import fundus, photo, write_image

import imgpack
from imgpack.decode import decode
from imgpack.plugins import Preprocessor
from imgpack.preprocess.crop import CropDark
from imgpack.probe import ImageInfo
from imgpack.process import Job, preprocess_bytes, reduced_scale
from imgpack.recipe import build_chain


def jpeg(w: int, h: int) -> ImageInfo:
    return ImageInfo("jpeg", w, h, 3, 8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255 ** 2 / mse))


@pytest.mark.parametrize("info,steps,expected", [
    (jpeg(2000, 1500), ["resize:size=256"], 4),  # 500x375 still covers 256
    (jpeg(2000, 1500), ["resize:size=128"], 8),
    (jpeg(2000, 1500), ["resize:size=1024"], 1),  # 1000x750 would be enlarged
    (jpeg(2000, 1500), ["resize:size=256x160,mode=pad"], 8),  # the picture is fitted to 213x160
    (jpeg(2000, 1500), ["resize:size=224,mode=crop"], 4),  # the 1500x1500 centre at 1/4 is 375
    (ImageInfo("png", 2000, 1500, 3, 8), ["resize:size=256"], 1),  # only JPEG scales in its decoder
    (ImageInfo("jpeg", 2000, 1500, 3, 12), ["resize:size=256"], 1),
    (jpeg(2000, 1500), ["ben", "resize:size=256"], 1),  # ben needs the full image before the resize
    (jpeg(2000, 1500), ["crop_dark", "resize:size=256"], 1),  # the border is found on every pixel
    (jpeg(2000, 1500), ["resize:size=256", "crop_dark"], 4),  # after the resize it makes no difference
    (jpeg(2000, 1500), [], 1),  # no resize: every pixel is kept
    # stored 600x2000, upright 2000x600: 1/4 gives 500x150 (stored order would allow only 1/2)
    (ImageInfo("jpeg", 600, 2000, 3, 8, orientation=6), ["resize:size=300x100"], 4),
])
def test_scale_is_the_largest_that_the_resize_still_shrinks(info: ImageInfo, steps: list[str], expected: int) -> None:
    assert reduced_scale(build_chain(steps), info)[0] == expected


def test_reduced_is_close_to_full_and_full_is_bit_exact(tmp_path: Path) -> None:
    data = write_image(tmp_path / "big.jpg", photo(1600, 1200, 1), IMWRITE_JPEG_QUALITY=90).read_bytes()
    chain = tuple(build_chain(["resize:size=256"]))
    full = preprocess_bytes(data, Job(chain, (), decode="full"))
    reduced = preprocess_bytes(data, Job(chain, (), decode="reduced"))
    plain = cv2.resize(decode(data), (256, 256), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(full, plain)
    assert reduced.shape == full.shape
    assert not np.array_equal(reduced, full)  # it did decode at reduced scale
    assert psnr(reduced, full) > 35


@dataclass(frozen=True)
class CentreQuarter(Preprocessor):
    """A plugin step that commutes with downscaling and shrinks the image: keeps the centre quarter."""

    commutes_with_downscale = True
    name = "centre_quarter"

    def __call__(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        return image[h * 3 // 8:h * 5 // 8, w * 3 // 8:w * 5 // 8]


def test_one_worker_plans_each_header_for_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker keeps the planner's answer for each header it has seen (Job.planned): a 256x256 image gets
    the full decode, a 2048x2048 one 1/8, whichever came first; and it keeps at most _PLANNED of them."""
    import imgpack.process

    chain = tuple(build_chain(["resize:size=256"]))
    small = write_image(tmp_path / "s.jpg", photo(256, 256, 1), IMWRITE_JPEG_QUALITY=90).read_bytes()
    large = write_image(tmp_path / "l.jpg", photo(2048, 2048, 2), IMWRITE_JPEG_QUALITY=90).read_bytes()
    job = Job(chain, (), decode="reduced")
    for data in (small, large, small, large):
        assert np.array_equal(preprocess_bytes(data, job), preprocess_bytes(data, Job(chain, (), decode="reduced")))
    assert sorted(job.planned.values()) == [(1, -1), (8, 2)]
    monkeypatch.setattr(imgpack.process, "_PLANNED", 1)
    job = Job(chain, (), decode="reduced")
    preprocess_bytes(small, job)
    preprocess_bytes(large, job)
    assert list(job.planned.values()) == [(8, 2)]


def test_a_step_that_leaves_too_little_falls_back_to_a_full_decode(tmp_path: Path) -> None:
    """At 1/4 scale the centre quarter of 1600x1600 is 100 pixels, less than the 256 target: decoded again."""
    data = write_image(tmp_path / "big.jpg", photo(1600, 1600, 2), IMWRITE_JPEG_QUALITY=95).read_bytes()
    chain = (*build_chain([]), CentreQuarter(), *build_chain(["resize:size=256"])[2:])
    assert reduced_scale(chain, jpeg(1600, 1600))[0] == 4  # planned from the header...
    full = preprocess_bytes(data, Job(chain, (), decode="full"))
    np.testing.assert_array_equal(preprocess_bytes(data, Job(chain, (), decode="reduced")), full)  # ...undone


def test_the_aptos_recipe_stays_bit_exact(tmp_path: Path) -> None:
    """crop_dark first: the default (reduced) gives the reference pixels, a full decode."""
    data = write_image(tmp_path / "f.jpg", fundus(2000, 1500, 3), IMWRITE_JPEG_QUALITY=90).read_bytes()
    chain = tuple(build_chain(["crop_dark:tol=7", "resize:size=256,interpolation=linear", "ben:sigma=10"]))
    full = preprocess_bytes(data, Job(chain, (), decode="full"))
    np.testing.assert_array_equal(preprocess_bytes(data, Job(chain, (), decode="reduced")), full)
    rgb = decode(data)
    seed = cv2.resize(CropDark()(rgb), (256, 256))
    np.testing.assert_array_equal(full, cv2.addWeighted(seed, 4, cv2.GaussianBlur(seed, (0, 0), 10), -4, 128))


def test_the_output_records_the_decode_mode(tmp_path: Path) -> None:
    write_image(tmp_path / "src" / "a" / "x.jpg", photo(400, 300, 4))
    for mode in ("reduced", "full"):
        out = tmp_path / f"{mode}.h5"
        imgpack.convert(str(tmp_path / "src"), str(out), size=64, decode=mode, workers=0, progress="off")
        with h5py.File(out) as f:
            assert json.loads(f.attrs["recipe"])["decode"] == mode


@dataclass(frozen=True)
class Thumbnail(Preprocessor):
    """A plugin's own resize, not a subclass of the built-in one: it says what it needs through the contract."""

    name = "thumbnail"
    sets_size = True

    def shrinks_from(self, width: int, height: int) -> bool:
        return width >= 64 and height >= 64

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA)


def test_a_plugin_resize_gets_the_reduced_decode_through_the_contract(tmp_path: Path) -> None:
    chain = build_chain([Thumbnail()])
    assert [s.name for s in chain] == ["exif", "to_rgb", "thumbnail"]  # no --size resize added, exif and to_rgb are
    assert reduced_scale(chain, ImageInfo("jpeg", 2000, 1500, 3, 8)) == (8, 2)  # 250x188 still >= 64: 1/8
    assert reduced_scale(chain, ImageInfo("jpeg", 300, 300, 3, 8)) == (4, 2)  # 75x75 >= 64, 38x38 is not
    path = write_image(tmp_path / "p.jpg", photo(900, 700, 3))
    reduced = preprocess_bytes(path.read_bytes(), Job(tuple(chain), ()))
    full = preprocess_bytes(path.read_bytes(), Job(tuple(chain), (), decode="full"))
    builtin = preprocess_bytes(path.read_bytes(), Job(tuple(build_chain(size=64)), ()))
    assert reduced.shape == full.shape == (64, 64, 3) and not np.array_equal(reduced, full)
    np.testing.assert_array_equal(reduced, builtin)  # the 1/8-scale decode the built-in resize gets
    with pytest.raises(imgpack.UsageError, match="--size and a resize step both set the size"):
        build_chain([Thumbnail()], size=32)
