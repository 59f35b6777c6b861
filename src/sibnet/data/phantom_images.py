"""Deterministic synthetic chest-radiograph phantoms with exact lesion and organ masks.

Every image is drawn analytically in a *canonical* body frame (x towards the image right, y
downwards, the body spanning roughly [-1, 1]); each pixel centre is mapped into that frame through
the image's own random scale / rotation / shift, so the image and all masks share exactly the same
geometry. Values follow the X-ray convention (bright = dense) and the radiological one: the
patient's left (``lung_left``, most of the heart) is on the image's right.

Image ``i`` draws its anatomy, textures and pixel noise from
``default_rng(SeedSequence([seed, i]))``, its labels and shortcut draw from
``SeedSequence([seed, i, 1])`` and the parameters of finding ``k`` (index in ``FINDINGS``) from
``SeedSequence([seed, i, 2, k])``: shards concatenate bit for bit, and an image's anatomy does
not depend on its labels or on ``lesion_contrast`` (except the heart size under cardiomegaly).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NoReturn

import numpy as np

FINDINGS: tuple[str, ...] = ("nodule", "effusion", "cardiomegaly", "consolidation", "pneumothorax")
ORGANS: tuple[str, ...] = ("lung_left", "lung_right", "heart")
MODES: tuple[str, ...] = ("multiclass", "multilabel")
DEFAULT_LESION_CONTRAST = 1.5  # relative lesion strength (1.0 = reference density 0.16)
DEFAULT_NOISE_STD = 0.04  # additive Gaussian pixel noise (image units)
_DENSITY_PER_CONTRAST = 0.16  # lesion density amplitude at lesion_contrast = 1
_MARKER_VALUE = 0.95

# Uniform ranges of the per-image anatomy / acquisition parameters, drawn in this order.
# fmt: off
_RANGES: dict[str, tuple[float, float]] = {
    "scale": (0.9, 1.04), "rot_deg": (-6.0, 6.0), "sx": (-0.06, 0.06), "sy": (-0.06, 0.06),
    "body_ax": (0.78, 0.92), "body_ay": (1.0, 1.2), "body_cy": (0.05, 0.2),
    "shoulder_y": (-0.86, -0.74), "lung_x": (0.38, 0.44), "lung_w": (0.26, 0.31),
    "apex_y": (-0.8, -0.68), "dome_y": (0.3, 0.48), "dome_h": (0.07, 0.15), "dome_dr": (0.0, 0.08),
    "egg": (0.25, 0.45), "heart_rho": (0.62, 0.78), "heart_tilt_deg": (25.0, 45.0),
    "heart_right": (0.24, 0.32), "knob_r": (0.05, 0.08), "rib_h": (0.12, 0.15),
    "rib_phase": (0.0, 1.0), "rib_amp": (0.07, 0.11), "rib_arch": (0.8, 1.1),
    "spine_w": (0.055, 0.075), "soft": (0.55, 0.68), "air": (0.4, 0.5), "tex_amp": (0.02, 0.05),
    "vessel_amp": (0.08, 0.13), "breast_l": (0.0, 0.1), "breast_r": (0.0, 0.1),
    "breast_y": (0.0, 0.2), "breast_rad": (0.25, 0.4), "gain": (0.85, 1.15),
    "offset": (-0.06, 0.06), "log_gamma": (-0.22, 0.22),
}
# fmt: on
Params = dict[str, float]


@dataclass(frozen=True)
class Phantom:
    """A batch of phantom radiographs.

    Attributes:
        images: ``(N, 1, H, W)`` float32 in ``[0, 1]``.
        labels: ``(N, C)`` int8, one-hot (multiclass) or multi-hot (multilabel).
        lesion_masks: ``(N, C, H, W)`` bool; empty where the class is absent (always for normal).
        organ_masks: ``(N, len(ORGANS), H, W)`` bool, in ``ORGANS`` order.
        shortcut: ``(N,)`` bool, whether the shortcut marker was drawn.
        classes: the ``C`` class names.
        organs: the organ names (``ORGANS``).
        indices: ``(N,)`` int64 global image indices ``start .. start + N - 1``.
    """

    images: np.ndarray
    labels: np.ndarray
    lesion_masks: np.ndarray
    organ_masks: np.ndarray
    shortcut: np.ndarray
    classes: tuple[str, ...]
    organs: tuple[str, ...]
    indices: np.ndarray


def _fail(name: str, value: object, accepted: str) -> NoReturn:
    raise ValueError(f"{name} must be {accepted}, got {value!r}")


def _is_int(value: object, low: int) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= low


def _check_labels_args(
    n: int, seed: int, mode: str, findings: Sequence[str], prevalence: float, start: int
) -> tuple[str, ...]:
    """Validate the arguments shared by ``phantom_labels`` and ``make_phantom``."""
    for name, value, low in (("n", n, 1), ("seed", seed, 0), ("start", start, 0)):
        if not _is_int(value, low):
            _fail(name, value, f"an integer >= {low}")
    if mode not in MODES:
        _fail("mode", mode, f"one of {MODES}")
    if isinstance(findings, str) or not findings:
        _fail("findings", findings, f"a non-empty sequence of names from {FINDINGS}")
    findings = tuple(findings)
    if any(f not in FINDINGS for f in findings) or len(set(findings)) != len(findings):
        _fail("findings", findings, f"distinct names from {FINDINGS}")
    if not 0.0 < prevalence < 1.0:
        _fail("prevalence", prevalence, "in the open interval (0, 1)")
    return findings


def _draw_labels(
    n: int, seed: int, mode: str, n_classes: int, prevalence: float, start: int
) -> tuple[np.ndarray, np.ndarray]:
    """Labels ``(n, C)`` int8 and shortcut uniforms ``(n,)`` from each image's label stream."""
    labels, u_marker = np.zeros((n, n_classes), dtype=np.int8), np.empty(n)
    for j in range(n):
        rng = np.random.default_rng(np.random.SeedSequence([seed, start + j, 1]))
        if mode == "multiclass":
            labels[j, rng.integers(n_classes)] = 1
        else:
            labels[j] = rng.random(n_classes) < prevalence
        u_marker[j] = rng.random()
    return labels, u_marker


