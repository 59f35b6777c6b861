"""Tests of the synthetic chest-radiograph phantom."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from sibnet.data.phantom_images import FINDINGS, ORGANS, Phantom, make_phantom, phantom_labels

SIZE = 48
MODES = ("multiclass", "multilabel")


@pytest.fixture(scope="module", params=MODES)
def batch(request: pytest.FixtureRequest) -> Phantom:
    """All five findings, enough images that every class occurs several times."""
    return make_phantom(80, SIZE, 3, mode=request.param, findings=FINDINGS, prevalence=0.4)


@pytest.fixture(scope="module")
def paired() -> tuple[Phantom, Phantom]:
    """Same images with and without visible lesions (anatomy and noise do not depend on it)."""
    kw = {"mode": "multilabel", "findings": FINDINGS, "prevalence": 0.35}
    return make_phantom(60, 64, 11, **kw), make_phantom(60, 64, 11, lesion_contrast=0.0, **kw)


def _fields(ph: Phantom) -> dict[str, np.ndarray]:
    return {
        "images": ph.images,
        "labels": ph.labels,
        "lesion_masks": ph.lesion_masks,
        "organ_masks": ph.organ_masks,
        "shortcut": ph.shortcut,
        "indices": ph.indices,
    }


def test_shapes_dtypes_ranges(batch: Phantom) -> None:
    n, c = batch.labels.shape
    assert n == 80
    assert batch.images.shape == (n, 1, SIZE, SIZE) and batch.images.dtype == np.float32
    assert batch.images.min() >= 0.0 and batch.images.max() <= 1.0
    assert np.isfinite(batch.images).all()
    assert batch.labels.dtype == np.int8 and set(np.unique(batch.labels)) <= {0, 1}
    assert batch.lesion_masks.shape == (n, c, SIZE, SIZE) and batch.lesion_masks.dtype == bool
    assert batch.organ_masks.shape == (n, len(ORGANS), SIZE, SIZE)
    assert batch.organ_masks.dtype == bool
    assert batch.shortcut.shape == (n,) and batch.shortcut.dtype == bool
    assert batch.organs == ORGANS and len(batch.classes) == c
    assert batch.indices.dtype == np.int64 and np.array_equal(batch.indices, np.arange(n))
    expected = ("normal", *FINDINGS) if c == len(FINDINGS) + 1 else FINDINGS
    assert batch.classes == expected


@pytest.mark.parametrize("mode", MODES)
def test_deterministic_and_shardable(mode: str) -> None:
    kw = {"mode": mode, "findings": FINDINGS, "shortcut_class": "nodule", "shortcut_rate": 0.7}
    full = make_phantom(10, 40, 5, **kw)
    again = make_phantom(10, 40, 5, **kw)
    corr = np.arange(10) % 3 > 0
    a = make_phantom(4, 40, 5, shortcut_correlated=corr[:4], **kw)
    b = make_phantom(6, 40, 5, shortcut_correlated=corr[4:], start=4, **kw)
    whole = make_phantom(10, 40, 5, shortcut_correlated=corr, **kw)
    for key, value in _fields(full).items():
        np.testing.assert_array_equal(value, _fields(again)[key], err_msg=key)
        joined = np.concatenate([_fields(a)[key], _fields(b)[key]])
        np.testing.assert_array_equal(joined, _fields(whole)[key], err_msg=key)
    assert not np.array_equal(full.images, make_phantom(10, 40, 6, **kw).images)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("start", [0, 17])
def test_phantom_labels_match(mode: str, start: int) -> None:
    kw = {"mode": mode, "findings": ("effusion", "nodule", "pneumothorax"), "prevalence": 0.5}
    labels, classes = phantom_labels(25, 9, start=start, **kw)
    ph = make_phantom(25, 32, 9, start=start, **kw)
    assert classes == ph.classes
    assert labels.dtype == np.int8
    np.testing.assert_array_equal(labels, ph.labels)


def test_multiclass_one_hot_and_uniform() -> None:
    labels, classes = phantom_labels(6000, 1)
    assert classes == ("normal", *FINDINGS[:4])
    assert (labels.sum(axis=1) == 1).all()
    np.testing.assert_allclose(labels.mean(axis=0), 1 / len(classes), atol=0.03)


@pytest.mark.parametrize("prevalence", [0.2, 0.5])
def test_multilabel_prevalence_and_cooccurrence(prevalence: float) -> None:
    labels, classes = phantom_labels(5000, 2, mode="multilabel", prevalence=prevalence)
    assert classes == FINDINGS[:4]
    np.testing.assert_allclose(labels.mean(axis=0), prevalence, atol=0.03)
    per_image = labels.sum(axis=1)
    assert (per_image >= 2).any() and (per_image == 0).any()


def test_lesion_mask_nonempty_iff_positive(batch: Phantom) -> None:
    nonempty = batch.lesion_masks.any(axis=(2, 3))
    expected = batch.labels.astype(bool)
    if "normal" in batch.classes:
        k = batch.classes.index("normal")
        assert expected[:, k].sum() >= 5
        expected[:, k] = False  # normal images carry an empty lesion mask
    np.testing.assert_array_equal(nonempty, expected)
    assert batch.labels[:, batch.classes.index("nodule")].sum() >= 5


def test_lesions_inside_their_organs(batch: Phantom) -> None:
    left, right, heart = (batch.organ_masks[:, ORGANS.index(o)] for o in ORGANS)
    lungs = left | right
    assert left.any(axis=(1, 2)).all() and right.any(axis=(1, 2)).all()
    assert heart.any(axis=(1, 2)).all()
    assert not (lungs & heart).any()
    assert left.sum() < right.sum()  # the heart takes room from the left lung
    for k, name in enumerate(batch.classes):
        masks = batch.lesion_masks[:, k]
        if name == "cardiomegaly":
            np.testing.assert_array_equal(masks, heart & masks.any(axis=(1, 2))[:, None, None])
        elif name != "normal":
            assert (masks <= lungs).all(), name
        if name == "pneumothorax":
            for m, lo, ro in zip(masks, left, right, strict=True):
                assert not m.any() or (m <= lo).all() or (m <= ro).all()


def test_lesions_drawn_exactly_inside_masks(paired: tuple[Phantom, Phantom]) -> None:
    """Contrast changes pixels only inside the lesion masks (pneumothorax: and its pleural line)."""
    visible, hidden = paired
    ptx, cardio = FINDINGS.index("pneumothorax"), FINDINGS.index("cardiomegaly")
    same_heart = visible.labels[:, cardio] == 0  # the enlargement scales with the contrast
    np.testing.assert_array_equal(visible.lesion_masks[same_heart], hidden.lesion_masks[same_heart])
    np.testing.assert_array_equal(visible.labels, hidden.labels)
    diff = visible.images[:, 0].astype(np.float64) - hidden.images[:, 0]
    simple = (visible.labels[:, ptx] == 0) & same_heart
    assert simple.sum() >= 10
    union = visible.lesion_masks.any(axis=1)
    assert (diff[simple][~union[simple]] == 0).all()
    assert (diff[~visible.labels.astype(bool).any(axis=1)] == 0).all()
    for k, sign in ((FINDINGS.index("nodule"), 1), (FINDINGS.index("effusion"), 1), (ptx, -1)):
        inside = diff[visible.lesion_masks[:, k]]
        assert sign * inside.mean() > 0.02, FINDINGS[k]


def test_nodules_brighter_than_surrounding_lung() -> None:
    ph = make_phantom(40, 64, 4, findings=("nodule",), mode="multilabel", prevalence=0.9)
    lungs = ph.organ_masks[:, 0] | ph.organ_masks[:, 1]
    wins = []
    for img, m, lung, lab in zip(
        ph.images[:, 0], ph.lesion_masks[:, 0], lungs, ph.labels[:, 0], strict=True
    ):
        if lab:
            ring = binary_dilation(m, iterations=4) & ~m & lung
            wins.append(img[m].mean() - img[ring].mean())
    assert len(wins) >= 25
    assert np.mean(wins) > 0.02 and np.mean(np.array(wins) > 0) > 0.8


def test_difficulty_knobs_are_monotone() -> None:
    kw = {"mode": "multilabel", "findings": ("nodule",), "prevalence": 0.9, "noise_std": 0.0}
    gaps = []
    for contrast in (0.5, 1.0, 2.0):
        ph = make_phantom(12, 48, 8, lesion_contrast=contrast, **kw)
        flat = make_phantom(12, 48, 8, lesion_contrast=0.0, **kw)
        gaps.append((ph.images - flat.images)[:, 0][ph.lesion_masks[:, 0]].mean())
    assert 0 < gaps[0] < gaps[1] < gaps[2]
    clean = make_phantom(12, 48, 8, noise_std=0.0)
    spread = [
        np.std(make_phantom(12, 48, 8, noise_std=s).images - clean.images) for s in (0.02, 0.06)
    ]
    assert 0 < spread[0] < spread[1]


def test_anatomy_varies_between_images(batch: Phantom) -> None:
    lung_area = (batch.organ_masks[:, 0] | batch.organ_masks[:, 1]).sum(axis=(1, 2))
    assert lung_area.std() / lung_area.mean() > 0.03
    assert batch.images.std(axis=0).mean() > 0.03


def test_no_shortcut_by_default(batch: Phantom) -> None:
    assert not batch.shortcut.any()
    assert not (batch.images[:, 0, :8, :8] == np.float32(0.95)).any()


@pytest.mark.parametrize("rate", [0.9, 0.25])
def test_shortcut_marker_correlation(rate: float) -> None:
    n = 500
    corr = np.arange(n) % 2 == 0
    ph = make_phantom(
        n, 32, 7, shortcut_class="nodule", shortcut_rate=rate, shortcut_correlated=corr
    )
    has = ph.labels[:, ph.classes.index("nodule")].astype(bool)
    assert abs(ph.shortcut[corr & has].mean() - rate) < 0.15
    assert abs(ph.shortcut[corr & ~has].mean() - (1 - rate)) < 0.1
    assert abs(ph.shortcut[~corr].mean() - 0.5) < 0.1
    token = ph.images[:, 0, :8, :8] == np.float32(0.95)
    count = token.sum(axis=(1, 2))
    assert (count[ph.shortcut] >= 4).all() and (count[~ph.shortcut] == 0).all()
    assert not (ph.lesion_masks[:, :, :8, :8] & token[:, None]).any()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n": 0}, "n"),
        ({"size": 16}, "size"),
        ({"seed": -1}, "seed"),
        ({"mode": "multi"}, "mode"),
        ({"findings": ("nodule", "fracture")}, "findings"),
        ({"findings": ("nodule", "nodule")}, "findings"),
        ({"findings": ()}, "findings"),
        ({"prevalence": 0.0}, "prevalence"),
        ({"prevalence": 1.5}, "prevalence"),
        ({"shortcut_class": "pneumothorax"}, "shortcut_class"),
        ({"mode": "multilabel", "shortcut_class": "normal"}, "shortcut_class"),
        ({"shortcut_class": "nodule", "shortcut_rate": 1.1}, "shortcut_rate"),
        (
            {"shortcut_class": "nodule", "shortcut_correlated": np.ones(3, bool)},
            "shortcut_correlated",
        ),
        ({"start": -2}, "start"),
        ({"noise_std": -0.1}, "noise_std"),
        ({"lesion_contrast": -1.0}, "lesion_contrast"),
        ({"lesion_contrast": float("nan")}, "lesion_contrast"),
    ],
)
def test_invalid_arguments(kwargs: dict, name: str) -> None:
    args = {"n": 5, "size": 32, "seed": 0} | kwargs
    n, size, seed = args.pop("n"), args.pop("size"), args.pop("seed")
    with pytest.raises(ValueError, match=rf"^{name} ") as info:
        make_phantom(n, size, seed, **args)
    bad = kwargs.get(name)
    if isinstance(bad, (int, float, str)):
        assert repr(bad) in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"n": 0}, "n"), ({"mode": "x"}, "mode"), ({"prevalence": 1.0}, "prevalence")],
)
def test_invalid_label_arguments(kwargs: dict, name: str) -> None:
    args = {"n": 5, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=rf"^{name} "):
        phantom_labels(args.pop("n"), args.pop("seed"), **args)


def test_typical_sites_put_nodules_right_upper_and_consolidation_left_lower() -> None:
    findings = ("nodule", "consolidation", "effusion")
    typical = make_phantom(60, 64, 5, findings=findings, sites="typical")
    anywhere = make_phantom(60, 64, 5, findings=findings)
    np.testing.assert_array_equal(typical.labels, anywhere.labels)
    np.testing.assert_array_equal(typical.organ_masks, anywhere.organ_masks)
    lung_left, lung_right = (ORGANS.index(o) for o in ("lung_left", "lung_right"))
    sides = {"anywhere": set(), "typical": set()}
    for name, ph in (("typical", typical), ("anywhere", anywhere)):
        for finding, lung, upper in (
            ("nodule", lung_right, True),
            ("consolidation", lung_left, False),
        ):
            k = ph.classes.index(finding)
            for j in np.flatnonzero(ph.labels[:, k]):
                mask = ph.lesion_masks[j, k]
                in_right = (mask & ph.organ_masks[j, lung_right]).sum()
                sides[name].add((finding, bool(in_right > mask.sum() / 2)))
                if name == "typical":
                    organ = ph.organ_masks[j, lung]
                    assert (mask & organ).sum() == mask.sum()
                    rows = np.nonzero(organ)[0]
                    centre = (rows.min() + rows.max()) / 2
                    assert (np.nonzero(mask)[0].mean() < centre) == upper, (finding, j)
    assert sides["typical"] == {("nodule", True), ("consolidation", False)}
    assert len(sides["anywhere"]) == 4  # both findings in both lungs
    for j in np.flatnonzero(typical.labels[:, typical.classes.index("normal")]):
        np.testing.assert_array_equal(typical.images[j], anywhere.images[j])
    with pytest.raises(ValueError, match="sites"):
        make_phantom(2, 48, 0, sites="apex")
