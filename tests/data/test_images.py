"""Tests of image decoding, intensity handling, geometry and quantisation (sibnet.data.images)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageFile
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import JPEGLosslessSV1

from sibnet.data.images import (
    INTENSITY_MODES,
    RESIZE_MODES,
    ImageError,
    fit_image,
    fit_mask,
    load_image,
    read_image,
    read_mask,
    to_uint8,
)
from tests.data.image_files import (
    corrupt,
    radiograph,
    truncate,
    write_dicom,
    write_jpeg,
    write_mask_png,
    write_png,
    write_rgb_png,
)

SIZE = (224, 224)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return radiograph(390, 320, seed=3)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, image: np.ndarray) -> dict[str, Path]:
    """One file of each kind, written once (tests that damage a file work on a copy)."""
    folder = tmp_path_factory.mktemp("images")
    stored = np.rint(image * 4095).astype(np.uint16)
    return {
        "png8": write_png(folder / "a.png", image),
        "png16": write_png(folder / "b.png", image, bits=16),
        "jpeg": write_jpeg(folder / "c.jpg", image),
        "dicom": write_dicom(folder / "d.dcm", stored, bits=12, window=(2000.0, 3000.0)),
    }


def copy(src: Path, folder: Path, name: str | None = None) -> Path:
    return Path(shutil.copy(src, folder / (name or src.name)))


def edit_dicom(path: Path, change) -> Path:
    """Rewrite a DICOM file after ``change(ds)``."""
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path, enforce_file_format=True)
    return path


# --------------------------------------------------------------------------- PNG / JPEG


def test_png8_round_trip_is_exact(files: dict[str, Path], image: np.ndarray) -> None:
    pixels, _ = read_image(files["png8"])
    assert pixels.shape == image.shape
    assert pixels.dtype == np.float32
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0
    expected = np.rint(image * 255).astype(np.uint8)
    np.testing.assert_array_equal(to_uint8(pixels), expected)
    np.testing.assert_array_equal(pixels, expected.astype(np.float32) / np.float32(255))


def test_png16_values_are_preserved(files: dict[str, Path], image: np.ndarray) -> None:
    pixels, _ = read_image(files["png16"])
    stored = np.rint(image * 65535)
    assert pixels.dtype == np.float32
    np.testing.assert_allclose(pixels, stored / 65535, rtol=0, atol=1e-7)
    # 16-bit precision is kept: far finer than 8-bit steps
    assert len(np.unique(pixels)) > 1000


def test_png16_twelve_bit_data_is_dark_under_dtype_and_stretched_by_minmax(
    tmp_path: Path, image: np.ndarray
) -> None:
    path = write_png(tmp_path / "twelve.png", image * (4095 / 65535), bits=16)
    stored = np.rint(image * 4095)
    dark, _ = read_image(path)
    assert dark.max() <= 4095 / 65535 + 1e-7
    np.testing.assert_allclose(dark, stored / 65535, atol=1e-7)
    stretched, _ = read_image(path, intensity="minmax")
    assert stretched.dtype == np.float32
    assert stretched.min() == 0.0 and stretched.max() == 1.0
    expected = (stored - stored.min()) / (stored.max() - stored.min())
    np.testing.assert_allclose(stretched, expected, atol=1e-6)


def test_minmax_on_8bit_and_constant_images(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(0.2, 0.6, 50), (10, 1))
    pixels, _ = read_image(write_png(tmp_path / "ramp.png", ramp), intensity="minmax")
    assert pixels.min() == 0.0 and pixels.max() == 1.0
    constant = np.full((12, 7), 0.4)
    for path in (
        write_png(tmp_path / "flat.png", constant),
        write_png(tmp_path / "flat16.png", constant, bits=16),
    ):
        flat, _ = read_image(path, intensity="minmax")
        assert flat.shape == (12, 7) and flat.dtype == np.float32
        assert not flat.any()


def test_jpeg_is_close_to_its_source(files: dict[str, Path], image: np.ndarray) -> None:
    pixels, _ = read_image(files["jpeg"])
    assert pixels.shape == image.shape and pixels.dtype == np.float32
    # quality 90 keeps the structure; the per-pixel noise (sigma 0.02) is partly smoothed away
    assert float(np.mean(np.abs(pixels - image))) < 0.02
    assert np.corrcoef(pixels.ravel(), image.ravel())[0, 1] > 0.98
    blocks = (pixels - image).reshape(39, 10, 32, 10).mean(axis=(1, 3))
    assert float(np.abs(blocks).max()) < 0.01


def test_rgb_png_is_converted_to_luma(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    pixels, _ = read_image(write_rgb_png(tmp_path / "rgb.png", rgb))
    assert pixels.shape == (20, 30)
    luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    # Pillow's fixed-point ITU-R 601-2 conversion: within one grey level of the exact luma
    assert np.max(np.abs(pixels * 255 - luma)) <= 1.0
    grey = np.repeat(rgb[..., :1], 3, axis=2)
    same, _ = read_image(write_rgb_png(tmp_path / "grey.png", grey))
    np.testing.assert_array_equal(to_uint8(same), rgb[..., 0])


def test_rgba_palette_and_bilevel_pngs(tmp_path: Path) -> None:
    grey = np.arange(12 * 16, dtype=np.uint8).reshape(12, 16)
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 7)])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    pixels, _ = read_image(tmp_path / "rgba.png")
    np.testing.assert_array_equal(to_uint8(pixels), grey)  # alpha is dropped

    Image.fromarray(np.dstack([grey] * 3)).convert("P").save(tmp_path / "p.png")
    palette, _ = read_image(tmp_path / "p.png")
    assert palette.shape == grey.shape
    expected = np.asarray(Image.open(tmp_path / "p.png").convert("L"))
    np.testing.assert_array_equal(to_uint8(palette), expected)

    bits = grey % 3 == 0
    Image.fromarray(bits).convert("1").save(tmp_path / "one.png")
    bilevel, _ = read_image(tmp_path / "one.png")
    np.testing.assert_array_equal(bilevel, bits.astype(np.float32))


# --------------------------------------------------------------------------- DICOM


def test_dicom_slope_intercept_without_window_is_min_max(tmp_path: Path) -> None:
    stored = np.array([[0, 10, 20], [30, 40, 100]], dtype=np.uint16)
    path = write_dicom(tmp_path / "r.dcm", stored, slope=2.5, intercept=-100.0)
    pixels, _ = read_image(path)
    values = stored * 2.5 - 100.0  # -100 .. 150
    np.testing.assert_allclose(pixels, (values + 100.0) / 250.0, atol=1e-6)
    assert pixels.dtype == np.float32
    assert pixels[0, 0] == 0.0 and pixels[1, 2] == 1.0


def test_dicom_window_follows_the_linear_formula(tmp_path: Path) -> None:
    # Slope 0.5 gives half-integer modality values, so the window's edges can be hit exactly.
    # c = 100, w = 11: x <= 94.5 → 0, x > 104.5 → 1, else (x - 99.5) / 10 + 0.5.
    stored = np.array([[100, 189, 190, 199], [200, 208, 209, 210]], dtype=np.uint16)
    path = write_dicom(tmp_path / "w.dcm", stored, slope=0.5, window=(100.0, 11.0))
    pixels, _ = read_image(path)
    x = stored * 0.5  # 50, 94.5, 95, 99.5, 100, 104, 104.5, 105
    expected = np.where(x <= 94.5, 0.0, np.where(x > 104.5, 1.0, (x - 99.5) / 10 + 0.5))
    np.testing.assert_allclose(pixels, expected, atol=1e-6)
    # below, at the lower edge, just inside, centre, upper edge, above
    assert pixels[0, 0] == 0.0 and pixels[0, 1] == 0.0
    assert pixels[0, 2] == pytest.approx(0.05, abs=1e-6)
    assert pixels[0, 3] == pytest.approx(0.5, abs=1e-6)
    assert pixels[1, 2] == pytest.approx(1.0, abs=1e-6) and pixels[1, 3] == 1.0


def test_dicom_window_uses_rescaled_values_and_signed_pixels(tmp_path: Path) -> None:
    stored = np.array([[-1000, -10, 0], [10, 500, 2000]], dtype=np.int16)
    path = write_dicom(tmp_path / "s.dcm", stored, slope=2.0, intercept=20.0, window=(40.0, 400.0))
    pixels, _ = read_image(path)
    x = stored * 2.0 + 20.0  # -1980, 0, 20, 40, 1020, 4020
    low, high = 40 - 0.5 - 399 / 2, 40 - 0.5 + 399 / 2
    expected = np.where(x <= low, 0.0, np.where(x > high, 1.0, (x - 39.5) / 399 + 0.5))
    np.testing.assert_allclose(pixels, expected, atol=1e-6)
    assert pixels[1, 0] == pytest.approx((40 - 39.5) / 399 + 0.5, abs=1e-6)


def test_dicom_multivalued_window_uses_the_first_value(tmp_path: Path) -> None:
    stored = np.arange(0, 200, 10, dtype=np.uint16).reshape(4, 5)
    path = write_dicom(tmp_path / "m.dcm", stored, window=(100.0, 101.0))
    expected, _ = read_image(path)

    def two_windows(ds: Dataset) -> None:
        ds.WindowCenter = [100, 20]
        ds.WindowWidth = [101, 5]

    pixels, _ = read_image(edit_dicom(path, two_windows))
    np.testing.assert_array_equal(pixels, expected)
    assert 0.0 < pixels[2, 0] < 1.0  # value 100 lies inside the first window


def test_dicom_monochrome1_is_inverted(tmp_path: Path) -> None:
    stored = np.array([[0, 50, 100], [150, 200, 400]], dtype=np.uint16)
    for window in (None, (150.0, 201.0)):
        normal, _ = read_image(write_dicom(tmp_path / "m2.dcm", stored, window=window))
        inverted, _ = read_image(
            write_dicom(tmp_path / "m1.dcm", stored, window=window, photometric="MONOCHROME1")
        )
        np.testing.assert_allclose(inverted, 1.0 - normal, atol=1e-7)
    assert inverted[0, 0] == 1.0 and inverted[1, 2] == 0.0


def test_dicom_voi_lut_sequence_is_applied_then_min_max(tmp_path: Path) -> None:
    stored = np.array([[0, 1, 2, 3]], dtype=np.uint16)
    path = write_dicom(tmp_path / "lut.dcm", stored)

    def add_lut(ds: Dataset) -> None:
        item = Dataset()
        item.LUTDescriptor = [4, 0, 16]
        item.add_new("LUTData", "US", [1000, 3000, 2000, 0])
        ds.VOILUTSequence = Sequence([item])

    pixels, _ = read_image(edit_dicom(path, add_lut))
    np.testing.assert_allclose(pixels, [[1 / 3, 1.0, 2 / 3, 0.0]], atol=1e-6)


def test_dicom_intensity_argument_does_not_apply(files: dict[str, Path]) -> None:
    a, _ = read_image(files["dicom"], intensity="dtype")
    b, _ = read_image(files["dicom"], intensity="minmax")
    np.testing.assert_array_equal(a, b)


def test_dicom_multiframe_and_colour_are_rejected(tmp_path: Path) -> None:
    stored = np.arange(12, dtype=np.uint16).reshape(3, 4)
    multi = write_dicom(tmp_path / "multi.dcm", stored)

    def two_frames(ds: Dataset) -> None:
        ds.NumberOfFrames = 2
        ds.PixelData = stored.tobytes() * 2

    with pytest.raises(ImageError, match="multi-frame"):
        read_image(edit_dicom(multi, two_frames))

    colour = write_dicom(tmp_path / "rgb.dcm", stored.astype(np.uint8), bits=8)

    def rgb(ds: Dataset) -> None:
        ds.SamplesPerPixel = 3
        ds.PlanarConfiguration = 0
        ds.PhotometricInterpretation = "RGB"
        ds.PixelData = np.repeat(stored.astype(np.uint8), 3).tobytes()

    with pytest.raises(ImageError, match=r"colour DICOM.*RGB"):
        read_image(edit_dicom(colour, rgb))


def test_dicom_without_decoder_names_the_transfer_syntax(tmp_path: Path) -> None:
    decoder = pydicom.pixels.get_decoder(JPEGLosslessSV1)
    if decoder.is_available:
        pytest.skip("a JPEG Lossless decoder is installed here")
    path = write_dicom(tmp_path / "jpeg-lossless.dcm", np.zeros((4, 4), dtype=np.uint16))

    def compress(ds: Dataset) -> None:
        ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
        ds.PixelData = encapsulate([b"\xff\xd8\xff\xc3" + bytes(40)])

    with pytest.raises(ImageError) as caught:
        read_image(edit_dicom(path, compress))
    message = str(caught.value)
    assert str(JPEGLosslessSV1) in message and "JPEG Lossless" in message
    assert "pylibjpeg" in message


def test_dicom_without_pixel_data_is_rejected(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "np.dcm", np.zeros((2, 2), dtype=np.uint16))
    with pytest.raises(ImageError, match="no pixel data"):
        read_image(edit_dicom(path, lambda ds: delattr(ds, "PixelData")))


# --------------------------------------------------------------------------- detection, errors


def test_format_is_detected_by_content(files: dict[str, Path], tmp_path: Path) -> None:
    for kind, wrong in (("png8", "x.jpg"), ("jpeg", "x.png"), ("dicom", "x.png")):
        expected, _ = read_image(files[kind])
        pixels, _ = read_image(copy(files[kind], tmp_path, wrong))
        np.testing.assert_array_equal(pixels, expected)
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n" * 20)
    with pytest.raises(ImageError, match=r"^not a PNG, JPEG or DICOM file$"):
        read_image(text)
    # a DICOM data set without the 128-byte preamble and "DICM" is not accepted
    raw = tmp_path / "raw.dcm"
    raw.write_bytes(files["dicom"].read_bytes()[132:])
    with pytest.raises(ImageError, match="not a PNG, JPEG or DICOM file"):
        read_image(raw)


def test_empty_missing_and_directory_paths(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match=r"^empty file$"):
        read_image(empty)
    with pytest.raises(ImageError, match=r"^file not found$"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match=r"^file not found$"):
        read_mask(tmp_path / "missing.png")
    with pytest.raises(ImageError):
        read_image(tmp_path)
    assert issubclass(ImageError, ValueError)


@pytest.mark.parametrize("kind", ["png8", "png16", "jpeg", "dicom"])
@pytest.mark.parametrize("keep", [0.002, 0.3, 0.6, 0.95])
def test_truncated_files_raise(
    files: dict[str, Path], tmp_path: Path, kind: str, keep: float
) -> None:
    path = truncate(copy(files[kind], tmp_path), keep)
    with pytest.raises(ImageError):
        read_image(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_mask_raises(tmp_path: Path) -> None:
    mask = radiograph(64, 48) > 0.5
    path = truncate(write_mask_png(tmp_path / "m.png", mask), 0.5)
    with pytest.raises(ImageError, match="truncated"):
        read_mask(path)


def test_corrupt_png_raises(files: dict[str, Path], tmp_path: Path) -> None:
    path = corrupt(copy(files["png8"], tmp_path))
    assert path.read_bytes() != files["png8"].read_bytes()
    with pytest.raises(ImageError, match="cannot decode PNG"):
        read_image(path)
    with pytest.raises(ImageError):
        read_mask(path)


def test_truncated_images_flag_set_elsewhere_is_refused(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        read_image(files["png8"])


def test_invalid_arguments_are_value_errors_not_image_errors(files: dict[str, Path]) -> None:
    for call in (
        lambda: read_image(files["png8"], intensity="percentile"),
        lambda: fit_image(np.zeros((4, 4), np.float32), (2, 2), "zoom"),
        lambda: fit_mask(np.zeros((4, 4), bool), (0, 2), "pad"),
        lambda: load_image(files["png8"], SIZE, "letterbox"),
    ):
        with pytest.raises(ValueError) as caught:
            call()
        assert not isinstance(caught.value, ImageError)
    assert RESIZE_MODES == ("pad", "stretch", "crop")
    assert INTENSITY_MODES == ("dtype", "minmax")


def test_sha256_is_the_hash_of_the_file_bytes(files: dict[str, Path], tmp_path: Path) -> None:
    for path in files.values():
        expected = hashlib.sha256(path.read_bytes()).hexdigest()
        assert read_image(path)[1] == expected
        assert read_mask(path)[1] == expected
        assert load_image(path, SIZE, "pad")[1] == expected


# --------------------------------------------------------------------------- masks


def test_read_mask_png_and_colour_masks(tmp_path: Path) -> None:
    mask = radiograph(40, 30, seed=5) > 0.5
    got, _ = read_mask(write_mask_png(tmp_path / "m.png", mask))
    assert got.dtype == np.bool_ and got.shape == mask.shape
    np.testing.assert_array_equal(got, mask)

    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[0, 0] = (0, 0, 1, 255)  # a faint blue pixel is foreground (its luma would be 0)
    rgba[1, 1] = (0, 0, 0, 255)  # opaque black: background
    rgba[2, 2] = (0, 0, 0, 0)  # transparent: alpha is ignored
    rgba[3, 4] = (9, 0, 0, 0)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    got, _ = read_mask(tmp_path / "rgba.png")
    expected = np.zeros((4, 5), dtype=bool)
    expected[0, 0] = expected[3, 4] = True
    np.testing.assert_array_equal(got, expected)

    sixteen = write_png(tmp_path / "m16.png", mask * (1 / 65535), bits=16)  # values 0 and 1
    np.testing.assert_array_equal(read_mask(sixteen)[0], mask)


def test_read_mask_dicom_uses_stored_values(tmp_path: Path) -> None:
    stored = np.array([[0, 1, 0], [5, 0, 0]], dtype=np.uint16)
    path = write_dicom(tmp_path / "m.dcm", stored, intercept=-1.0, photometric="MONOCHROME1")
    np.testing.assert_array_equal(read_mask(path)[0], stored != 0)


# --------------------------------------------------------------------------- geometry


def test_pad_letterboxes_a_tall_image() -> None:
    ones = np.ones((390, 320), dtype=np.float32)
    out = fit_image(ones, SIZE, "pad")
    assert out.shape == SIZE and out.dtype == np.float32
    # scale 224/390; width round(320 * 224 / 390) = round(183.79) = 184; left = (224 - 184) // 2
    left, width = 20, 184
    assert not out[:, :left].any() and not out[:, left + width :].any()
    np.testing.assert_allclose(out[:, left : left + width], 1.0, atol=1e-6)


def test_pad_letterboxes_a_wide_image() -> None:
    out = fit_image(np.ones((100, 300), dtype=np.float32), SIZE, "pad")
    # scale 224/300; height round(74.67) = 75; top = (224 - 75) // 2 = 74
    assert not out[:74].any() and not out[74 + 75 :].any()
    np.testing.assert_allclose(out[74 : 74 + 75], 1.0, atol=1e-6)


def test_crop_keeps_full_rows_and_cuts_the_centre() -> None:
    height, width = 390, 320
    rows = np.repeat(np.linspace(0.0, 1.0, height)[:, None], width, axis=1).astype(np.float32)
    cols = np.repeat(np.linspace(0.0, 1.0, width)[None, :], height, axis=0).astype(np.float32)
    # scale max(224/390, 224/320) = 0.7: scaled to 273 x 224, top = (273 - 224) // 2 = 24
    out = fit_image(cols, SIZE, "crop")
    assert out.shape == SIZE
    assert out[:, 0].max() < 0.01 and out[:, -1].min() > 0.99  # the full width is kept
    out = fit_image(rows, SIZE, "crop")
    scale = 273 / 390

    def source_row(i: int) -> float:
        return ((i + 0.5) / scale - 0.5) / (height - 1)

    assert out[0, 0] == pytest.approx(source_row(24), abs=2e-3)
    assert out[-1, 0] == pytest.approx(source_row(24 + 223), abs=2e-3)
    assert out.min() > 0.05 and out.max() < 0.95  # top and bottom were cut


def test_stretch_fills_the_target() -> None:
    out = fit_image(np.ones((390, 320), dtype=np.float32), (100, 150), "stretch")
    assert out.shape == (100, 150)
    np.testing.assert_allclose(out, 1.0, atol=1e-6)


@pytest.mark.parametrize("mode", RESIZE_MODES)
def test_fit_shapes_range_and_same_size_copy(mode: str, image: np.ndarray) -> None:
    src = image.astype(np.float32)
    for size in (SIZE, (64, 200), (500, 400), (1, 1)):
        out = fit_image(src, size, mode)
        assert out.shape == size and out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 1.0
        assert fit_mask(src > 0.5, size, mode).shape == size
    same = fit_image(src, src.shape, mode)
    np.testing.assert_array_equal(same, src)
    assert same is not src and not np.shares_memory(same, src)
    mask = src > 0.5
    np.testing.assert_array_equal(fit_mask(mask, mask.shape, mode), mask)


def test_upsampling_keeps_the_aspect_ratio() -> None:
    out = fit_image(np.ones((20, 10), dtype=np.float32), (100, 100), "pad")
    assert not out[:, :25].any() and not out[:, 75:].any()
    np.testing.assert_allclose(out[:, 25:75], 1.0, atol=1e-6)


@pytest.mark.parametrize("mode", RESIZE_MODES)
def test_mask_geometry_agrees_with_image(mode: str) -> None:
    height, width = 390, 320
    y, x = np.mgrid[0:height, 0:width]
    region = ((y - 170) / 120.0) ** 2 + ((x - 140) / 90.0) ** 2 <= 1.0
    region |= (y > 300) & (x > 250)
    two_level = np.where(region, 0.9, 0.2).astype(np.float32)
    fitted = fit_image(two_level, SIZE, mode)
    fitted_mask = fit_mask(two_level > 0.5, SIZE, mode)
    assert fitted_mask.dtype == np.bool_ and fitted_mask.shape == SIZE
    # the filter is linear, so image >= 0.2 + 0.7 * 0.5 is the mask up to float rounding
    from_image = fitted >= 0.55
    if mode == "pad":
        from_image &= fitted > 0  # the black border is not the background level
    mismatch = np.count_nonzero(from_image != fitted_mask)
    assert mismatch <= 10
    assert 0.1 < fitted_mask.mean() < 0.9
    if mode == "pad":
        assert not fitted_mask[:, :20].any() and not fitted_mask[:, 204:].any()


def test_fit_mask_accepts_integer_masks() -> None:
    mask = np.zeros((30, 20), dtype=np.uint8)
    mask[10:20, 5:15] = 255
    np.testing.assert_array_equal(
        fit_mask(mask, (60, 40), "stretch"), fit_mask(mask > 0, (60, 40), "stretch")
    )


# --------------------------------------------------------------------------- quantisation, API


def test_to_uint8_rounds_half_to_even_and_clips() -> None:
    values = np.array([-0.3, 0.0, 0.25, 0.5, 0.75, 1.0, 1.7], dtype=np.float64)
    # x * 255: -76.5, 0, 63.75, 127.5, 191.25, 255, 433.5
    np.testing.assert_array_equal(to_uint8(values), [0, 0, 64, 128, 191, 255, 255])
    halves = np.array([0.5, 1.5, 2.5, 3.5]) / 255  # float64: x * 255 is exactly k + 0.5
    assert list(np.rint(halves * 255)) == [0.0, 2.0, 2.0, 4.0]
    np.testing.assert_array_equal(to_uint8(halves), [0, 2, 2, 4])
    out = to_uint8(np.zeros((3, 4), dtype=np.float32))
    assert out.dtype == np.uint8 and out.shape == (3, 4)


@pytest.mark.parametrize("kind", ["png8", "png16", "jpeg", "dicom"])
@pytest.mark.parametrize("mode", RESIZE_MODES)
def test_load_image_equals_the_composed_steps(files: dict[str, Path], kind: str, mode: str) -> None:
    for intensity in INTENSITY_MODES:
        pixels, digest, original = load_image(files[kind], SIZE, mode, intensity)
        image, expected_digest = read_image(files[kind], intensity=intensity)
        assert pixels.dtype == np.uint8 and pixels.shape == SIZE
        np.testing.assert_array_equal(pixels, to_uint8(fit_image(image, SIZE, mode)))
        assert digest == expected_digest
        assert original == (390, 320)


def test_everything_is_deterministic(files: dict[str, Path]) -> None:
    for path in files.values():
        first = load_image(path, SIZE, "pad")
        second = load_image(path, SIZE, "pad")
        assert first[0].tobytes() == second[0].tobytes() and first[1:] == second[1:]
        a, _ = read_image(path)
        b, _ = read_image(path)
        assert a.tobytes() == b.tobytes()
        for mode in RESIZE_MODES:
            assert fit_image(a, SIZE, mode).tobytes() == fit_image(a, SIZE, mode).tobytes()
            m = a > 0.5
            assert fit_mask(m, SIZE, mode).tobytes() == fit_mask(m, SIZE, mode).tobytes()


def test_fixture_writers_are_deterministic(tmp_path: Path, image: np.ndarray) -> None:
    stored = np.rint(image * 1000).astype(np.uint16)
    for name, write in (
        ("a.png", lambda p: write_png(p, image)),
        ("b.png", lambda p: write_png(p, image, bits=16)),
        ("c.jpg", lambda p: write_jpeg(p, image)),
        ("d.dcm", lambda p: write_dicom(p, stored, window=(500.0, 800.0))),
    ):
        assert (
            write(tmp_path / "1" / name).read_bytes() == write(tmp_path / "2" / name).read_bytes()
        )


def test_module_imports_no_torch_or_other_sibnet_modules() -> None:
    code = (
        "import sys, sibnet.data.images; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'monai', 'pandas') "
        "or (m.startswith('sibnet') and m not in ('sibnet', 'sibnet.data', 'sibnet.data.images')));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
