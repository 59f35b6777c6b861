"""Decoding medical image files into fixed-size single-channel arrays.

This module is what the dataset adapters (CheXpert, generic folders) call, in parallel worker
processes started with ``spawn``; it therefore imports only numpy, Pillow and pydicom (no torch, no
other sibnet module), so that a worker starts quickly.

Pipeline and conventions
------------------------
``read_image`` / ``read_mask`` decode one file, ``fit_image`` / ``fit_mask`` bring it to the
target size, ``to_uint8`` quantises it for storage; ``load_image`` does all three in one call.
Every step is deterministic: the same bytes in give the same bytes out (Pillow's resampling and
numpy's arithmetic are exact functions of their inputs; nothing random, nothing threaded).

Reading
    The file is read once (``Path.read_bytes``); its SHA-256 (hex) is computed from those bytes
    and returned with the pixels, so the provenance hash always belongs to exactly the bytes that
    were decoded. Decoding works on an in-memory buffer.

Format detection
    By content, never by suffix: the PNG signature (``89 50 4E 47 0D 0A 1A 0A``), JPEG's SOI
    marker plus the next marker's ``FF`` (``FF D8 FF``), or DICOM's ``DICM`` magic at offset 128
    (a DICOM Part 10 file with its 128-byte preamble; only then is pydicom asked, with
    ``force=False``). Raw DICOM data sets without the preamble are not accepted. Anything else
    raises ``ImageError("not a PNG, JPEG or DICOM file")``; a zero-byte file raises
    ``ImageError("empty file")``, a missing one ``ImageError("file not found")``.

Errors
    ``ImageError`` (a ``ValueError``) means "this file cannot be used"; its message is the bare
    reason, the caller adds the path and row. Invalid *arguments* (an unknown mode) raise a plain
    ``ValueError``. Truncated and corrupt PNG/JPEG files are errors, never partially decoded
    images: ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` is never set (it must stay ``False``; the
    module refuses to decode if some other code set it), and ``Image.load()`` runs inside the
    ``try``. Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) is left as it is.

PNG and JPEG (Pillow)
    The pixels are used as stored: EXIF orientation, ICC profiles and gamma chunks are ignored.
    Modes: ``"L"`` (8-bit grey) → value / 255; ``"I;16"``, ``"I;16B"``, ``"I;16L"``, ``"I"``
    (16-bit grey PNG) → value / 65535; ``"1"`` → 0 or 1; every other mode (``RGB``, ``RGBA``,
    ``P``, ``LA``, ``PA``, ``CMYK``, ...) is converted by Pillow to ``"L"`` (ITU-R 601-2 luma,
    ``L = R*299/1000 + G*587/1000 + B*114/1000``; alpha is dropped) and then divided by 255.
    A 16-bit *colour* PNG is reduced to 8 bits per channel by Pillow before the luma conversion.

Intensity (PNG and JPEG only)
    ``intensity="dtype"`` (default) divides by the maximum of the storage type (255 or 65535),
    so the absolute grey levels of the file are kept. Note that 12-bit detector data stored in a
    16-bit PNG (values 0..4095) then looks very dark (at most 4095/65535 ≈ 0.06);
    ``intensity="minmax"`` is the remedy: it stretches each image's own minimum..maximum to
    0..1 (a constant image becomes all zeros). ``intensity`` does not apply to DICOM, whose
    intensities are defined by the file's own LUTs (below).

DICOM (pydicom)
    Only single-frame greyscale images (``SamplesPerPixel`` 1, ``MONOCHROME1``/``MONOCHROME2``)
    are accepted; multi-frame and colour files raise ``ImageError`` saying what they are. A
    compressed transfer syntax whose decoder is not installed raises ``ImageError`` naming the
    transfer syntax (name and UID) and the packages that would decode it (e.g. pylibjpeg with
    pylibjpeg-libjpeg, or python-gdcm). Any other exception from a damaged file (pydicom's
    ``InvalidDicomError``, a short read, a malformed element, too little pixel data) becomes an
    ``ImageError`` carrying the original message. Intensities:

    1. the modality LUT (``pydicom.pixels.apply_modality_lut``: ``RescaleSlope`` /
       ``RescaleIntercept``, or a Modality LUT Sequence);
    2. VOI: if ``WindowCenter`` and ``WindowWidth`` exist (the first value of each when
       multi-valued), the window is applied here, mapped to [0, 1], following
       ``VOILUTFunction`` (PS3.3 C.11.2.1.2 and C.11.2.1.3): ``LINEAR`` (the default) is, with
       centre c and width w,
       ``x <= c - 0.5 - (w-1)/2 → 0``, ``x > c - 0.5 + (w-1)/2 → 1``, otherwise
       ``(x - (c - 0.5)) / (w - 1) + 0.5``; ``LINEAR_EXACT`` is ``(x - c) / w + 0.5`` clipped to
       [0, 1]; ``SIGMOID`` is ``1 / (1 + exp(-4 (x - c) / w))``. A window with a width below
       1 (``LINEAR``) or not above 0 (the others) is invalid and ignored. Otherwise, if a VOI LUT
       Sequence exists, ``pydicom.pixels.apply_voi_lut`` maps the modality values (rounded to
       integers, the LUT's index) through its first LUT and the output is min-max scaled;
       otherwise the modality values are min-max scaled (a constant image → zeros);
    3. ``MONOCHROME1`` (bright = low values) is inverted, ``1 - x``, after the VOI step.

Masks
    ``read_mask`` decodes like ``read_image`` but keeps the stored values: a pixel is foreground
    when it is nonzero — in any colour channel for colour images (alpha is ignored; palette
    images are looked up in their palette first), in the stored value for DICOM (before any LUT).

Geometry (``fit_image`` / ``fit_mask``), target ``size = (h, w)`` from an (H, W) input
    ``"stretch"`` resizes to (h, w) directly (the aspect ratio is not kept).
    ``"pad"`` (letterbox) scales by ``s = min(h/H, w/W)``, keeping the aspect ratio; the scaled
    size is rounded half up (computed in integers, the limiting side is exactly h or w), the
    result is centred with ``top = (h - h') // 2``, ``left = (w - w') // 2`` and the border is
    0 (black; ``False`` for masks).
    ``"crop"`` scales by ``s = max(h/H, w/W)`` (same rounding) and cuts the centred (h, w)
    window out, ``top = (h' - h) // 2``, ``left = (w' - w) // 2``.
    Resampling is Pillow's ``resize`` in mode ``"F"`` (float32) with
    ``Image.Resampling.BILINEAR``, which is antialiased (its support grows with the reduction
    factor, so downsampling averages rather than aliases) and deterministic. Masks are resized as
    0/1 float32 with the same filter and geometry and thresholded at ``>= 0.5``, so an image and
    its mask stay aligned. An input that already has the target size is returned as an unchanged
    copy. The output is clipped to [0, 1].

Quantisation
    ``to_uint8`` is ``clip(rint(x * 255), 0, 255)`` (numpy's ``rint`` rounds half to even).
    ``load_image`` gives exactly ``to_uint8(fit_image(read_image(...)))``: it runs the same
    steps (there is no separate 8-bit resampling path, whose intermediate rounding would differ
    by up to one grey level).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pydicom
import pydicom.errors
import pydicom.pixels
from PIL import Image, ImageFile, UnidentifiedImageError
from pydicom.multival import MultiValue

__all__ = [
    "INTENSITY_MODES",
    "RESIZE_MODES",
    "ImageError",
    "fit_image",
    "fit_mask",
    "load_image",
    "read_image",
    "read_mask",
    "to_uint8",
]

RESIZE_MODES = ("pad", "stretch", "crop")
INTENSITY_MODES = ("dtype", "minmax")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8\xff"
_DICOM_MAGIC_OFFSET = 128
_DICOM_MAGIC = b"DICM"

_PIL_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    UnidentifiedImageError,
    Image.DecompressionBombError,
)
_GREY16_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class ImageError(ValueError):
    """The file cannot be used as an image/mask; the message is the reason (the caller adds path
    and row)."""


# --------------------------------------------------------------------------- reading


def _read_bytes(path: str | Path) -> tuple[bytes, str]:
    """The file's bytes and their SHA-256 hex; ``ImageError`` when it cannot be read or is
    empty."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except IsADirectoryError:
        raise ImageError("is a directory, not a file") from None
    except PermissionError:
        raise ImageError("permission denied") from None
    except OSError as error:
        raise ImageError(f"cannot read file: {error.strerror or error}") from None
    if not data:
        raise ImageError("empty file")
    return data, hashlib.sha256(data).hexdigest()


