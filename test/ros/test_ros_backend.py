"""The node's `backend` parameter: ONNX Runtime gives the same detections as PyTorch."""
import numpy as np
from ros_harness import MIN_SIZE, scene_image

from sparseinst_core.inference.backends import ExportOnDemandBackend
from sparseinst_ros.node import load_predictor


def test_onnxruntime_backend_matches_torch(weights_file):
    common = dict(weights=str(weights_file), preset="auto", class_names_file="", device="cpu", precision="fp32",
                  min_size=MIN_SIZE, max_size=2 * MIN_SIZE, score_threshold=0.0, mask_threshold=0.45)
    torch_model = load_predictor(**common)
    onnx_model = load_predictor(**common, backend="onnxruntime")
    assert isinstance(onnx_model.predictor.backend, ExportOnDemandBackend)
    image = scene_image()
    expected, got = torch_model.predictor(image), onnx_model.predictor(image)
    np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-3, atol=1e-4)
    np.testing.assert_array_equal(got.labels, expected.labels)
    agreement = (got.masks == expected.masks).mean()
    assert agreement > 0.999
