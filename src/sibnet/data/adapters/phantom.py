"""The built-in phantom source's adapter: the generator (:mod:`sibnet.data.phantom_images`) →
an array plan, rendered shard by shard.

Its params are :class:`~sibnet.data.sources.phantom.PhantomParams` (``prepare.phantom``).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from tqdm import tqdm

from sibnet.config import PrepareParams
from sibnet.data.phantom_images import ORGANS, Phantom, make_phantom, phantom_labels
from sibnet.data.plan import Batch, Plan
from sibnet.data.sources import Adapter, register_adapter
from sibnet.data.sources.phantom import PhantomParams
from sibnet.data.splits import stratified_split

__all__ = ["UNLABELED_START", "plan_phantom"]

UNLABELED_START = 1_000_000
"""Generator index of the first unlabeled image (``prepare.phantom.unlabeled_images``): past
every labeled image (``n_images`` ≤ 10⁶), so the two never share a random stream."""


def plan_phantom(params: PrepareParams) -> Plan:
    """Plan the phantom described by ``params.phantom``.

    Labels come first (cheaply) so that the split can be drawn, stratified by label, before any
    image is rendered; the shortcut marker, when configured, is correlated with its class in
    train and val and random in test. The plan's batches then render one shard of images at a
    time, so memory stays bounded by ``shard_size``.

    ``unlabeled_images`` (``n_unlabeled``) more images follow, rendered from the generator
    indices :data:`UNLABELED_START` + ``j`` (ids ``phantom-unlabeled-<j>``): the ``n_images``
    images, their split and their bytes are those of the same params without them. They are
    training images (shortcut correlated as in train), unlabeled, with their masks; the labels
    the generator drew for them are withheld (:mod:`sibnet.data.prepared`).
    """
    options: PhantomParams = params.section("phantom")  # type: ignore[assignment]
    common = {"mode": options.mode, "findings": tuple(options.findings)}
    labels, classes = phantom_labels(
        options.n_images, options.seed, prevalence=options.prevalence, **common
    )
    splits = stratified_split(
        labels, val=params.split.val, test=params.split.test, seed=params.split.seed
    )

    def render(count: int, start: int, correlated: np.ndarray) -> Phantom:
        """``count`` phantom images from generator index ``start``; ``correlated``: ``(count,)``
        whether each carries the train/val shortcut correlation."""
        return make_phantom(
            count,
            options.size,
            options.seed,
            prevalence=options.prevalence,
            lesion_contrast=options.lesion_contrast,
            noise_std=options.noise_std,
            shortcut_class=options.shortcut_class,
            shortcut_rate=options.shortcut_rate,
            shortcut_correlated=correlated,
            start=start,
            sites=options.sites,
            **common,
        )

    def batches() -> Iterator[Batch]:
        starts = range(0, options.n_images, params.shard_size)
        for start in tqdm(starts, desc="phantom shards", disable=None):
            stop = min(start + params.shard_size, options.n_images)
            phantom = render(stop - start, start, splits[start:stop] != "test")
            if not np.array_equal(phantom.labels, labels[start:stop]):
                raise AssertionError("phantom labels changed between labelling and rendering")
            ids = [f"phantom-{i:07d}" for i in phantom.indices]
            yield Batch(
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
        for start in range(0, options.n_unlabeled, params.shard_size):
            stop = min(start + params.shard_size, options.n_unlabeled)
            phantom = render(stop - start, UNLABELED_START + start, np.ones(stop - start, bool))
            n = stop - start
            ids = [f"phantom-unlabeled-{j:07d}" for j in range(start, stop)]
            yield Batch(
                images=phantom.images,
                labels=np.full(phantom.labels.shape, -1, np.int8),
                ids=ids,
                splits=["train"] * n,
                patient_ids=ids,
                sources=[f"phantom:seed={options.seed}:index={i}" for i in phantom.indices],
                lesion_masks=phantom.lesion_masks,
                organ_masks=phantom.organ_masks,
                extra={"shortcut": phantom.shortcut.astype(bool).tolist()},
                labeled=[False] * n,
                withheld_labels=list(phantom.labels),
            )

    return Plan(
        name=params.dataset,
        task=options.mode,
        classes=classes,
        organs=list(ORGANS),
        lesion_masks=True,
        source={"adapter": "phantom", **options.model_dump(mode="json")},
        batches=batches,
        image_size=(options.size, options.size),
        unlabeled_origin=(
            f"prepare.phantom.unlabeled_images: {options.n_unlabeled} extra train images, "
            "labels withheld"
            if options.n_unlabeled
            else None
        ),
    )


register_adapter("phantom", Adapter(PhantomParams, plan_phantom))
