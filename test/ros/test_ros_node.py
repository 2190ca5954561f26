"""The node in its own process, driven over Fast DDS from this one: outputs, run-time parameters, the enable
service, bad inputs, camera_info, diagnostics, the latest-frame policy and start-up failures."""
import itertools
import subprocess
import sys

import numpy as np
import pytest
from ros_harness import (CLASS_NAMES, CONFIG, MIN_SIZE, UNUSABLE_WEIGHTS, Client, scene_image, stamp, start_process,
                         unusable_weights)
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image
from std_srvs.srv import SetBool

from sparseinst_ros.conversions import image_to_numpy, numpy_to_image
from sparseinst_ros.detections import box_center_size
from sparseinst_ros.parameters import PARAMETERS
from sparseinst_ros.tools.processes import product_environment

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]

IMAGE = scene_image()                  # 96x128, the scene the test weights were calibrated on
_seconds = itertools.count(1000)


def frame(pixels=IMAGE, encoding="rgb8", frame_id="camera_optical") -> Image:
    """An image message with a stamp no other test uses."""
    msg = numpy_to_image(pixels, encoding)
    msg.header.stamp = stamp(next(_seconds), 123456789)
    msg.header.frame_id = frame_id
    return msg


@pytest.fixture(scope="module")
def node(ros, weights_file, tmp_path_factory):
    # the shipped parameters file, with the test's model and sizes on top
    process = start_process("sparseinst_ros.node", tmp_path_factory.mktemp("node") / "node.log", params_file=CONFIG,
                          params=dict(weights=str(weights_file), device="cpu", min_size=MIN_SIZE,
                                      max_size=2 * MIN_SIZE, diagnostics_period=0.5, max_input_pixels=MAX_PIXELS),
                          remaps={"image": "/camera/image_raw"})
    yield process
    assert process.stop() == 0, process.log()


MAX_PIXELS = 320 * 240


@pytest.fixture(scope="module")
def client(node):
    client = Client("node_test_client")
    assert client.wait_for_subscriber(timeout=120), f"the node did not subscribe:\n{node.log()}"
    yield client
    client.destroy()


@pytest.fixture
def restore_parameters(client):
    yield
    client.set_parameters(score_threshold=0.3, mask_threshold=0.45, classes=[])


def detection_summary(detections):
    return [(d.id, d.results[0].hypothesis.class_id, d.results[0].hypothesis.score) for d in detections.detections]


def test_outputs_carry_the_input_stamp_and_frame_id(client):
    msg = frame(frame_id="front_camera_optical")
    out = client.send(msg)
    for output in out.values():
        assert output.header.stamp == msg.header.stamp
        assert output.header.frame_id == "front_camera_optical"
    mask = out["instance_mask"]
    assert (mask.encoding, mask.height, mask.width) == ("mono16", IMAGE.shape[0], IMAGE.shape[1])


def test_label_image_and_detections_agree(client):
    out = client.send(frame())
    labels = image_to_numpy(out["instance_mask"])
    detections = out["detections"].detections
    assert len(detections) >= 2
    assert sorted(int(d.id) for d in detections) == sorted(set(np.unique(labels).tolist()) - {0})
    scores = [d.results[0].hypothesis.score for d in detections]
    assert scores == sorted(scores, reverse=True) and min(scores) >= 0.3
    for detection in detections:
        ys, xs = np.nonzero(labels == int(detection.id))
        assert len(xs) > 0
        center_x, center_y, size_x, size_y = box_center_size((xs.min(), ys.min(), xs.max(), ys.max()))
        box = detection.bbox
        assert (box.center.position.x, box.center.position.y, box.size_x, box.size_y) == \
            (center_x, center_y, size_x, size_y)
        assert 0 <= int(detection.results[0].hypothesis.class_id) < len(CLASS_NAMES)


def test_overlay_is_published_while_subscribed(client):
    out = client.send(frame(), topics=("overlay",))
    overlay = out["overlay"]
    assert (overlay.encoding, overlay.height, overlay.width) == ("rgb8", IMAGE.shape[0], IMAGE.shape[1])
    assert not np.array_equal(image_to_numpy(overlay), IMAGE)    # masks are drawn on it


