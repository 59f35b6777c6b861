"""Adapter for the built-in phantom dataset: generator → prepared layout, shard by shard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from sibnet.config import PrepareParams
from sibnet.data.phantom import ORGANS, make_phantom, phantom_labels
from sibnet.data.prepared import PreparedWriter
from sibnet.data.splits import stratified_split

__all__ = ["write_phantom"]


def write_phantom(params: PrepareParams, root: Path) -> None:
    """Generate the phantom described by ``params.phantom`` and write it under ``root``.

    Labels come first (cheaply) so that the split can be drawn, stratified by label, before any
    image is rendered; the shortcut marker, when configured, is correlated with its class in
    train and val and random in test. Images are then rendered one shard at a time, so memory
    stays bounded by ``shard_size``.
    """
    options = params.phantom
    common = {"mode": options.mode, "findings": tuple(options.findings)}
    labels, classes = phantom_labels(
        options.n_images, options.seed, prevalence=options.prevalence, **common
    )
    splits = stratified_split(
        labels, val=params.split.val, test=params.split.test, seed=params.split.seed
    )
    writer = PreparedWriter(
        root=root,
        name=params.dataset,
        task=options.mode,
        classes=classes,
        organs=ORGANS,
        image_size=(options.size, options.size),
        shard_size=params.shard_size,
        lesion_masks=True,
        source={"adapter": "phantom", **options.model_dump(mode="json")},
    )
    starts = range(0, options.n_images, params.shard_size)
    for start in tqdm(starts, desc="phantom shards", disable=None):
        stop = min(start + params.shard_size, options.n_images)
        phantom = make_phantom(
            stop - start,
            options.size,
            options.seed,
            prevalence=options.prevalence,
            lesion_contrast=options.lesion_contrast,
            noise_std=options.noise_std,
            shortcut_class=options.shortcut_class,
            shortcut_rate=options.shortcut_rate,
            shortcut_correlated=splits[start:stop] != "test",
            start=start,
            sites=options.sites,
            **common,
        )
        ids = [f"phantom-{i:07d}" for i in phantom.indices]
        writer.add(
            images=phantom.images,
            labels=phantom.labels,
            ids=ids,
            splits=splits[start:stop].tolist(),
            patient_ids=ids,
            sources=[f"phantom:seed={options.seed}:index={i}" for i in phantom.indices],
            lesion_masks=phantom.lesion_masks,
            organ_masks=phantom.organ_masks,
            extra={"shortcut": phantom.shortcut.astype(bool).tolist()},
        )
    manifest = writer.close()
    if not np.array_equal(np.array(manifest["labels"].tolist()), labels):
        raise AssertionError("phantom labels changed between labelling and rendering")