def _detect(data: bytes) -> str:
    """``"PNG"``, ``"JPEG"`` or ``"DICOM"`` from the content; ``ImageError`` otherwise."""
    if data.startswith(_PNG_SIGNATURE):
        return "PNG"
    if data.startswith(_JPEG_SOI):
        return "JPEG"
    magic_end = _DICOM_MAGIC_OFFSET + len(_DICOM_MAGIC)
    if data[_DICOM_MAGIC_OFFSET:magic_end] == _DICOM_MAGIC:
        return "DICOM"
    raise ImageError("not a PNG, JPEG or DICOM file")


def _open_pil(data: bytes, fmt: str) -> Image.Image:
    """Decode PNG/JPEG bytes fully (truncation and corruption are errors)."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True; sibnet refuses to decode truncated "
            "images silently; reset it to False"
        )
    try:
        image = Image.open(io.BytesIO(data), formats=[fmt])
        image.load()
    except _PIL_ERRORS as error:
        raise ImageError(f"cannot decode {fmt}: {_reason(error)}") from None
    return image


def _reason(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _open_dicom(data: bytes) -> pydicom.Dataset:
    """Parse a DICOM Part 10 file and check that it is a single-frame greyscale image."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=False)
    except pydicom.errors.InvalidDicomError as error:
        raise ImageError(f"invalid DICOM file: {_reason(error)}") from None
    except Exception as error:  # a damaged file can fail in many ways inside the parser
        raise ImageError(f"cannot parse DICOM file: {_reason(error)}") from None
    try:
        if (
            "PixelData" not in ds
            and "FloatPixelData" not in ds
            and "DoubleFloatPixelData" not in ds
        ):
            raise ImageError("DICOM file has no pixel data")
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            raise ImageError(
                f"multi-frame DICOM ({frames} frames); only single-frame images are supported"
            )
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
        if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
            raise ImageError(
                f"colour DICOM (PhotometricInterpretation {photometric or 'missing'}, "
                f"SamplesPerPixel {samples}); only greyscale MONOCHROME1/MONOCHROME2 is supported"
            )
    except ImageError:
        raise
    except Exception as error:
        raise ImageError(f"damaged DICOM header: {_reason(error)}") from None
    return ds


