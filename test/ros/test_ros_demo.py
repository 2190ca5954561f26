"""`make demo`'s ROS part end to end: image source -> node -> demo client, three processes, the demo model."""
import subprocess
import sys

import cv2
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]


def test_run_demo_prints_detections_and_saves_overlays(ros, tmp_path):
    result = subprocess.run([sys.executable, "-m", "sparseinst_ros.tools.run_demo", "--output", str(tmp_path),
                             "--frames", "5", "--device", "cpu", "--timeout", "120"],
                            capture_output=True, text=True, timeout=240)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output + (tmp_path / "node.log").read_text()
    assert "received 5 results" in output
    lines = [line for line in output.splitlines() if line.lstrip().startswith("[") and "stamp" in line]
    assert len(lines) >= 5
    objects = [line.split() for line in output.splitlines() if line.startswith("       ") and len(line.split()) == 5
               and line.split()[0].isdigit()]                               # id class x y z, from the depth
    assert objects and all(0.4 < float(z) < 4.6 for *_, z in objects)
    assert (tmp_path / "ground_truth.jsonl").read_text().count("\n") >= 5
    overlays = sorted(tmp_path.glob("overlay_*.png"))
    assert len(overlays) == 3
    image = cv2.imread(str(overlays[0]))
    assert image is not None and image.shape[2] == 3 and image.std() > 0
    assert "start-up failed" not in (tmp_path / "node.log").read_text()
