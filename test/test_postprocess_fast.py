"""The fast post-processing against the official two-step procedure (`postprocess_reference`)."""
import pytest
import torch
import torch.nn.functional as F

from sparseinst_core.inference.postprocess import postprocess, postprocess_reference, resize_masks_to_original


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