def _dicom_pixels(ds: pydicom.Dataset) -> np.ndarray:
    """The stored pixel values, (Rows, Columns); ``ImageError`` naming a missing decoder."""
    try:
        pixels = ds.pixel_array
    except Exception as error:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        if syntax is not None and getattr(syntax, "is_compressed", False):
            try:
                decoder = pydicom.pixels.get_decoder(syntax)
            except NotImplementedError:
                raise ImageError(
                    f"no pixel data decoder exists for the DICOM transfer syntax "
                    f"{syntax.name} ({syntax})"
                ) from None
            if not decoder.is_available:
                options = "; ".join(decoder.missing_dependencies) or "a suitable plugin"
                raise ImageError(
                    f"cannot decode DICOM transfer syntax {syntax.name} ({syntax}): no decoder "
                    f"is installed; install one of: {options} (e.g. pylibjpeg with its "
                    f"pylibjpeg-libjpeg/-openjpeg plugins, or python-gdcm)"
                ) from None
        raise ImageError(f"cannot decode DICOM pixel data: {_reason(error)}") from None
    pixels = np.asarray(pixels)
    if pixels.ndim != 2:
        raise ImageError(
            f"DICOM pixel data has shape {pixels.shape}; a single greyscale frame is required"
        )
    return pixels


def _first(value: object) -> float:
    """The first value of a possibly multi-valued DICOM number."""
    if isinstance(value, list | tuple | MultiValue):
        value = value[0]
    return float(value)


def _window(x: np.ndarray, center: float, width: float, function: str) -> np.ndarray | None:
    """The VOI window of PS3.3 C.11.2.1.2/3 mapped to [0, 1]; None for an invalid window."""
    if function == "SIGMOID":
        if not width > 0:
            return None
        return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    if function == "LINEAR_EXACT":
        if not width > 0:
            return None
        return np.clip((x - center) / width + 0.5, 0.0, 1.0)
    if not width >= 1:
        return None
    low = center - 0.5 - (width - 1) / 2
    high = center - 0.5 + (width - 1) / 2
    out = np.empty_like(x)
    below = x <= low
    above = x > high
    inside = ~(below | above)
    out[below] = 0.0
    out[above] = 1.0
    if width > 1:
        out[inside] = (x[inside] - (center - 0.5)) / (width - 1) + 0.5
    return np.clip(out, 0.0, 1.0)


def _minmax(x: np.ndarray) -> np.ndarray:
    """Stretch min..max to 0..1 (float64); a constant array → zeros."""
    x = np.asarray(x, dtype=np.float64)
    low = float(x.min())
    high = float(x.max())
    if not high > low:
        return np.zeros_like(x)
    return (x - low) / (high - low)


