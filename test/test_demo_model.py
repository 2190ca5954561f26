"""The shipped demo model finds the shapes of the scenes it was trained on, with the right labels."""
import numpy as np
import torch

from sparseinst_core import Predictor, build_model, load_model
from sparseinst_core.data.synthetic import DEMO_STYLE, render_scene
from sparseinst_core.inference import load_predictor
from sparseinst_core.io import demo_weights_path

# Recall of the shipped model on these scenes is 0.90 (see its model card for the COCO AP); a model that
# had not learned, or labels in the wrong order, gets close to 0.
MIN_RECALL = 0.7


def labelled_recall(model, num_scenes=12, seed=0) -> float:
    """Fraction of ground-truth shapes matched by a detection of the same label with mask IoU > 0.5."""
    predictor = Predictor(model, min_size=model.config.min_size_test, max_size=model.config.max_size_test,
                          score_threshold=0.3)
    rng = np.random.default_rng(seed)
    found = total = 0
    for _ in range(num_scenes):
        image, masks, labels = render_scene(rng, 240, 320, **DEMO_STYLE)
        result = predictor(image)
        for mask, label in zip(masks, labels):
            same_label = result.masks[result.labels == label]                     # (k, H, W)
            if len(same_label):
                iou = (same_label & mask).sum(axis=(1, 2)) / (same_label | mask).sum(axis=(1, 2))
                found += int(iou.max() > 0.5)
            total += 1
    return found / total


def test_demo_model_detects_and_labels_generated_shapes():
    loaded = load_predictor("demo")
    model = loaded.predictor.model
    assert loaded.class_names == ["circle", "square", "triangle", "star", "ellipse", "hexagon"]
    assert (loaded.predictor.min_size, loaded.predictor.max_size) == (model.config.min_size_test,
                                                                      model.config.max_size_test)
    assert labelled_recall(model) >= MIN_RECALL


def test_the_recall_check_fails_for_an_untrained_model():
    torch.manual_seed(0)
    demo, _ = load_model(demo_weights_path())
    untrained = build_model(demo.config).eval()
    assert labelled_recall(untrained, num_scenes=3) < 0.2
