"""The node's `backend` parameter: ONNX Runtime gives the same detections as PyTorch."""
import numpy as np
from ros_harness import MIN_SIZE, scene_image

from sparseinst_core.inference import load_predictor
from sparseinst_core.inference.backends import ExportOnDemandBackend
from sparseinst_ros.parameters import PARAMETERS, loader_arguments


def test_onnxruntime_backend_matches_torch(weights_file):
    values = {name: spec.default for name, spec in PARAMETERS.items()}
    values.update(weights=str(weights_file), device="cpu", min_size=MIN_SIZE, max_size=2 * MIN_SIZE,
                  score_threshold=0.0)
    torch_model = load_predictor(**loader_arguments(values))
    onnx_model = load_predictor(**loader_arguments({**values, "backend": "onnxruntime"}))
    assert isinstance(onnx_model.predictor.backend, ExportOnDemandBackend)
    image = scene_image()
    expected, got = torch_model.predictor(image), onnx_model.predictor(image)
    np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-3, atol=1e-4)
    np.testing.assert_array_equal(got.labels, expected.labels)
    agreement = (got.masks == expected.masks).mean()
    assert agreement > 0.999