def _dicom_image(ds: pydicom.Dataset) -> np.ndarray:
    try:
        pixels = _dicom_pixels(ds)
        values = np.asarray(pydicom.pixels.apply_modality_lut(pixels, ds), dtype=np.float64)
        scaled = None
        if "WindowCenter" in ds and "WindowWidth" in ds:
            center = ds.WindowCenter
            width = ds.WindowWidth
            if center is not None and width is not None:
                function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
                scaled = _window(values, _first(center), _first(width), function)
        if scaled is None and "VOILUTSequence" in ds:
            # No (valid) window: the VOI LUT maps the modality values (rounded to the integers a
            # LUT is indexed by), PS3.3 C.11.2.1.1.
            lut_input = np.rint(values).astype(np.int64)
            scaled = _minmax(pydicom.pixels.apply_voi_lut(lut_input, ds, prefer_lut=True))
        if scaled is None:
            scaled = _minmax(values)
        if str(ds.PhotometricInterpretation).strip().upper() == "MONOCHROME1":
            scaled = 1.0 - scaled
    except ImageError:
        raise
    except Exception as error:
        raise ImageError(f"cannot apply the DICOM intensity transforms: {_reason(error)}") from None
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def _pil_image(image: Image.Image, intensity: str) -> np.ndarray:
    mode = image.mode
    if mode == "L":
        array = np.asarray(image)
        if intensity == "dtype":
            return array.astype(np.float32) / np.float32(255)
    elif mode in _GREY16_MODES:
        array = np.asarray(image)
        if intensity == "dtype":
            return np.clip(array.astype(np.float32) / np.float32(65535), 0.0, 1.0)
    elif mode == "1":
        array = np.asarray(image).astype(np.uint8)
        if intensity == "dtype":
            return array.astype(np.float32)
    else:
        array = np.asarray(image.convert("L"))
        if intensity == "dtype":
            return array.astype(np.float32) / np.float32(255)
    return _minmax(array).astype(np.float32)


def _check_intensity(intensity: str) -> None:
    if intensity not in INTENSITY_MODES:
        raise ValueError(f"intensity must be one of {INTENSITY_MODES}, got {intensity!r}")


def _decode(data: bytes, intensity: str) -> np.ndarray:
    fmt = _detect(data)
    if fmt == "DICOM":
        return _dicom_image(_open_dicom(data))
    return _pil_image(_open_pil(data, fmt), intensity)


def read_image(path: str | Path, *, intensity: str = "dtype") -> tuple[np.ndarray, str]:
    """Decode one image file (PNG, JPEG or DICOM, detected by content).

    Returns ``(image, sha256)``: ``image`` is (H, W) float32 with values in [0, 1]; ``sha256`` is
    the hex SHA-256 of the file's bytes. ``intensity`` ("dtype" or "minmax") applies to PNG and
    JPEG only (see the module docstring). Raises ``ImageError`` when the file cannot be used.
    """
    _check_intensity(intensity)
    data, digest = _read_bytes(path)
    return _decode(data, intensity), digest


def read_mask(path: str | Path) -> tuple[np.ndarray, str]:
    """Decode a mask file (PNG, or any format ``read_image`` accepts).

    Returns ``(mask, sha256)``: ``mask`` is (H, W) bool, True where the stored pixel is nonzero
    (in any colour channel, alpha ignored; DICOM: the stored value before any LUT); ``sha256`` is
    the hex SHA-256 of the file's bytes. Raises ``ImageError`` when the file cannot be used.
    """
    data, digest = _read_bytes(path)
    fmt = _detect(data)
    if fmt == "DICOM":
        ds = _open_dicom(data)
        try:
            mask = _dicom_pixels(ds) != 0
        except ImageError:
            raise
        except Exception as error:
            raise ImageError(f"cannot decode DICOM pixel data: {_reason(error)}") from None
        return np.ascontiguousarray(mask), digest
    image = _open_pil(data, fmt)
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    array = np.asarray(image)
    if array.ndim == 3:
        bands = image.getbands()
        keep = [i for i, band in enumerate(bands) if band != "A"]
        array = array[..., keep]
        mask = np.any(array != 0, axis=-1)
    else:
        mask = array != 0
    return np.ascontiguousarray(mask), digest


# --------------------------------------------------------------------------- geometry