def test_class_filter_changes_at_run_time(client, restore_parameters):
    everything = {d[1] for d in detection_summary(client.send(frame())["detections"])}
    assert len(everything) >= 2, "the test weights should give several classes"
    kept = sorted(everything)[0]
    assert client.set_parameters(classes=[CLASS_NAMES[int(kept)]])[0].successful
    filtered = detection_summary(client.send(frame())["detections"])
    assert filtered and {d[1] for d in filtered} == {kept}
    by_id = sorted(everything)[1]
    assert client.set_parameters(classes=[by_id])[0].successful
    assert {d[1] for d in detection_summary(client.send(frame())["detections"])} == {by_id}
    assert client.set_parameters(classes=[])[0].successful
    assert {d[1] for d in detection_summary(client.send(frame())["detections"])} == everything


def test_the_cli_empty_list_clears_the_class_filter(client, restore_parameters):
    everything = {d[1] for d in detection_summary(client.send(frame())["detections"])}
    assert client.set_parameters(classes=[CLASS_NAMES[int(min(everything))]])[0].successful
    assert len({d[1] for d in detection_summary(client.send(frame())["detections"])}) == 1
    # `ros2 param set /sparseinst_node classes "[]"` sends an empty bool array
    assert client.set_parameters(Parameter("classes", Parameter.Type.BOOL_ARRAY, []))[0].successful
    assert {d[1] for d in detection_summary(client.send(frame())["detections"])} == everything


def test_deleting_parameters_is_refused_and_every_parameter_stays_settable(client, restore_parameters):
    results = client.delete_parameters(*PARAMETERS)                  # `ros2 param delete`, one per parameter
    assert len(results) == len(PARAMETERS) and not any(result.successful for result in results)
    assert all(result.reason for result in results)
    classes = results[list(PARAMETERS).index("classes")]
    assert classes.reason == ("classes cannot be deleted: the node needs a value for each of its parameters; to "
                              "publish all classes, set classes to []")
    assert set(PARAMETERS) <= set(client.list_parameters())
    assert client.set_parameters(classes=[CLASS_NAMES[0]], score_threshold=0.3)[0].successful
    assert client.send(frame())["detections"]


def test_unknown_class_in_the_filter_is_rejected_with_a_reason(client):
    result = client.set_parameters(classes=["hexagon"])[0]
    assert not result.successful and "unknown class 'hexagon'" in result.reason


def test_score_threshold_changes_at_run_time(client, restore_parameters):
    # (the threshold applies before the official maskness rescoring, so published scores may lie below it)
    before = detection_summary(client.send(frame())["detections"])
    assert before
    assert client.set_parameters(score_threshold=0.99)[0].successful
    out = client.send(frame())
    assert not out["detections"].detections and not image_to_numpy(out["instance_mask"]).any()
    assert client.set_parameters(score_threshold=0.3)[0].successful
    after = detection_summary(client.send(frame())["detections"])
    # the same classes and scores; the ids are track ids, and the empty frame between may have ended the tracks
    assert [d[1:] for d in after] == [d[1:] for d in before]


def test_mask_threshold_changes_at_run_time(client, restore_parameters):
    before = np.count_nonzero(image_to_numpy(client.send(frame())["instance_mask"]))
    assert client.set_parameters(mask_threshold=1.0)[0].successful   # no probability exceeds 1: no masks
    assert np.count_nonzero(image_to_numpy(client.send(frame())["instance_mask"])) < before


def test_out_of_range_threshold_is_rejected(client):
    result = client.set_parameters(score_threshold=1.5)[0]
    assert not result.successful


@pytest.mark.parametrize("name,value", [("weights", "/tmp/other.pth"), ("min_size", 320), ("device", "cpu")])
def test_start_up_parameters_are_rejected_at_run_time_with_a_reason(client, name, value):
    result = client.set_parameters(**{name: value})[0]
    assert not result.successful
    assert name in result.reason and "only score_threshold, mask_threshold, classes" in result.reason


def test_enable_service_pauses_and_resumes_inference(client):
    enable = client.node.create_client(SetBool, "/sparseinst_node/enable")
    response = client.call(enable, SetBool.Request(data=False), retry_after=5.0)
    assert response.success and "paused" in response.message
    try:
        assert client.receives_nothing_for(frame(), seconds=3.0)
        report = client.latest_diagnostics()
        assert report["enabled"] == "false" and int(report["frames ignored while paused"]) > 0
    finally:
        assert client.call(enable, SetBool.Request(data=True), retry_after=5.0).success
    client.send(frame())
    client.node.destroy_client(enable)