def phantom_labels(
    n: int,
    seed: int,
    *,
    mode: str = "multiclass",
    findings: Sequence[str] = FINDINGS[:4],
    prevalence: float = 0.3,
    start: int = 0,
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Labels only (cheap, no rendering), identical to ``make_phantom(...).labels``.

    Returns:
        ``(labels, classes)``: labels ``(n, C)`` int8 and the ``C`` class names.
    """
    findings = _check_labels_args(n, seed, mode, findings, prevalence, start)
    classes = ("normal", *findings) if mode == "multiclass" else findings
    return _draw_labels(n, seed, mode, len(classes), prevalence, start)[0], classes


# ----------------------------------------------------------------------------- geometry


@lru_cache(maxsize=8)
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(u, v)``, each ``(size, size)``, spanning [-1, 1]."""
    c = 2.0 * (np.arange(size) + 0.5) / size - 1.0
    return np.broadcast_to(c[None, :], (size, size)), np.broadcast_to(c[:, None], (size, size))


@lru_cache(maxsize=32)
def _basis(size: int, knots: int) -> np.ndarray:
    """Row-normalised Gaussian interpolation basis ``(size, knots)``."""
    pos, centres = (np.arange(size) + 0.5) / size, np.linspace(-0.1, 1.1, knots)
    b = np.exp(-0.5 * ((pos[:, None] - centres[None, :]) / (0.9 * (centres[1] - centres[0]))) ** 2)
    return b / np.sqrt((b**2).sum(axis=1, keepdims=True))


def _smooth_field(rng: np.random.Generator, size: int, knots: int) -> np.ndarray:
    """Smooth, roughly unit-variance Gaussian random field ``(size, size)`` (filtered noise)."""
    b = _basis(size, knots)
    return b @ rng.standard_normal((knots, knots)) @ b.T


def _ramp(t: np.ndarray) -> np.ndarray:
    return np.clip(t, 0.0, 1.0)


def _band(d: np.ndarray, half: float) -> np.ndarray:
    """Smooth bump of half-width ``half`` around ``d == 0`` (zero outside)."""
    return np.sqrt(_ramp(1.0 - (d / half) ** 2))


def _ellipse(dx: np.ndarray, dy: np.ndarray, a: float, b: float, angle: float) -> np.ndarray:
    """Normalised squared radius of a rotated ellipse with semi-axes ``a``, ``b`` (< 1 inside)."""
    c, s = np.cos(angle), np.sin(angle)
    return ((c * dx + s * dy) / a) ** 2 + ((c * dy - s * dx) / b) ** 2


def _sample_anatomy(rng: np.random.Generator) -> Params:
    """Per-image anatomy / acquisition parameters (canonical units)."""
    p = {k: float(rng.uniform(lo, hi)) for k, (lo, hi) in _RANGES.items()}
    p["ctr"] = float(np.clip(rng.normal(0.45, 0.035), 0.37, 0.53))  # normal cardiothoracic ratio
    p["rot"], p["tilt"] = np.deg2rad(p["rot_deg"]), np.deg2rad(p["heart_tilt_deg"])
    p["lung_hy"] = (p["dome_y"] + p["dome_h"] + 0.12 - p["apex_y"]) / 2.0
    p["lung_cy"] = p["apex_y"] + p["lung_hy"]
    return p


def _diaphragm(x: np.ndarray, p: Params, side: int) -> np.ndarray:
    """Canonical ``y`` of the hemidiaphragm of ``side`` (+1: patient left, image right)."""
    xl = side * x - p["lung_x"]  # positive laterally of the lung centre
    q2 = ((xl + 0.1 * p["lung_w"]) / p["lung_w"]) ** 2
    dome = p["dome_y"] - (p["dome_dr"] if side < 0 else 0.0)
    return dome + p["dome_h"] * np.where(xl < -0.1 * p["lung_w"], np.minimum(q2, 0.35), q2)


def _heart_geometry(p: Params, ctr: float) -> None:
    """Size and place the tilted heart ellipse so that its width is ``ctr`` x thoracic width."""
    ext = ctr * (p["lung_x"] + p["lung_w"] * (1.0 + 0.6 * p["egg"]))  # half width
    c, s, rho = np.cos(p["tilt"]), np.sin(p["tilt"]), p["heart_rho"]
    a = ext / np.sqrt(c * c + (rho * s) ** 2)
    b = rho * a
    vext, y_off = np.sqrt((a * s) ** 2 + (b * c) ** 2), (a * a - b * b) * s * c / ext
    cx = 2 * ext * (0.5 - p["heart_right"])
    apex_y = float(_diaphragm(np.float64(cx + ext), p, 1))
    p.update(heart_a=a, heart_b=b, heart_cx=cx, heart_ext=ext, heart_yoff=y_off)
    p["heart_cy"] = apex_y - 0.3 * vext - y_off


def _heart(x: np.ndarray, y: np.ndarray, p: Params) -> np.ndarray:
    """Heart silhouette: tilted ellipse whose left border drops to the left hemidiaphragm."""
    dx, dy = x - p["heart_cx"], y - p["heart_cy"]
    e = _ellipse(dx, dy, p["heart_a"], p["heart_b"], p["tilt"])
    strip = (dy > p["heart_yoff"]) & (dx > 0) & (dx < p["heart_ext"])
    floor = np.minimum(_diaphragm(x, p, 1), p["dome_y"] + 0.35 * p["dome_h"])
    return ((e < 1.0) | strip) & (y < floor)


def _lung_shape(x: np.ndarray, y: np.ndarray, p: Params, side: int) -> tuple[np.ndarray, ...]:
    """Whole lung of ``side`` (egg-shaped, cut by the diaphragm): ``(inside, depth in [0, 1])``."""
    tt = (y - p["lung_cy"]) / p["lung_hy"]
    e = ((side * x - p["lung_x"]) / (p["lung_w"] * (1.0 + p["egg"] * tt))) ** 2 + tt**2
    return (e < 1.0) & (y < _diaphragm(x, p, side)), np.sqrt(_ramp(1.0 - e))


def _lung(x: np.ndarray, y: np.ndarray, p: Params, side: int) -> np.ndarray:
    """Visible lung field of ``side``: heart and aortic knob excluded."""
    inside = _lung_shape(x, y, p, side)[0] & ~_heart(x, y, p)
    if side > 0:
        kx, ky = p["lung_x"] - p["lung_w"] + 0.02, p["apex_y"] + 0.42
        inside &= (x - kx) ** 2 + (y - ky) ** 2 > p["knob_r"] ** 2
    return inside


def _canonical(p: Params, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Canonical coordinates ``(x, y)`` of the pixel centres, each ``(size, size)``."""
    u, v = _pixel_grid(size)
    c, s = np.cos(p["rot"]), np.sin(p["rot"])
    du, dv = u - p["sx"], v - p["sy"]
    return (c * du + s * dv) / p["scale"], (c * dv - s * du) / p["scale"]


# ----------------------------------------------------------------------------- anatomy


def _render_anatomy(p: Params, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> dict:
    """Density ``(H, W)`` of the normal chest, organ masks and the lung-vessel texture."""
    ax = np.abs(x)
    e_body = (ax / p["body_ax"]) ** 4 + np.abs((y - p["body_cy"]) / p["body_ay"]) ** 2.5
    body = (e_body < 1.0) & ((y > p["shoulder_y"] + 0.4 * (ax / p["body_ax"]) ** 3) | (ax < 0.2))
    d = 0.03 + body * p["soft"] * (0.55 + 0.45 * np.sqrt(_ramp(1.0 - e_body)))
    out = {
        "heart": _heart(x, y, p),
        "lung_left": _lung(x, y, p, 1),
        "lung_right": _lung(x, y, p, -1),
    }
    lungs = out["lung_left"] | out["lung_right"]
    depth = np.where(out["lung_left"], _lung_shape(x, y, p, 1)[1], _lung_shape(x, y, p, -1)[1])
    d += 0.05 * out["heart"] - lungs * p["air"] * (0.45 + 0.55 * depth)
    d += 0.08 * body * (ax < p["spine_w"]) * (0.75 + 0.25 * (np.cos(2 * np.pi * y / 0.11) > -0.5))
    d -= 0.1 * (ax < 0.035) * (y < p["apex_y"] + 0.32) * (y > p["shoulder_y"] - 0.15)  # trachea
    cage = (ax / (p["lung_x"] + 1.3 * p["lung_w"])) ** 2 + ((y - p["lung_cy"]) / p["lung_hy"]) ** 2
    yr = (y - p["apex_y"] + 0.1) / (p["dome_y"] - p["apex_y"])  # ribs widen towards the base
    phi = (yr + 0.5 * yr**2) / (1.5 * p["rib_h"]) + (0.35 * ax - p["rib_arch"] * ax**2) / p["rib_h"]
    phi2 = (y + 0.35 * ax - p["apex_y"]) / (1.1 * p["rib_h"])  # fainter anterior ribs
    ribs = sum(
        w * _band((f + p["rib_phase"] + 0.5) % 1.0 - 0.5, 0.03 / p["rib_h"])
        for w, f in ((1.0, phi), (0.35, phi2))
    )
    d += p["rib_amp"] * ribs * (cage < 1.1) * (ax > 0.05) * (0.3 + 0.7 * lungs)
    clav = (
        _band(y - (p["apex_y"] + 0.04 - 0.22 * ax + 0.12 * ax**2), 0.03) * (ax > 0.08) * (ax < 0.7)
    )
    d += 0.12 * clav * body
    for side, amp in ((1, p["breast_l"]), (-1, p["breast_r"])):  # breast / soft-tissue shadows
        e = (x - side * (p["lung_x"] + 0.08)) ** 2 + (y - p["dome_y"] + p["breast_y"]) ** 2
        d += amp * body * np.sqrt(_ramp(1.0 - e / p["breast_rad"] ** 2))
    hilum = np.exp(
        -_ellipse(ax - p["lung_x"] + 0.6 * p["lung_w"], y - p["lung_cy"] + 0.05, 0.3, 0.4, 0)
    )
    size = x.shape[0]
    vessels = np.exp(-((_smooth_field(rng, size, 22) / 0.3) ** 2)) * (0.35 + 0.65 * hilum) * lungs
    out["vessels"] = p["vessel_amp"] * vessels
    d += out["vessels"] + p["tex_amp"] * _smooth_field(rng, size, 6) * body
    from scipy.ndimage import gaussian_filter  # here: the params schema imports this module

    out["density"] = gaussian_filter(d, max(0.5, size / 180.0), mode="nearest")
    return out


# ----------------------------------------------------------------------------- findings


SITES: tuple[str, ...] = ("anywhere", "typical")
_TYPICAL_ZONES: dict[str, tuple[int, float, float]] = {
    "nodule": (-1, -0.75, -0.2),  # the patient's right upper zone
    "consolidation": (1, 0.15, 0.7),  # the patient's left lower zone
}
"""``sites="typical"``: (side, top, bottom) of the zone a finding's centre is drawn from, as a
fraction of the lung's half height from its centre (``-0.75 .. 0.7`` is the whole lung). Side
``-1`` is the patient's right lung (the image's left). Effusion (basal), pneumothorax (apical)
and cardiomegaly (the heart) sit at their typical sites in either mode."""


def _lung_point(
    ctx: dict, rng: np.random.Generator, r: float, finding: str | None = None
) -> tuple[int, float, float, float]:
    """Random side and centre of a disc of radius ``r`` inside that lung: ``(side, cx, cy, r)``.

    With ``ctx["sites"] == "typical"`` the side and height come from ``finding``'s zone in
    ``_TYPICAL_ZONES``; the random draws are the same in number and order either way.
    """
    p, side = ctx["p"], int(rng.choice((-1, 1)))
    top, bottom = -0.75, 0.7
    if ctx.get("sites") == "typical" and finding in _TYPICAL_ZONES:
        side, top, bottom = _TYPICAL_ZONES[finding]
    t = np.linspace(0.0, 2 * np.pi, 13)
    for k in range(60):
        rr = r * (1.0 - k / 90.0)  # shrink when the lung is too small to hold it
        cx = side * (p["lung_x"] + p["lung_w"] * rng.uniform(-0.9, 1.1))
        cy = p["lung_cy"] + p["lung_hy"] * rng.uniform(top, bottom)
        xs, ys = np.append(cx + rr * np.cos(t), cx), np.append(cy + rr * np.sin(t), cy)
        if _lung(xs, ys, p, side).all():
            return side, cx, cy, rr
    lung = ctx["lung_left" if side > 0 else "lung_right"]  # fallback: a pixel of that lung
    j = np.flatnonzero(lung)[lung.sum() // 2]
    return side, float(ctx["x"].flat[j]), float(ctx["y"].flat[j]), 0.5 * r


def _nodule(ctx: dict, rng: np.random.Generator, c: float) -> np.ndarray:
    """1-2 round nodules (radius 3-6 % of the image side); density of a projected sphere."""
    x, y = ctx["x"], ctx["y"]
    mask, layer = np.zeros(x.shape, bool), np.zeros_like(x)
    for _ in range(1 + int(rng.random() < 0.35)):
        r = 2.0 * rng.uniform(0.03, 0.06) / ctx["p"]["scale"]
        _, cx, cy, r = _lung_point(ctx, rng, r, "nodule")
        rho2 = ((x - cx) ** 2 + (y - cy) ** 2) / r**2
        m = (rho2 < 1.0) & ctx["lung"]
        mask |= m
        layer = np.maximum(layer, m * np.sqrt(_ramp(1.0 - rho2)) * rng.uniform(0.8, 1.2))
    ctx["density"] += 1.1 * c * layer
    return mask


def _consolidation(ctx: dict, rng: np.random.Generator, c: float) -> np.ndarray:
    """Patchy, ill-defined opacity: thresholded smooth noise inside an ellipse, in one lung."""
    x, y = ctx["x"], ctx["y"]
    a, b, th = rng.uniform(0.1, 0.2), rng.uniform(0.08, 0.15), rng.uniform(0.0, np.pi)
    _, cx, cy, _ = _lung_point(ctx, rng, 0.06, "consolidation")
    dx, dy = x - cx, y - cy
    e = _ellipse(dx, dy, a, b, th)
    region = (e < 1.0) & ctx["lung"]
    if not region.any():  # tiny images: the lung pixel nearest to the centre
        dist = np.where(ctx["lung"], dx**2 + dy**2, np.inf)
        region = dist <= dist.min()
    s = _smooth_field(rng, x.shape[0], 30) + 0.9 * (1.0 - e)
    thr = np.quantile(s[region], 1.0 - rng.uniform(0.45, 0.7))
    mask = region & (s >= thr)
    opacity = 1.25 * c * (0.15 + 0.85 * _ramp((s - thr) / 0.6))
    ctx["density"] += mask * (opacity - 0.5 * ctx["vessels"])
    return mask


def _effusion(ctx: dict, rng: np.random.Generator, c: float) -> np.ndarray:
    """Basal opacity of one (or both) lungs under a meniscus rising towards the chest wall."""
    p, x, y = ctx["p"], ctx["x"], ctx["y"]
    mask, layer = np.zeros(x.shape, bool), np.zeros_like(x)
    for side in (-1, 1) if rng.random() < 0.25 else (int(rng.choice((-1, 1))),):
        lateral = np.clip((side * x - p["lung_x"] + p["lung_w"]) / (2 * p["lung_w"]), 0.0, 1.2)
        level = p["dome_y"] + p["dome_h"] - rng.uniform(0.12, 0.35) * 2 * p["lung_hy"]
        y_m = level - rng.uniform(0.15, 0.3) * lateral**2
        m = ctx["lung_left" if side > 0 else "lung_right"] & (y > y_m)
        mask |= m
        layer = np.maximum(layer, m * (0.3 + 0.7 * _ramp((y - y_m) / 0.12)))
    ctx["density"] += layer * (0.4 * c * rng.uniform(0.7, 1.3) - 0.5 * ctx["vessels"])
    return mask


def _pneumothorax(ctx: dict, rng: np.random.Generator, c: float) -> np.ndarray:
    """Apical / lateral air rim without vessels, bounded by a thin visceral pleural line."""
    p, x, y = ctx["p"], ctx["x"], ctx["y"]
    side = int(rng.choice((-1, 1)))
    ax, ay = side * (p["lung_x"] - 0.6 * p["lung_w"]), p["dome_y"]  # the lung collapses towards it
    k = rng.uniform(0.72, 0.88)
    k2 = k * (1.0 - 0.022 / (p["dome_y"] - p["apex_y"]))
    collapsed, inner = (
        _lung_shape(ax + (x - ax) / f, ay + (y - ay) / f, p, side)[0] for f in (k, k2)
    )
    upper = ctx["lung_left" if side > 0 else "lung_right"] & (y < ay - 0.12)
    mask, line = upper & ~collapsed, upper & collapsed & ~inner
    ctx["density"] += 0.6 * c * line - mask * (ctx["vessels"] + 0.6 * c)
    return mask


_LESIONS = {
    "nodule": _nodule,
    "effusion": _effusion,
    "consolidation": _consolidation,
    "pneumothorax": _pneumothorax,
}


def _render(
    seed: int,
    index: int,
    size: int,
    present: Sequence[str],
    contrast: float,
    noise_std: float,
    sites: str = "anywhere",
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """One image: ``image (H, W)`` float32, ``{finding: mask (H, W)}``, organs ``(3, H, W)``."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    p = _sample_anatomy(rng)
    rngs = {
        f: np.random.default_rng(np.random.SeedSequence([seed, index, 2, k]))
        for k, f in enumerate(FINDINGS)
        if f in present
    }
    c = _DENSITY_PER_CONTRAST * contrast
    big = "cardiomegaly" in present
    _heart_geometry(p, p["ctr"] + (c * rngs["cardiomegaly"].uniform(0.15, 0.6) if big else 0.0))
    x, y = _canonical(p, size)
    ctx = _render_anatomy(p, x, y, rng)
    ctx.update(p=p, x=x, y=y, lung=ctx["lung_left"] | ctx["lung_right"], sites=sites)
    ctx["vessels"] = ctx["vessels"] * min(1.0, contrast)  # vessel texture a lesion may hide
    masks = {"cardiomegaly": ctx["heart"]} if big else {}
    masks |= {f: draw(ctx, rngs[f], c) for f, draw in _LESIONS.items() if f in present}
    img = np.clip(p["gain"] * (ctx["density"] - 0.45) + 0.45 + p["offset"], 0.0, 1.0)
    img = np.clip(
        img ** np.exp(p["log_gamma"]) + noise_std * rng.standard_normal((size, size)), 0, 1
    )
    return img.astype(np.float32), masks, np.stack([ctx[o] for o in ORGANS])


def _marker_slice(size: int) -> tuple[slice, slice]:
    """Fixed top-left square (side ~6 % of the image) of the shortcut marker."""
    m, s = max(1, round(0.04 * size)), max(2, round(0.06 * size))
    return slice(m, m + s), slice(m, m + s)


def make_phantom(
    n: int,
    size: int,
    seed: int,
    *,
    mode: str = "multiclass",
    findings: Sequence[str] = FINDINGS[:4],
    prevalence: float = 0.3,
    lesion_contrast: float = DEFAULT_LESION_CONTRAST,
    noise_std: float = DEFAULT_NOISE_STD,
    shortcut_class: str | None = None,
    shortcut_rate: float = 0.9,
    shortcut_correlated: np.ndarray | None = None,
    start: int = 0,
    sites: str = "anywhere",
) -> Phantom:
    """Generate ``n`` phantom chest radiographs of ``size x size`` pixels (see the module doc).

    Args:
        n: number of images (>= 1).
        size: image side in pixels (>= 32).
        seed: base seed (>= 0).
        mode: ``"multiclass"``: classes ``("normal", *findings)``, one per image, uniformly;
            ``"multilabel"``: classes ``findings``, each present independently with ``prevalence``.
        findings: distinct names from ``FINDINGS``.
        prevalence: per-finding probability in multilabel mode, in (0, 1).
        lesion_contrast: relative lesion strength (>= 0; 0 hides every lesion but still draws its
            mask). With ``c = 0.16 * lesion_contrast``: peak added density of nodules (~1.1 c),
            consolidation (~1.25 c), effusion (~0.4 c), the pneumothorax darkening (0.6 c) and
            pleural line, and the cardiothoracic-ratio increase of cardiomegaly (``c * U(0.15,
            0.6)`` over a normal ratio ~ N(0.45, 0.035)) all grow linearly with it; the loss of
            vessel texture under a lesion grows with it up to 1.
        noise_std: standard deviation (>= 0) of the additive Gaussian pixel noise.
        shortcut_class: class the shortcut marker (a bright square in the top-left corner, never
            part of a lesion mask) correlates with; ``None``: no marker.
        shortcut_rate: P(marker | class) = rate and P(marker | no class) = 1 - rate, in [0, 1].
        shortcut_correlated: ``(n,)`` bool; where False the marker appears with probability 0.5
            whatever the labels (e.g. the test split). ``None``: all True.
        start: global index of the first image (>= 0); shards with consecutive ``start`` values
            concatenate to one call bit for bit.
        sites: where findings sit: ``"anywhere"`` in the lungs (nodules and consolidation
            anywhere in either lung), or ``"typical"``, at a class-typical site as in real
            radiographs (nodules in the right upper zone, consolidation in the left lower zone;
            see ``_TYPICAL_ZONES``). Effusion, pneumothorax and cardiomegaly sit at their
            typical sites in both.

    Returns:
        A :class:`Phantom`. Organ masks: the *visible* lung fields (heart and aortic knob
        excluded; parts filled by effusion or pneumothorax included) and the heart silhouette
        down to the diaphragm. Lesion masks: the exact support of each drawn lesion, inside the
        lungs (effusion / pneumothorax inside the lung of their side; pneumothorax: the air
        region, without its pleural line), except cardiomegaly: the enlarged heart.
    """
    findings = _check_labels_args(n, seed, mode, findings, prevalence, start)
    if not _is_int(size, 32):
        _fail("size", size, "an integer >= 32")
    for name, value in (("lesion_contrast", lesion_contrast), ("noise_std", noise_std)):
        if not (isinstance(value, (int, float, np.number)) and 0 <= value < np.inf):
            _fail(name, value, "a finite number >= 0")
    classes = ("normal", *findings) if mode == "multiclass" else findings
    if shortcut_class is not None and shortcut_class not in classes:
        _fail("shortcut_class", shortcut_class, f"None or one of the classes {classes}")
    if not 0.0 <= shortcut_rate <= 1.0:
        _fail("shortcut_rate", shortcut_rate, "in [0, 1]")
    if sites not in SITES:
        _fail("sites", sites, f"one of {SITES}")
    correlated = (
        np.ones(n, bool) if shortcut_correlated is None else np.asarray(shortcut_correlated)
    )
    if correlated.shape != (n,):
        _fail("shortcut_correlated", f"shape {correlated.shape}", f"None or of shape ({n},)")

    labels, u_marker = _draw_labels(n, seed, mode, len(classes), prevalence, start)
    shortcut = np.zeros(n, dtype=bool)
    if shortcut_class is not None:
        has = labels[:, classes.index(shortcut_class)].astype(bool)
        rate = np.where(has, shortcut_rate, 1.0 - shortcut_rate)
        shortcut = u_marker < np.where(correlated.astype(bool), rate, 0.5)
    images = np.empty((n, 1, size, size), dtype=np.float32)
    lesion_masks = np.zeros((n, len(classes), size, size), dtype=bool)
    organ_masks = np.empty((n, len(ORGANS), size, size), dtype=bool)
    for j in range(n):
        present = [f for f, on in zip(classes, labels[j], strict=True) if on and f != "normal"]
        img, masks, organ_masks[j] = _render(
            seed, start + j, size, present, lesion_contrast, noise_std, sites
        )
        for f, m in masks.items():
            lesion_masks[j, classes.index(f)] = m
        if shortcut[j]:
            img[_marker_slice(size)] = _MARKER_VALUE
        images[j, 0] = img
    return Phantom(
        images=images,
        labels=labels,
        lesion_masks=lesion_masks,
        organ_masks=organ_masks,
        shortcut=shortcut,
        classes=classes,
        organs=ORGANS,
        indices=np.arange(start, start + n, dtype=np.int64),
    )
