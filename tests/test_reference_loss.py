"""``sibnet_reference`` is the original SIBnet code's training loss, value and gradients.

The reference is rebuilt here independently of the package, the way the original
``examples/train_and_eval_pytorch.py`` and ``sibnet/sibnet_losses.py`` (ubern-mia/sibnet) compute
it: captum's ``LayerGradCam`` with its default arguments (signed maps, ``α`` from
``torch.autograd.grad`` without ``create_graph``), called once per class;
``LayerAttribution.interpolate`` (nearest) to the input size; per map a NumPy Otsu threshold
on a density histogram, scikit-image's ``binary_erosion`` and ``label`` on the ``(1, H, W)``
mask, and every connected component but the last scored by the squared differences over its
9 × 9 window clipped to the image; class distinctiveness as the mean over class pairs of the
batch-mean absolute cosine; cross-entropy weighted by the batch's inverse class frequencies;
each term divided by its value at the first iteration, weights 1.

Not compared: captum's extra forward pass per class updates the batch-norm running statistics
``C`` more times per step (the loss uses the batch's own statistics, so it is unaffected).
"""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam
from skimage.measure import label
from skimage.morphology import binary_erosion
from torch import nn

from sibnet.config import load_params
from sibnet.losses import build_objective
from sibnet.models.classifier import build_classifier
from sibnet.objectives import REFERENCE_FORMULATION, SibnetParams
from tests.test_config import ROOT

KERNEL = 9
CLASSES = 3


def _otsu_density(image: np.ndarray, nbins: int = 256) -> float:
    """The original code's Otsu threshold: a density histogram, class means by cumulative sums."""
    if np.all(image == image.ravel()[0]):
        return float(image.ravel()[0])
    counts, edges = np.histogram(image, bins=nbins, density=True)
    centres = (edges[1:] + edges[:-1]) / 2
    weight1 = np.cumsum(counts)
    weight2 = np.cumsum(counts[::-1])[::-1]
    mean1 = np.cumsum(counts * centres) / weight1
    mean2 = (np.cumsum((counts * centres)[::-1]) / weight2[::-1])[::-1]
    variance = weight1[:-1] * weight2[1:] * (mean1[:-1] - mean2[1:]) ** 2
    return float(centres[np.argmax(variance)])


def _components_but_last(saliency: torch.Tensor) -> list[np.ndarray]:
    """``(1, H, W)`` map → 0/1 masks of its eroded Otsu region's components but the last."""
    array = saliency.detach().cpu().numpy()
    binary = (array > _otsu_density(array)).astype(np.int32)
    labels = label(binary_erosion(binary), background=0)
    return [(labels == i).astype(np.float32) for i in range(1, int(labels.max()))]


def _clipped_window_sum(m: torch.Tensor) -> torch.Tensor:
    """Σ over pixels p and window positions q within the image of (m_p − m_q)², ``m`` ``(H, W)``."""
    h, w = m.shape
    r = KERNEL // 2
    total = m.new_zeros(())
    for dy, dx in itertools.product(range(-r, r + 1), repeat=2):
        a = m[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
        b = m[max(0, dy) : h - max(0, -dy), max(0, dx) : w - max(0, -dx)]
        total = total + ((a - b) ** 2).sum()
    return total


def _reference_terms(model: nn.Module, images: torch.Tensor, classes: torch.Tensor):
    outputs = model(images)
    histogram = torch.bincount(classes, minlength=CLASSES).float() / len(classes)
    ce = nn.CrossEntropyLoss(weight=1 / histogram)(outputs, classes)
    cam = LayerGradCam(model, layer=model.layer4)
    attributions = [cam.attribute(images, [i] * len(images)) for i in range(CLASSES)]
    upsampled = [
        LayerAttribution.interpolate(a, tuple(torch.squeeze(images[0]).shape)) for a in attributions
    ]
    cosine = nn.CosineSimilarity(dim=1)
    pairs = [
        cosine(a.view(len(a), -1), b.view(len(b), -1)).abs().mean()
        for a, b in itertools.combinations(attributions, 2)
    ]
    cd = torch.stack(pairs).mean()
    sc = images.new_zeros(())
    for saliency in upsampled:  # (B, 1, H, W) per class
        for b in range(len(saliency)):
            for mask in _components_but_last(saliency[b]):
                sc = sc + _clipped_window_sum(torch.from_numpy(mask[0]) * saliency[b][0])
    return ce, cd, sc


def _gradients(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _batch(seed: int, size: int = 96, n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, size, size, generator=generator)
    classes = torch.tensor([0, 1, 2, 0, 1, 0])[:n]  # every class present, unequal counts
    return images, classes


def _relative(found: torch.Tensor, expected: torch.Tensor) -> float:
    return float((found - expected).abs().max() / expected.abs().max().clamp_min(1e-30))


def test_reference_method_is_the_reference_formulation() -> None:
    shipped = load_params(ROOT / "params.yaml").methods["sibnet_reference"]
    assert shipped == SibnetParams(**REFERENCE_FORMULATION)


@pytest.mark.filterwarnings("ignore:`binary_erosion` is deprecated:FutureWarning")
@pytest.mark.parametrize("seed", [0, 1])
def test_sibnet_reference_loss_and_gradients_equal_the_original_code(seed: int) -> None:
    torch.manual_seed(seed)
    model = build_classifier("resnet10_small", num_classes=CLASSES)
    model.train()
    reference_model, project_model = copy.deepcopy(model), copy.deepcopy(model)
    objective = build_objective(SibnetParams(**REFERENCE_FORMULATION), "multiclass")
    scales = None
    components = 0
    for step in range(2):  # the first step sets the scales, the second is scaled by them
        images, classes = _batch(100 * seed + step)
        targets = nn.functional.one_hot(classes, CLASSES).float()

        reference_model.zero_grad()
        ce, cd, sc = _reference_terms(reference_model, images, classes)
        if scales is None:
            scales = (ce.item(), cd.item(), sc.item())
        reference = ce / scales[0] + cd / scales[1] + sc / scales[2]
        reference.backward()
        expected = _gradients(reference_model)

        project_model.zero_grad()
        loss, terms = objective(project_model, {"image": images, "target": targets})
        loss.backward()
        found = _gradients(project_model)

        assert _relative(loss.detach(), reference.detach()) < 1e-5, step
        for name, value in (("task", ce), ("cd", cd), ("sc", sc)):
            assert _relative(terms[name], value.detach()) < 1e-5, (step, name)
        assert found.keys() == expected.keys()
        largest = max(float(g.abs().max()) for g in expected.values())
        for name, gradient in expected.items():
            if float(gradient.abs().max()) < 1e-5 * largest:
                # zero in exact arithmetic (a convolution's bias under batch norm): rounding noise
                assert float(found[name].abs().max()) < 1e-5 * largest, (step, name)
            else:
                assert _relative(found[name], gradient) < 1e-4, (step, name)
        with torch.no_grad():
            maps = torch.cat(_maps(reference_model, images), dim=1)
        components += sum(len(_components_but_last(m[None])) for m in maps.flatten(0, 1))
    assert components > 0  # the SC term was exercised, not trivially zero


def _maps(model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    cam = LayerGradCam(model, layer=model.layer4)
    size = tuple(images.shape[-2:])
    return [
        LayerAttribution.interpolate(cam.attribute(images, [i] * len(images)), size).detach()
        for i in range(CLASSES)
    ]