def bad_step(msg):
    msg.step = msg.width * 3 - 1
    return msg


def bad_size(msg):
    msg.data = msg.data[:-7]
    return msg


def unknown_encoding(msg):
    msg.encoding = "32FC1"
    return msg


def zero_size(msg):
    msg.width, msg.height, msg.step = 0, 0, 0
    msg.data = msg.data[:0]
    return msg


def too_large(_):
    return frame(np.zeros((241, 320, 3), np.uint8))            # one row more than max_input_pixels allows


def one_row(_):
    return frame(np.zeros((1, 200, 3), np.uint8))


def odd_width_yuv422(_):
    return frame(np.full((96, 127, 2), 128, np.uint8), encoding="yuv422")


@pytest.mark.parametrize("corrupt,cause,message", [
    (unknown_encoding, "unknown_encoding", "unsupported image encoding '32FC1'"),
    (bad_step, "bad_step", "step 383 is smaller than width 128"),
    (bad_size, "bad_size", "data has 36857 bytes but step 384 x height 96 = 36864"),
    (zero_size, "zero_size", "image has zero size (0x0)"),
    (too_large, "too_large", f"image 320x241 has 77120 pixels, more than max_input_pixels = {MAX_PIXELS}"),
    (one_row, "degenerate_size", "image 200x1 is too elongated for the model: its longer side may be at most 16 times "
                                 "its shorter (aspect-ratio limit 16:1)"),
    (odd_width_yuv422, "odd_width", "yuv422 is packed 4:2:2 (two pixels share their chroma), so its width must be "
                                    "even; got 127x96"),
])
def test_bad_input_is_counted_and_the_node_keeps_running(client, node, corrupt, cause, message):
    before = int(client.latest_diagnostics().get(f"bad input: {cause}", 0))
    bad = corrupt(frame())
    assert client.receives_nothing_for(bad, seconds=2.0)
    client.send(frame())                                      # still serving
    after = int(client.latest_diagnostics()[f"bad input: {cause}"])
    assert after > before
    assert node.alive() and f"skipped a frame [{cause}]: {message}" in node.log()


def test_a_size_change_is_counted_once_as_such_and_said_at_info_level(client, node):
    client.send(frame())
    before = client.latest_diagnostics()
    out = client.send(frame(scene_image(64, 80, seed=3)))
    assert (out["instance_mask"].height, out["instance_mask"].width) == (64, 80)
    client.send(frame())
    after = client.latest_diagnostics()
    assert int(after["image size changes"]) == int(before["image size changes"]) + 2
    assert after["bad input frames"] == before["bad input frames"]
    assert "[INFO]" in next(line for line in node.log().splitlines()
                            if "image size changed from 128x96 to 80x64; outputs follow the new size" in line)
    assert "size_changed" not in node.log()


def test_camera_info_is_republished_with_the_output_header(client):
    msg = frame(frame_id="camera_optical")
    info = CameraInfo(height=96, width=128, distortion_model="plumb_bob", d=[0.1, 0.0, 0.0, 0.0, 0.0],
                      k=[100.0, 0.0, 64.0, 0.0, 100.0, 48.0, 0.0, 0.0, 1.0])
    info.header.stamp, info.header.frame_id = msg.header.stamp, "camera_optical"
    assert client.spin_until(lambda: client.info_pub.get_subscription_count() > 0, 30.0)
    client.info_pub.publish(info)
    client.spin_for(0.3)
    out = client.send(msg, topics=("camera_info", "detections"))["camera_info"]
    assert out.header == msg.header
    assert list(out.k) == list(info.k) and out.distortion_model == "plumb_bob" and (out.width, out.height) == (128, 96)


def test_diagnostics_report_rates_latencies_device_and_model(client, weights_file):
    for _ in range(3):
        client.send(frame())
    report = client.latest_diagnostics()
    assert report["device"] == "cpu" and str(weights_file) in report["model"]
    assert report["image topic"] == "/camera/image_raw"
    assert float(report["frames processed"]) > 0 and int(report["frames received"]) >= int(report["frames processed"])
    for key in ("input rate (Hz)", "output rate (Hz)", "inference latency median (ms)",
                "end-to-end latency median (ms)", "node overhead median (ms)", "frames dropped"):
        assert key in report


