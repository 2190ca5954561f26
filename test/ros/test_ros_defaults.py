"""The installed `sparseinst_node` starts with no arguments at all and segments with the shipped demo model."""
import subprocess
import sys
from pathlib import Path

import pytest
from ros_harness import Client, scene_image, stamp

from sparseinst_ros.conversions import numpy_to_image

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]

EXECUTABLE = Path(sys.executable).parent / "sparseinst_node"   # the console script of the README set-up


@pytest.mark.skipif(not EXECUTABLE.is_file(), reason="the package is not installed into this interpreter's venv")
def test_node_starts_without_arguments_on_the_demo_model(ros, tmp_path):
    log_path = tmp_path / "node.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([str(EXECUTABLE)], stdout=log, stderr=subprocess.STDOUT)
    client = Client("defaults_test_client", image_topic="/image")   # the node's default topic: `image`
    try:
        assert client.wait_for_subscriber(timeout=120), log_path.read_text()
        msg = numpy_to_image(scene_image(192, 256, seed=3), "rgb8")
        msg.header.stamp = stamp(9000)
        msg.header.frame_id = "camera"
        out = client.send(msg, timeout=60)
        assert out["detections"].header == msg.header
        assert len(out["detections"].detections) > 0      # the demo model finds the generated shapes
        log_text = log_path.read_text()
        assert "demo_r18_synthetic.safetensors" in log_text and "listening on /image" in log_text
    finally:
        client.destroy()
        process.terminate()
        assert process.wait(timeout=30) == 0, log_path.read_text()
