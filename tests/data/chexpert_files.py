"""A small CheXpert-format dataset for tests: ``train.csv`` / ``valid.csv`` + JPEGs (+ masks).

The images are phantom radiographs (so a model can learn them) saved as JPEG under
``<root>/CheXpert-v1.0-small/{train,valid}/patient<id>/study<k>/view<v>_<frontal|lateral>.jpg``;
the label tables have CheXpert's 19 columns in its order with its value conventions (1.0, 0.0,
-1.0, blank). Phantom findings map onto observations (:data:`FINDING_TO_OBSERVATION`); the other
observations are blank or 0. Sex and AP/PA hold sentinel strings so tests can prove that columns
the pipeline does not need never reach an output.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sibnet.data.phantom_images import make_phantom
from sibnet.data.sources.chexpert import CHEXPERT_OBSERVATIONS
from tests.data.image_files import write_jpeg, write_mask_png

FINDING_TO_OBSERVATION = {
    "effusion": "Pleural Effusion",
    "cardiomegaly": "Cardiomegaly",
    "consolidation": "Consolidation",
    "nodule": "Lung Lesion",
}
CLASSES = list(FINDING_TO_OBSERVATION.values())
COLUMNS = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_OBSERVATIONS]
SENTINELS = ("SENTINEL-SEX-7f3a", "SENTINEL-APPA-91c2")
FOLDER = "CheXpert-v1.0-small"


@dataclass
class ChexpertFixture:
    """Where the fixture lies and what it holds."""

    root: Path
    masks: Path | None
    train_rows: list[dict[str, str]]
    valid_rows: list[dict[str, str]]
    lateral: int

    def params(self, **chexpert: object) -> dict[str, object]:
        """The ``prepare.chexpert`` section that reads this fixture."""
        return {
            "root": str(self.root),
            "train_csv": f"{FOLDER}/train.csv",
            "valid_csv": f"{FOLDER}/valid.csv",
            "classes": CLASSES,
            "lesion_masks": None if self.masks is None else str(self.masks),
            **chexpert,
        }


def _value(label: int, rng: np.random.Generator, uncertain_rate: float) -> str:
    if label:
        return "-1.0" if rng.random() < uncertain_rate else "1.0"
    return rng.choice(["", "0.0"])  # blank (not mentioned) or negative


def write_table(path: Path, rows: list[dict[str, str]]) -> None:
    """Write rows as a CheXpert label table (all 19 columns, in order)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def write_chexpert(
    root: Path,
    *,
    n_train: int = 48,
    n_valid: int = 16,
    size: int = 64,
    seed: int = 0,
    uncertain_rate: float = 0.1,
    lateral_every: int = 6,
    masks: bool = True,
) -> ChexpertFixture:
    """Write a CheXpert-format fixture under ``root`` (two frontal images per train patient).

    Args:
        n_train, n_valid: frontal images in ``train.csv`` and ``valid.csv``.
        size: phantom image side (pixels).
        uncertain_rate: fraction of train positives written as uncertain (-1.0).
        lateral_every: every k-th patient also gets a lateral view (left out by frontal_only).
        masks: also write expert lesion masks for the valid images' positive classes, in
            ``<root>/masks/<Path without suffix>/<class>.png``.
    """
    rng = np.random.default_rng(seed)
    n = n_train + n_valid
    phantom = make_phantom(
        n, size, seed, mode="multilabel", findings=list(FINDING_TO_OBSERVATION), prevalence=0.35
    )
    mask_root = root / "masks" if masks else None
    rows: dict[str, list[dict[str, str]]] = {"train": [], "valid": []}
    lateral = 0
    for i in range(n):
        split = "train" if i < n_train else "valid"
        patient = (i // 2 + 1) if split == "train" else 64540 + (i - n_train + 1)
        study = 1 + (i % 2 if split == "train" else 0)
        relative = f"{FOLDER}/{split}/patient{patient:05d}/study{study}/view1_frontal.jpg"
        write_jpeg(root / relative, phantom.images[i, 0], quality=95)
        labels = phantom.labels[i]
        observations = dict.fromkeys(CHEXPERT_OBSERVATIONS, "")
        for finding, label in zip(FINDING_TO_OBSERVATION, labels, strict=True):
            value = _value(int(label), rng, uncertain_rate if split == "train" else 0.0)
            if split == "valid":  # radiologist consensus: no blanks, no uncertainty
                value = "1.0" if label else "0.0"
            observations[FINDING_TO_OBSERVATION[finding]] = value
        if split == "valid":
            observations = {k: v or "0.0" for k, v in observations.items()}
        row = {
            "Path": relative,
            "Sex": SENTINELS[0],
            "Age": str(40 + i % 40),
            "Frontal/Lateral": "Frontal",
            "AP/PA": SENTINELS[1],
            **observations,
        }
        rows[split].append(row)
        if mask_root is not None and split == "valid":
            for c, observation in enumerate(CLASSES):
                if labels[c] and phantom.lesion_masks[i, c].any():
                    stem = Path(relative).with_suffix("")
                    write_mask_png(
                        mask_root / stem / f"{observation}.png", phantom.lesion_masks[i, c]
                    )
        if study == 1 and patient % lateral_every == 0:
            side = relative.replace("view1_frontal", "view2_lateral")
            write_jpeg(root / side, phantom.images[i, 0].T.copy(), quality=95)
            rows[split].append({**row, "Path": side, "Frontal/Lateral": "Lateral", "AP/PA": ""})
            lateral += 1
    write_table(root / FOLDER / "train.csv", rows["train"])
    write_table(root / FOLDER / "valid.csv", rows["valid"])
    return ChexpertFixture(root, mask_root, rows["train"], rows["valid"], lateral)
