"""Writers of small image files for tests (PNG 8/16-bit, JPEG, mask PNG, DICOM) and damagers.

Shared by the tests of ``sibnet.data.images`` and of the dataset adapters. Every writer is
deterministic (same arguments → same bytes), creates the parent folder, and returns the path.
Images are (H, W) float arrays in [0, 1]; masks are (H, W) bool; DICOM pixels are the stored
integer values.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DSfloat

# Computed Radiography Image Storage (CR); DX for presentation is 1.2.840.10008.5.1.4.1.1.1.1.
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


def radiograph(height: int = 390, width: int = 320, seed: int = 0) -> np.ndarray:
    """A synthetic chest-radiograph-like image: (height, width) float64 in [0, 1].

    Smooth body silhouette, two darker lung fields, a bright mediastinum, faint ribs and mild
    Gaussian noise (sigma 0.02, from ``seed``); not constant, both dark and bright regions.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    v = (y + 0.5) / height * 2.0 - 1.0  # -1 (top) .. 1 (bottom)
    u = (x + 0.5) / width * 2.0 - 1.0  # -1 (left) .. 1 (right)
    body = 1.0 / (1.0 + np.exp(((u / 0.9) ** 2 + (v / 1.05) ** 2 - 1.0) * 12.0))
    lungs = np.zeros_like(u)
    for side in (-1.0, 1.0):
        d = ((u - side * 0.42) / 0.3) ** 2 + ((v + 0.05) / 0.62) ** 2
        lungs += np.exp(-(d**2) * 1.5)
    mediastinum = np.exp(-((u / 0.16) ** 2)) * (v > -0.6)
    ribs = 0.05 * np.sin(v * 28.0 + 3.0 * u**2) * lungs
    image = 0.12 + 0.65 * body - 0.35 * lungs + 0.15 * mediastinum + ribs
    image += rng.normal(0.0, 0.02, size=image.shape)
    return np.clip(image, 0.0, 1.0)


def _path(path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _quantise(image: np.ndarray, maximum: int, dtype: type) -> np.ndarray:
    array = np.asarray(image, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"expected an (H, W) image, got shape {array.shape}")
    return np.clip(np.rint(array * maximum), 0, maximum).astype(dtype)


def write_png(path: str | Path, image: np.ndarray, *, bits: int = 8) -> Path:
    """Write an (H, W) float image in [0, 1] as a greyscale PNG.

    ``bits=8``: mode "L", stored value ``rint(x * 255)``; ``bits=16``: a 16-bit greyscale PNG,
    stored value ``rint(x * 65535)`` (checked to read back as 16-bit, values intact).
    """
    path = _path(path)
    if bits == 8:
        Image.fromarray(_quantise(image, 255, np.uint8)).save(path, format="PNG")
    elif bits == 16:
        values = _quantise(image, 65535, np.uint16)
        Image.fromarray(values).save(path, format="PNG")
        with Image.open(path) as check:
            check.load()
            back = np.asarray(check)
            if check.mode not in ("I;16", "I;16B", "I") or not np.array_equal(back, values):
                raise AssertionError(f"16-bit PNG did not round-trip (mode {check.mode})")
    else:
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    return path


def write_rgb_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 array as an RGB PNG."""
    path = _path(path)
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(path, format="PNG")
    return path


def write_jpeg(path: str | Path, image: np.ndarray, *, quality: int = 90) -> Path:
    """Write an (H, W) float image in [0, 1] as an 8-bit greyscale JPEG of ``quality``."""
    path = _path(path)
    Image.fromarray(_quantise(image, 255, np.uint8)).save(path, format="JPEG", quality=quality)
    return path


def write_mask_png(path: str | Path, mask: np.ndarray) -> Path:
    """Write an (H, W) bool mask as an 8-bit greyscale PNG: True → 255, False → 0."""
    path = _path(path)
    array = np.asarray(mask, dtype=bool)
    if array.ndim != 2:
        raise ValueError(f"expected an (H, W) mask, got shape {array.shape}")
    Image.fromarray(array.astype(np.uint8) * np.uint8(255)).save(path, format="PNG")
    return path


def write_dicom(
    path: str | Path,
    pixels: np.ndarray,
    *,
    slope: float = 1.0,
    intercept: float = 0.0,
    window: tuple[float, float] | None = None,
    photometric: str = "MONOCHROME2",
    bits: int = 16,
) -> Path:
    """Write a single-frame greyscale DICOM Part 10 file (Explicit VR Little Endian, CR).

    ``pixels`` are the (H, W) stored values: unsigned (PixelRepresentation 0) unless the array
    has a signed dtype (PixelRepresentation 1, two's complement). ``bits`` is BitsStored
    (HighBit = bits - 1); BitsAllocated is 8 for ``bits <= 8`` else 16. RescaleSlope/Intercept
    are always written; ``window = (center, width)`` writes WindowCenter/WindowWidth. UIDs are
    derived from the content, so the same arguments give the same bytes.
    """
    path = _path(path)
    array = np.asarray(pixels)
    if array.ndim != 2 or array.dtype.kind not in "iu":
        raise ValueError(f"expected (H, W) integer stored values, got {array.dtype} {array.shape}")
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be in 1..16, got {bits}")
    signed = array.dtype.kind == "i"
    allocated = 8 if bits <= 8 else 16
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    if array.size and (array.min() < low or array.max() > high):
        raise ValueError(f"stored values outside the {bits}-bit range {low}..{high}")
    dtype = np.dtype(f"{'i' if signed else 'u'}{allocated // 8}").newbyteorder("<")
    stored = np.ascontiguousarray(array.astype(dtype))

    entropy = [
        hashlib.sha256(stored.tobytes()).hexdigest(),
        repr((stored.shape, slope, intercept, window, photometric, bits)),
    ]
    sop_instance = generate_uid(entropy_srcs=[*entropy, "instance"])

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CR_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_instance
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[*entropy, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[*entropy, "series"])
    ds.Modality = "CR"
    ds.PatientID = "SIBNET-TEST"
    ds.PatientName = "Test^Phantom"
    ds.BodyPartExamined = "CHEST"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = (int(n) for n in stored.shape)
    ds.BitsAllocated = allocated
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.RescaleSlope = DSfloat(slope, auto_format=True)
    ds.RescaleIntercept = DSfloat(intercept, auto_format=True)
    ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter = DSfloat(window[0], auto_format=True)
        ds.WindowWidth = DSfloat(window[1], auto_format=True)
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def truncate(path: str | Path, keep: float = 0.5) -> Path:
    """Cut the file in place to its first ``keep`` fraction of bytes (at least one byte)."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    return path


def corrupt(path: str | Path) -> Path:
    """Overwrite 64 bytes in the middle of the file in place with fixed garbage.

    For a PNG the middle lies in the IDAT data, so decoding fails (a zlib error or a chunk CRC
    mismatch); this is checked here with Pillow and an ``AssertionError`` raised otherwise.
    """
    path = Path(path)
    data = bytearray(path.read_bytes())
    garbage = np.random.default_rng(12345).integers(0, 256, size=64, dtype=np.uint8).tobytes()
    start = max(0, len(data) // 2 - len(garbage) // 2)
    data[start : start + len(garbage)] = garbage[: max(0, len(data) - start)]
    path.write_bytes(bytes(data))
    if bytes(data[:8]) == b"\x89PNG\r\n\x1a\n":
        try:
            with Image.open(io.BytesIO(bytes(data))) as image:
                image.load()
        except Exception:
            pass
        else:
            raise AssertionError(f"corrupt({path}) did not make the PNG undecodable")
    return path
