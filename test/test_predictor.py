"""The Predictor's test-time procedure, step by step, against small hand-computed cases."""
import math

import numpy as np
import pytest
import torch

from sparseinst_core import Instances, Predictor, build_model
from sparseinst_core.model import resized_shape
from sparseinst_core.model.presets import ModelConfig

NEG, POS = -8.0, 8.0


class ScriptedModel(torch.nn.Module):
    """Stands in for the network: records its input and returns the outputs a test scripts."""

    def __init__(self, logits, objectness, mask_fn):
        super().__init__()
        self.config = ModelConfig(num_classes=logits.shape[-1])
        self.logits, self.objectness, self.mask_fn = logits, objectness, mask_fn
        self.inputs = []

    def forward(self, images):
        self.inputs.append(images.clone())
        B, _, H, W = images.shape
        masks = torch.stack([self.mask_fn(H // 4, W // 4) for _ in range(B)])
        return {"pred_logits": self.logits.expand(B, -1, -1), "pred_scores": self.objectness.expand(B, -1, -1),
                "pred_masks": masks}


def logit(p):
    return math.log(p / (1 - p))


@pytest.mark.parametrize("size,min_size,max_size,expected", [
    ((480, 640), 640, 853, (640, 853)),     # the longer side is capped: 853.3 -> 853
    ((100, 200), 50, 1000, (50, 100)),
    ((300, 100), 60, 150, (150, 50)),      # portrait, capped
    ((333, 500), 640, 853, (568, 853)),
    ((64, 96), 64, 1000, (64, 96)),
])
def test_resized_shape(size, min_size, max_size, expected):
    assert resized_shape(*size, min_size, max_size) == expected


def one_query_model(score_class=0.81, objectness=0.64, mask=None):
    logits = torch.tensor([[[logit(score_class), logit(0.01)], [logit(0.02), logit(0.03)]]])
    scores = torch.tensor([[[logit(objectness)], [logit(0.5)]]])
    return ScriptedModel(logits, scores, mask or (lambda h, w: torch.full((2, h, w), NEG)))


def test_input_is_resized_and_padded_with_the_pixel_mean():
    model = one_query_model()
    predictor = Predictor(model, min_size=40, max_size=1000, device="cpu")
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    predictor(image)
    batch = model.inputs[0]
    assert batch.shape == (1, 3, 64, 64)                   # resized to 40x60, padded to 64x64
    mean = torch.tensor(model.config.pixel_mean).view(3, 1)
    assert torch.equal(batch[0, :, 40:, :].flatten(1), mean.expand(3, 24 * 64))
    assert torch.equal(batch[0, :, :40, 60:].flatten(1), mean.expand(3, 40 * 4))


def test_no_resize_when_already_at_size():
    model = one_query_model()
    image = np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    Predictor(model, min_size=64, max_size=1000, device="cpu")(image)
    assert torch.equal(model.inputs[0][0], torch.from_numpy(image).permute(2, 0, 1).float())


def test_score_is_sqrt_of_class_times_objectness_rescored_by_maskness():
    def mask(h, w):
        m = torch.full((2, h, w), NEG)
        m[0, : h // 2, : w // 2] = logit(0.9)              # confident inside, so maskness = 0.9
        return m
    predictor = Predictor(one_query_model(mask=mask), min_size=64, max_size=64, score_threshold=0.3,
                          device="cpu")
    result = predictor(np.zeros((64, 64, 3), np.uint8))
    assert list(result.labels) == [0]                      # query 1 scores sqrt(0.03 * 0.5) < 0.3
    assert result.scores[0] == pytest.approx(math.sqrt(0.81 * 0.64) * 0.9, rel=1e-5)


def test_threshold_applies_before_rescoring():
    """sqrt(0.81*0.64) = 0.72 passes 0.7 although the rescored score 0.72*0.9 does not."""
    def mask(h, w):
        m = torch.full((2, h, w), NEG)
        m[0, :8, :8] = logit(0.9)
        return m
    predictor = Predictor(one_query_model(mask=mask), min_size=64, max_size=64, score_threshold=0.7,
                          device="cpu")
    assert len(predictor(np.zeros((64, 64, 3), np.uint8))) == 1


def test_padding_is_cropped_before_resizing_to_the_image():
    """A mask that is positive only over the padding vanishes; one over the image fills it."""
    def padding_only(h, w):
        m = torch.full((2, h, w), NEG)
        m[0, 10:, :] = POS                                 # rows 40.. of the 64-px input: padding
        return m
    image = np.zeros((40, 56, 3), np.uint8)
    result = Predictor(one_query_model(mask=padding_only), min_size=40, max_size=56, score_threshold=0.0,
                       device="cpu")(image)
    assert result.masks.shape[1:] == (40, 56)
    assert not result.masks[0].any()

    def image_only(h, w):
        m = torch.full((2, h, w), NEG)
        m[0, :10, :14] = POS                               # exactly the 40x56 image at stride 4
        return m
    result = Predictor(one_query_model(mask=image_only), min_size=40, max_size=56, score_threshold=0.0,
                       device="cpu")(image)
    # Every pixel but the far corner: there bilinear weights 0.625 x 0.625 on the one positive
    # stride-4 cell give probability 0.39 < mask_threshold 0.45.
    mask = result.masks[0]
    assert mask[:-1, :].all() and mask[:, :-1].all() and not mask[-1, -1]


def test_masks_come_back_at_the_original_resolution():
    def left_half(h, w):
        m = torch.full((2, h, w), NEG)
        m[:, :, : w // 2] = POS
        return m
    image = np.zeros((30, 50, 3), np.uint8)                # resized to 64x107, padded to 64x128
    result = Predictor(one_query_model(mask=left_half), min_size=64, max_size=1000, score_threshold=0.0,
                       device="cpu")(image)
    assert result.masks.shape == (2, 30, 50) and result.masks.dtype == bool
    # the left half of the padded input is 64 of 107 resized columns: 0.598 of the image width
    columns = result.masks[0].all(axis=0)
    assert abs(columns.sum() - round(50 * 64 / 107)) <= 1


def test_results_are_sorted_by_descending_score():
    logits = torch.tensor([[[logit(0.3)], [logit(0.9)], [logit(0.6)]]])
    model = ScriptedModel(logits, torch.zeros(1, 3, 1), lambda h, w: torch.full((3, h, w), POS))
    result = Predictor(model, min_size=32, max_size=32, score_threshold=0.0, device="cpu")(
        np.zeros((32, 32, 3), np.uint8))
    assert list(result.scores) == sorted(result.scores, reverse=True)
    assert result.scores[0] == pytest.approx(math.sqrt(0.9 * 0.5) * 1.0, rel=1e-3)


def test_a_list_of_images_gives_a_list():
    predictor = Predictor(build_model("r18_giam", num_classes=2), min_size=64, max_size=96, device="cpu")
    images = [np.zeros((48, 64, 3), np.uint8), np.zeros((64, 48, 3), np.uint8)]
    results = predictor(images)
    assert [r.masks.shape[1:] for r in results] == [(48, 64), (64, 48)]
    assert predictor([]) == []


@pytest.mark.parametrize("image,error", [
    (np.zeros((32, 32), np.uint8), "grey"),
    (np.zeros((32, 32, 1), np.uint8), "grey"),
    (np.zeros((32, 32, 4), np.uint8), "4 channels"),
    (np.zeros((0, 32, 3), np.uint8), "zero size"),
    (np.zeros((32, 32, 3), np.float32), "uint8"),
    (np.zeros((2, 32, 32, 3), np.uint8), "shape"),
    ([[0, 0, 0]], "numpy"),
])
def test_bad_images_get_a_clear_error(image, error):
    predictor = Predictor(build_model("r18_giam", num_classes=2), min_size=32, max_size=32, device="cpu")
    with pytest.raises((ValueError, TypeError), match=error):
        predictor(image)


def test_device_and_precision_errors():
    model = build_model("r18_giam", num_classes=2)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            Predictor(model, device="cuda")
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        Predictor(model, device="cpu", precision="fp16")
    with pytest.raises(ValueError, match="precision"):
        Predictor(model, device="cpu", precision="int8")


@pytest.mark.parametrize("postprocess", ["fast", "reference"])
def test_max_instances_keeps_the_best_scores(postprocess):
    logits = torch.tensor([[[logit(0.3)], [logit(0.9)], [logit(0.6)], [logit(0.8)]]])
    model = ScriptedModel(logits, torch.zeros(1, 4, 1), lambda h, w: torch.full((4, h, w), POS))
    predictor = Predictor(model, min_size=32, max_size=32, score_threshold=0.0, device="cpu",
                          postprocess=postprocess, max_instances=2)
    result = predictor(np.zeros((32, 32, 3), np.uint8))
    assert result.scores.tolist() == pytest.approx([math.sqrt(0.9 * 0.5), math.sqrt(0.8 * 0.5)], rel=1e-3)
    assert result.masks.shape == (2, 32, 32)
    with pytest.raises(ValueError, match="max_instances"):
        Predictor(model, device="cpu", max_instances=-1)


@pytest.mark.parametrize("postprocess", ["fast", "reference"])
def test_class_filter_applies_before_the_max_instances_cut(postprocess):
    # queries' classes 0, 1, 1, 1 with scores rising 0.3 .. 0.9: the best two of class 1, not of all
    logits = torch.full((1, 4, 2), logit(0.01))
    for query, (label, probability) in enumerate([(0, 0.95), (1, 0.3), (1, 0.6), (1, 0.8)]):
        logits[0, query, label] = logit(probability)
    model = ScriptedModel(logits, torch.zeros(1, 4, 1), lambda h, w: torch.full((4, h, w), POS))
    predictor = Predictor(model, min_size=32, max_size=32, score_threshold=0.0, device="cpu",
                          postprocess=postprocess, max_instances=2)
    predictor.classes = frozenset({1})
    result = predictor(np.zeros((32, 32, 3), np.uint8))
    assert result.labels.tolist() == [1, 1]
    assert result.scores.tolist() == pytest.approx([math.sqrt(0.8 * 0.5), math.sqrt(0.6 * 0.5)], rel=1e-3)
    predictor.classes = None
    assert predictor(np.zeros((32, 32, 3), np.uint8)).labels.tolist() == [0, 1]


def test_masks_come_as_crops_and_as_full_masks_on_demand():
    def square(h, w):
        m = torch.full((2, h, w), NEG)
        m[0, 2:6, 3:8] = POS                               # 16x20 px of the 64x64 input
        return m
    result = Predictor(one_query_model(mask=square), min_size=64, max_size=64, score_threshold=0.3,
                       device="cpu")(np.zeros((64, 64, 3), np.uint8))
    crops = result.mask_crops
    assert crops.num_instances == 1 and crops.values.size < 0.2 * 64 * 64     # only around the square
    np.testing.assert_array_equal(result.masks, crops.to_masks())
    ys, xs = np.nonzero(result.masks[0])
    assert result.boxes.tolist() == [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]]
    assert result.boxes.dtype == np.float32


def test_instances_from_full_masks_give_crops_and_boxes():
    masks = np.zeros((2, 10, 12), bool)
    masks[0, 2:5, 3:9] = True
    result = Instances(np.array([0.9, 0.5], np.float32), np.array([1, 0]), masks)
    assert result.masks is masks and len(result) == 2
    np.testing.assert_array_equal(result.mask_crops.to_masks(), masks)
    assert result.boxes.tolist() == [[3, 2, 9, 5], [0, 0, 0, 0]]
    with pytest.raises(ValueError, match="either masks"):
        Instances(result.scores, result.labels)
    with pytest.raises(ValueError, match="either masks"):
        Instances(result.scores, result.labels, masks, mask_crops=result.mask_crops)
