"""The fast post-processing against the official two-step procedure (`postprocess_reference`), and the
masks pasted into crops (`postprocess_crops`) against the single resize to the whole image."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sparseinst_core.inference import mask_paste
from sparseinst_core.inference.postprocess import (
    image_window, instance_scores, postprocess, postprocess_crops, postprocess_reference, resize_masks_to_original)


def decoder_outputs(padded_size, num_queries=100, num_classes=7, seed=0):
    """Random class/objectness logits and smooth mask logits like a decoder's (upsampled from stride 8)."""
    g = torch.Generator().manual_seed(seed)
    hp, wp = padded_size
    logits = torch.randn(num_queries, num_classes, generator=g) * 3
    objectness = torch.randn(num_queries, 1, generator=g) * 3
    coarse = torch.randn(1, num_queries, hp // 32, wp // 32, generator=g) * 6
    masks = F.interpolate(coarse, size=(hp // 4, wp // 4), mode="bilinear", align_corners=False)[0]
    return logits, objectness, masks


# (padded input, resized image inside it, original image)
GEOMETRIES = [
    ((640, 864), (640, 853), (480, 640)),     # VGA camera at the official 640 test size
    ((96, 160), (90, 150), (60, 100)),
    ((128, 96), (120, 90), (400, 300)),       # upsampling, portrait
    ((64, 64), (50, 37), (50, 37)),           # no resize: only the crop differs from the padded input
]


@pytest.mark.parametrize("padded,resized,original", GEOMETRIES)
def test_same_scores_and_labels_masks_up_to_boundary_pixels(padded, resized, original):
    outputs = decoder_outputs(padded)
    expected = postprocess_reference(*outputs, padded, resized, original, score_threshold=0.2, mask_threshold=0.45)
    actual = postprocess(*outputs, padded, resized, original, score_threshold=0.2, mask_threshold=0.45)
    assert len(expected[0]) > 10
    assert torch.equal(actual[0], expected[0])            # bit-identical scores
    assert torch.equal(actual[1], expected[1])
    assert actual[2].dtype == torch.bool and actual[2].shape == expected[2].shape
    disagreement = (actual[2] != expected[2]).float().mean().item()
    assert disagreement < 0.005, disagreement
    if resized == original:                               # the second resize of the reference is the identity
        assert torch.equal(actual[2], expected[2])


def test_only_pixels_at_the_threshold_flip():
    """Where the masks differ, the reference's resized probability is within 0.02 of the threshold."""
    padded, (h, w), original = GEOMETRIES[0]
    logits, objectness, masks = decoder_outputs(padded, num_queries=20)
    expected = postprocess_reference(logits, objectness, masks, padded, (h, w), original, 0.0, 0.45)[2]
    actual = postprocess(logits, objectness, masks, padded, (h, w), original, 0.0, 0.45)[2]
    probs = F.interpolate(masks.sigmoid()[:, None], size=padded, mode="bilinear", align_corners=False)[..., :h, :w]
    probs = F.interpolate(probs, size=original, mode="bilinear", align_corners=False)[:, 0]
    differs = actual != expected
    assert differs.any()                                  # the test would notice a broken comparison
    assert ((probs[differs] - 0.45).abs() < 0.02).all()


def test_sorted_output_is_the_same_set_in_score_order():
    padded, resized, original = GEOMETRIES[1]
    outputs = decoder_outputs(padded)
    scores, labels, masks = postprocess(*outputs, padded, resized, original, 0.2, 0.45)
    sorted_scores, sorted_labels, sorted_masks = postprocess(*outputs, padded, resized, original, 0.2, 0.45, sort=True)
    order = torch.argsort(scores, descending=True, stable=True)
    assert torch.equal(sorted_scores, scores[order]) and torch.equal(sorted_labels, labels[order])
    assert torch.equal(sorted_masks, masks[order])


def test_chunking_does_not_change_the_result():
    probs = torch.rand(9, 24, 40, generator=torch.Generator().manual_seed(3))
    whole = resize_masks_to_original(probs, (90, 150), (70, 110), 0.45, chunk_elements=10**9)
    chunked = resize_masks_to_original(probs, (90, 150), (70, 110), 0.45, chunk_elements=2 * 70 * 110)
    assert torch.equal(whole, chunked)


def test_nothing_above_threshold_gives_empty_results():
    padded, resized, original = GEOMETRIES[1]
    scores, labels, masks = postprocess(*decoder_outputs(padded), padded, resized, original, 1.0, 0.45)
    assert scores.shape == (0,) and labels.shape == (0,) and masks.shape == (0, *original)


def test_all_queries_pass_a_zero_threshold():
    padded, resized, original = GEOMETRIES[1]
    scores, _, masks = postprocess(*decoder_outputs(padded), padded, resized, original, 0.0, 0.45)
    assert len(scores) == len(masks) == 100


def test_masks_not_at_a_quarter_of_the_padded_size_are_rejected():
    logits, objectness, masks = decoder_outputs((64, 64))
    with pytest.raises(ValueError, match="1/4 of the padded"):
        postprocess(logits, objectness, masks, (64, 96), (64, 90), (64, 90), 0.2, 0.45)


# ------------------------------------------------------------------------------ masks pasted into crops
CROP_GEOMETRIES = GEOMETRIES + [
    ((96, 128), (90, 120), (15, 20)),         # original smaller than the 1/4 map: pixels skip samples
    ((64, 96), (60, 80), (700, 900)),         # large upscale: crops far larger than their windows
]


def single_resize_probabilities(masks, order, resized, original):
    """The float values the single resize thresholds, (K, H, W), in `order`."""
    probs = masks.sigmoid()[order]
    rows, cols = min(probs.shape[1], -(-resized[0] // 4) + 1), min(probs.shape[2], -(-resized[1] // 4) + 1)
    return torch.ops.aten.upsample_bilinear2d(probs[:, None, :rows, :cols], list(original), False,
                                              4.0 * original[0] / resized[0], 4.0 * original[1] / resized[1])[:, 0]


def assert_crops_match_the_single_resize(outputs, padded, resized, original, score_threshold=0.2, max_instances=100):
    """Same scores and labels as `postprocess(sort=True)` cut to `max_instances`; the same masks, except
    pixels whose probability is at the threshold to float rounding; every pixel the resize sets in a crop."""
    scores, labels, masks = postprocess(*outputs, padded, resized, original, score_threshold, 0.45, sort=True)
    crop_scores, crop_labels, crops = postprocess_crops(*outputs, padded, resized, original, score_threshold, 0.45,
                                                        max_instances=max_instances)
    assert torch.equal(crop_scores, scores[:max_instances]) and torch.equal(crop_labels, labels[:max_instances])
    assert crops.num_instances == len(crop_scores) and crops.image_size == tuple(original)
    expected = masks[:max_instances].numpy()
    actual = crops.numpy().to_masks()
    covered = np.zeros_like(expected)
    for instance, (x0, y0, x1, y1) in zip(crops.instances, crops.boxes):
        covered[instance, y0:y1, x0:x1] = True
    assert not (expected & ~covered).any()                # no pixel the resize sets lies outside the crops
    differs = actual != expected
    if differs.any():
        order = torch.argsort(postprocess(*outputs, padded, resized, original, score_threshold, 0.45)[0],
                              descending=True, stable=True)
        keep = torch.nonzero(instance_scores(outputs[0], outputs[1])[0] > score_threshold).squeeze(1)
        probs = single_resize_probabilities(outputs[2][keep], order[:max_instances], resized, original).numpy()
        assert (np.abs(probs[differs] - 0.45) < 1e-5).all()
    return crops


@pytest.mark.parametrize("padded,resized,original", CROP_GEOMETRIES)
def test_crops_equal_the_single_resize_inside_and_hold_all_it_sets(padded, resized, original):
    crops = assert_crops_match_the_single_resize(decoder_outputs(padded), padded, resized, original)
    assert len(crops) > 10


def test_noisy_masks_all_kept_give_the_same_masks():
    """Random-weights-like masks: logits near the threshold everywhere, every query kept."""
    padded, resized, original = GEOMETRIES[0]
    logits, objectness, masks = decoder_outputs(padded, seed=4)
    noise = torch.randn(masks.shape, generator=torch.Generator().manual_seed(5)) * 0.3
    assert_crops_match_the_single_resize((logits, objectness, noise), padded, resized, original, score_threshold=0.0)


def test_max_instances_keeps_the_best_scores():
    padded, resized, original = GEOMETRIES[1]
    crops = assert_crops_match_the_single_resize(decoder_outputs(padded), padded, resized, original, max_instances=5)
    assert crops.num_instances == 5 and set(crops.instances.tolist()) <= set(range(5))
    _, _, none = postprocess_crops(*decoder_outputs(padded), padded, resized, original, 0.2, 0.45, max_instances=0)
    assert none.num_instances == 0 and len(none) == 0


def blobs(padded, centres, radius=3.0):
    """One query whose mask logits are positive in discs (on the 1/4 map) around `centres`, else -8."""
    hq, wq = padded[0] // 4, padded[1] // 4
    ys, xs = torch.meshgrid(torch.arange(hq), torch.arange(wq), indexing="ij")
    inside = torch.zeros(hq, wq, dtype=torch.bool)
    for cy, cx in centres:
        inside |= (ys - cy) ** 2 + (xs - cx) ** 2 <= radius ** 2
    masks = torch.where(inside, 8.0, -8.0)[None]
    return torch.full((1, 2), 4.0), torch.full((1, 1), 4.0), masks


def test_parts_far_apart_get_crops_of_their_own():
    padded, resized, original = GEOMETRIES[0]
    outputs = blobs(padded, [(10, 10), (150, 200)])
    crops = assert_crops_match_the_single_resize(outputs, padded, resized, original)
    assert len(crops) == 2
    areas = (crops.boxes[:, 2] - crops.boxes[:, 0]) * (crops.boxes[:, 3] - crops.boxes[:, 1])
    assert areas.sum() < 0.02 * original[0] * original[1]
    close = assert_crops_match_the_single_resize(blobs(padded, [(50, 50), (50, 56)]), padded, resized, original)
    assert len(close) == 1


@pytest.mark.parametrize("settings", [
    {"BATCHED_CROP_SIZE": 10 ** 6},                                    # every crop in the batched products
    {"BATCHED_CROP_SIZE": 0},                                          # every crop separably (CPU)
    {"BATCHED_CROP_SIZE": 0, "MAX_ROW_PHASES": 0},                     # separably, rows by index
])
@pytest.mark.parametrize("padded,resized,original", [CROP_GEOMETRIES[0], CROP_GEOMETRIES[2], CROP_GEOMETRIES[5]])
def test_every_way_of_resizing_a_crop_gives_the_same_masks(monkeypatch, settings, padded, resized, original):
    for name, value in settings.items():
        monkeypatch.setattr(mask_paste, name, value)
    mask_paste.row_blends.cache_clear()                   # blends kept from other settings
    assert_crops_match_the_single_resize(decoder_outputs(padded, num_queries=30), padded, resized, original)
    mask_paste.row_blends.cache_clear()


@pytest.mark.parametrize("padded,resized,original", [CROP_GEOMETRIES[0], CROP_GEOMETRIES[2], CROP_GEOMETRIES[5]])
def test_products_of_a_gpu_give_the_separable_masks(padded, resized, original):
    """The GPU's large crops (`paste_by_products`, one product per axis) against the CPU's, on the CPU."""
    _, _, masks = decoder_outputs(padded, num_queries=6)
    probs = image_window(masks.sigmoid(), resized)
    rows, cols = mask_paste.axis_maps(tuple(original), tuple(resized), tuple(probs.shape[-2:]))
    box = (original[1] // 5, original[0] // 7, original[1], original[0] - 1)
    shape = (len(probs), box[3] - box[1], box[2] - box[0])
    separable, products = torch.empty(shape, dtype=torch.bool), torch.empty(shape, dtype=torch.bool)
    mask_paste.paste_separable(probs, np.arange(len(probs)), rows, cols, box, 0.45, separable)
    mask_paste.paste_by_products(probs, rows, cols, box, 0.45, products)
    assert separable.any() and (~separable).any()
    assert (separable != products).float().mean() < 1e-3


def test_crops_of_nothing_above_the_threshold():
    padded, resized, original = GEOMETRIES[1]
    scores, labels, crops = postprocess_crops(*decoder_outputs(padded), padded, resized, original, 1.0, 0.45)
    assert scores.shape == (0,) and labels.shape == (0,) and len(crops) == 0
    assert crops.numpy().to_masks().shape == (0, *original)