def _check_fit(shape: tuple[int, ...], size: tuple[int, int], mode: str) -> tuple[int, int]:
    if mode not in RESIZE_MODES:
        raise ValueError(f"mode must be one of {RESIZE_MODES}, got {mode!r}")
    if len(shape) != 2:
        raise ValueError(f"expected a 2-D (H, W) array, got shape {shape}")
    if shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"cannot resize an empty array of shape {shape}")
    h, w = (int(v) for v in size)
    if h < 1 or w < 1:
        raise ValueError(f"size must be two positive integers, got {size}")
    return h, w


def _round_half_up(numerator: int, denominator: int) -> int:
    """round(numerator / denominator), halves up, in exact integer arithmetic."""
    return (2 * numerator + denominator) // (2 * denominator)


def _geometry(
    height: int, width: int, h: int, w: int, mode: str
) -> tuple[tuple[int, int], tuple[int, int]]:
    """For an (H, W) input and target (h, w): the scaled size (h', w') and the offset (top, left)
    — of the scaled image inside the canvas for "pad", of the kept window for "crop"."""
    if mode == "stretch":
        return (h, w), (0, 0)
    height_limits = h * width <= w * height  # h/H <= w/W: the height is the tighter side
    if mode == "pad":
        if height_limits:
            scaled = (h, min(w, max(1, _round_half_up(width * h, height))))
        else:
            scaled = (min(h, max(1, _round_half_up(height * w, width))), w)
        return scaled, ((h - scaled[0]) // 2, (w - scaled[1]) // 2)
    if height_limits:  # crop: scale by the larger factor w/W
        scaled = (max(h, _round_half_up(height * w, width)), w)
    else:
        scaled = (h, max(w, _round_half_up(width * h, height)))
    return scaled, ((scaled[0] - h) // 2, (scaled[1] - w) // 2)


def _resize_float(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pillow mode-"F" bilinear (antialiased) resize of a float32 (H, W) array to (h, w)."""
    if array.shape == size:
        return array.copy()
    image = Image.fromarray(np.ascontiguousarray(array, dtype=np.float32))
    resized = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def _fit(array: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    h, w = _check_fit(array.shape, size, mode)
    if array.shape == (h, w):
        return array.copy()
    scaled, (top, left) = _geometry(array.shape[0], array.shape[1], h, w, mode)
    resized = _resize_float(array, scaled)
    if mode == "stretch":
        return resized.copy() if not resized.flags.writeable else resized
    if mode == "pad":
        out = np.zeros((h, w), dtype=np.float32)
        out[top : top + scaled[0], left : left + scaled[1]] = resized
        return out
    return np.array(resized[top : top + h, left : left + w], dtype=np.float32, copy=True)


def fit_image(image: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """Bring an (H, W) float image in [0, 1] to ``size = (h, w)``.

    ``mode`` is "stretch", "pad" (letterbox, black border) or "crop" (centre crop); see the
    module docstring for the exact geometry. Returns (h, w) float32 in [0, 1], a new array.
    """
    array = np.asarray(image, dtype=np.float32)
    out = _fit(array, size, mode)
    return np.clip(out, 0.0, 1.0, out=out)


def fit_mask(mask: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """Bring an (H, W) bool mask to ``size = (h, w)`` with exactly the geometry of
    ``fit_image`` (resized as 0/1 float32 with the same filter, then ``>= 0.5``; padding is
    False). Returns (h, w) bool, a new array."""
    array = np.asarray(mask).astype(bool).astype(np.float32)
    return _fit(array, size, mode) >= 0.5


def to_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W) float in [0, 1] → (H, W) uint8: ``clip(rint(x * 255), 0, 255)`` (round half to
    even)."""
    array = np.asarray(image)
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
    return np.clip(np.rint(array * 255), 0, 255).astype(np.uint8)


def load_image(
    path: str | Path, size: tuple[int, int], mode: str, intensity: str = "dtype"
) -> tuple[np.ndarray, str, tuple[int, int]]:
    """Read, fit and quantise one image in one call.

    Returns ``(pixels, sha256, original)``: ``pixels`` is (h, w) uint8, identical to
    ``to_uint8(fit_image(read_image(path, intensity=intensity)[0], size, mode))``; ``sha256`` is
    the hex SHA-256 of the file's bytes; ``original`` is the decoded (H, W). Arguments are
    checked before the file is read; ``ImageError`` when the file cannot be used.
    """
    _check_intensity(intensity)
    if mode not in RESIZE_MODES:
        raise ValueError(f"mode must be one of {RESIZE_MODES}, got {mode!r}")
    image, digest = read_image(path, intensity=intensity)
    original = (int(image.shape[0]), int(image.shape[1]))
    return to_uint8(fit_image(image, size, mode)), digest, original