def test_frames_arriving_while_busy_replace_the_pending_one(client):
    def counters():
        report = client.latest_diagnostics()
        return np.array([int(report[k]) for k in ("frames received", "frames processed", "frames dropped")])

    before = counters()
    burst = [frame() for _ in range(20)]
    for msg in burst:                                         # far faster than the model
        client.image_pub.publish(msg)
    client.send(burst[-1])                                    # the newest frame is always processed
    received, processed, dropped = counters() - before
    assert received >= 5 and processed < received / 2        # (DDS keeps the last 5 of a burst at most)
    assert received == processed + dropped                    # every frame is processed or counted as dropped


@pytest.mark.parametrize("weights,message", [
    ("/nonexistent/model.pth", "weights file not found: /nonexistent/model.pth"),
    ("corrupt", "truncated or corrupt"),
])
def test_unusable_weights_fail_at_start_up_with_a_clear_message(tmp_path, weights, message):
    if weights == "corrupt":
        weights = tmp_path / "corrupt.pth"
        weights.write_bytes(b"PK\x03\x04 not really a checkpoint")
    process = start_process("sparseinst_ros.node", tmp_path / "node.log",
                          params=dict(weights=str(weights), device="cpu"))
    assert process.process.wait(timeout=120) == 1
    process.stop()
    assert "start-up failed" in process.log() and message in process.log()


def test_invalid_parameter_value_fails_at_start_up(tmp_path, weights_file):
    process = start_process("sparseinst_ros.node", tmp_path / "node.log",
                          params=dict(weights=str(weights_file), device="gpu"))
    assert process.process.wait(timeout=120) == 1
    process.stop()
    assert "expected one of auto, cuda, cpu" in process.log()


def the_failure_line(log: str, prefix: str) -> str:
    """The one line of `log` that starts (after the logger's prefix) with `prefix`; no traceback anywhere."""
    lines = [line for line in log.splitlines() if f"]: {prefix}: " in line]
    assert len(lines) == 1 and "Traceback" not in log, log
    return lines[0].split(f"]: {prefix}: ", 1)[1]


@pytest.mark.parametrize("kind", UNUSABLE_WEIGHTS)
def test_unusable_files_fail_at_start_up_in_one_line_naming_the_file(tmp_path, weights_file, kind):
    weights, class_names, named = unusable_weights(kind, tmp_path, weights_file)
    process = start_process("sparseinst_ros.node", tmp_path / "node.log",
                            params=dict(weights=str(weights), device="cpu", **class_names))
    assert process.process.wait(timeout=120) == 1
    process.stop()
    assert str(named) in the_failure_line(process.log(), "start-up failed")


def test_a_malformed_command_line_fails_at_start_up_in_one_line(tmp_path):
    log = tmp_path / "node.log"
    with open(log, "w") as output:
        status = subprocess.run([sys.executable, "-m", "sparseinst_ros.node", "--ros-args", "-p", "class_names:="],
                                env=product_environment(), stdout=output, stderr=subprocess.STDOUT, timeout=120)
    assert status.returncode == 1
    assert "Couldn't parse parameter override rule: '-p class_names:='" in the_failure_line(log.read_text(),
                                                                                            "start-up failed")


BROKEN_LOADER = """
import sys
import torch
import sparseinst_ros.node as node

def load_predictor(**arguments):
    raise {error}

node.load_predictor = load_predictor
sys.exit(node.run(node.SparseInstNode))
"""


@pytest.mark.parametrize("error,line", [
    ("KeyError('model')", "weights '/w.pth': KeyError: 'model'"),
    ("torch.OutOfMemoryError('CUDA out of memory.\\nTried to allocate 2.00 GiB')",
     "weights '/w.pth': OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"),
])
def test_whatever_loading_raises_ends_in_one_line_and_exit_status_1(tmp_path, error, line):
    """The node's real start-up, with the library's loader replaced by one that raises `error`."""
    script = tmp_path / "broken_loader.py"
    script.write_text(BROKEN_LOADER.format(error=error))
    log = tmp_path / "node.log"
    with open(log, "w") as output:
        status = subprocess.run([sys.executable, str(script), "--ros-args", "-p", "weights:=/w.pth"],
                                env=product_environment(), stdout=output, stderr=subprocess.STDOUT, timeout=120)
    assert status.returncode == 1
    assert the_failure_line(log.read_text(), "start-up failed") == line
