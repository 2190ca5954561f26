"""Several images in one call (several cameras): a camera's results do not depend on the other images.

The instance activation maps are normalised over the whole feature map, so padding an image to a larger
common size would change its results; the predictor runs each padded size as a batch of its own."""
import numpy as np
import pytest
import torch

from sparseinst_core import Predictor, build_model
from sparseinst_core.data.synthetic import render_scene


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    model = build_model("r18_giam", num_classes=3).eval()
    return Predictor(model, min_size=96, max_size=192, score_threshold=0.0, device="cpu")


def scene(height, width, seed):
    return render_scene(np.random.default_rng(seed), height, width)[0]


def assert_identical(batched, alone):
    np.testing.assert_array_equal(batched.labels, alone.labels)
    np.testing.assert_array_equal(batched.scores, alone.scores)
    np.testing.assert_array_equal(batched.masks, alone.masks)


def test_a_camera_in_a_mixed_size_batch_gets_exactly_its_results_alone(predictor):
    # padded network inputs 96x128, 128x192 and 96x96: three sizes, each alone in its batch
    images = [scene(72, 96, 0), scene(96, 144, 1), scene(64, 64, 2)]
    batched = predictor(images)
    assert len(batched[0]) > 0
    for image, result in zip(images, batched):
        assert_identical(result, predictor(image))


def test_same_size_cameras_share_one_forward_and_match_their_single_results(predictor, monkeypatch):
    images = [scene(72, 96, seed) for seed in range(3)] + [scene(64, 64, 3)]
    batch_sizes = []
    forward = predictor.forward
    monkeypatch.setattr(predictor, "forward", lambda batch: batch_sizes.append(len(batch)) or forward(batch))
    batched = predictor(images)
    assert batch_sizes == [3, 1]
    for image, result in zip(images, batched):
        alone = predictor(image)
        np.testing.assert_array_equal(result.labels, alone.labels)
        np.testing.assert_allclose(result.scores, alone.scores, rtol=1e-4, atol=1e-6)
        agreement = (result.masks == alone.masks).mean()
        assert agreement > 0.999, agreement


def test_results_come_back_in_the_order_of_the_images(predictor):
    images = [scene(64, 64, 4), scene(72, 96, 5), scene(64, 64, 6)]
    assert [r.masks.shape[1:] for r in predictor(images)] == [(64, 64), (72, 96), (64, 64)]
