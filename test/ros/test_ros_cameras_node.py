"""Several cameras of different sizes into one node process (`image_topics`): each camera's outputs come under
its own namespace with its own header, equal to what the same frame gives alone, and /diagnostics reports
each camera's rates and counts."""
import itertools
import time

import numpy as np
import pytest
from ros_harness import MIN_SIZE, Client, scene_image, stamp, start_process

from sparseinst_core.inference import load_predictor
from sparseinst_ros.conversions import image_to_numpy, numpy_to_image
from sparseinst_ros.frame_processor import FrameProcessor

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]

# network inputs at MIN_SIZE 128: 128x192, 192x128 and 128x128, three padded sizes in one cycle
CAMERAS = {"front": scene_image(96, 128, seed=0), "rear": scene_image(128, 96, seed=1),
           "side": scene_image(64, 64, seed=2)}
_seconds = itertools.count(5000)


@pytest.fixture(scope="module")
def node(ros, weights_file, tmp_path_factory):
    process = start_process("sparseinst_ros.node", tmp_path_factory.mktemp("cameras") / "node.log",
                            params=dict(weights=str(weights_file), device="cpu", min_size=MIN_SIZE,
                                        max_size=2 * MIN_SIZE, diagnostics_period=0.5,
                                        image_topics=[f"/{name}/image_raw" for name in CAMERAS]))
    yield process
    assert process.stop() == 0, process.log()


@pytest.fixture(scope="module")
def clients(node):
    clients = {name: Client(f"cameras_test_{name}", image_topic=f"/{name}/image_raw", outputs_namespace=name)
               for name in CAMERAS}
    for client in clients.values():
        assert client.wait_for_subscriber(timeout=120), f"the node did not subscribe:\n{node.log()}"
    yield clients
    for client in clients.values():
        client.destroy()


@pytest.fixture(scope="module")
def single(weights_file):
    """The same model and sizes in this process, one frame at a time."""
    model = load_predictor(weights_file, min_size=MIN_SIZE, max_size=2 * MIN_SIZE, device="cpu")
    return FrameProcessor(model)


def frames():
    """One frame per camera, all with one new stamp, each camera with its own frame_id."""
    sec = next(_seconds)
    messages = {}
    for name, pixels in CAMERAS.items():
        messages[name] = numpy_to_image(pixels, "rgb8")
        messages[name].header.stamp = stamp(sec, 250)
        messages[name].header.frame_id = f"{name}_camera_optical"
    return messages


def send_all(clients, messages, topics=("detections", "instance_mask"), infos=None, timeout=60.0):
    """Publish every camera's frame together, after its camera_info in `infos` (again every 2 s: best effort),
    until each camera's outputs arrived."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, msg in messages.items():
            if infos:
                clients[name].info_pub.publish(infos[name])
            clients[name].image_pub.publish(msg)
        retry = time.monotonic() + 2.0
        while time.monotonic() < retry:
            pending = [n for n, m in messages.items() if not all(
                (m.header.stamp.sec, m.header.stamp.nanosec) in clients[n].outputs[t] for t in topics)]
            if not pending:
                return {n: {t: clients[n].outputs[t][(m.header.stamp.sec, m.header.stamp.nanosec)] for t in topics}
                        for n, m in messages.items()}
            for n in pending:
                clients[n].spin_until(lambda: False, 0.02)
    raise AssertionError(f"no outputs for {pending} within {timeout} s")


def test_each_camera_gets_its_outputs_under_its_namespace_with_its_own_header(clients):
    messages = frames()
    outputs = send_all(clients, messages)
    for name, out in outputs.items():
        for output in out.values():
            assert output.header.frame_id == f"{name}_camera_optical"
            assert output.header.stamp == messages[name].header.stamp
        mask = out["instance_mask"]
        assert (mask.height, mask.width) == CAMERAS[name].shape[:2]


def test_each_cameras_results_equal_its_results_alone(clients, single):
    messages = frames()
    outputs = send_all(clients, messages)
    detected = 0
    for name, msg in messages.items():
        (alone,) = single([msg])
        expected, got = alone.messages["detections"].detections, outputs[name]["detections"].detections
        assert [d.results[0].hypothesis.class_id for d in got] == [d.results[0].hypothesis.class_id for d in expected]
        np.testing.assert_allclose([d.results[0].hypothesis.score for d in got],
                                   [d.results[0].hypothesis.score for d in expected], rtol=1e-4)
        labels, expected_labels = image_to_numpy(outputs[name]["instance_mask"]), alone.instances.label_image
        assert (labels == expected_labels).mean() > 0.999
        detected += len(got)
    assert detected > 0


def test_each_cameras_camera_info_is_its_siblings(clients):
    from sensor_msgs.msg import CameraInfo
    infos = {name: CameraInfo(width=pixels.shape[1], height=pixels.shape[0], distortion_model=f"{name}_model")
             for name, pixels in CAMERAS.items()}
    outputs = send_all(clients, frames(), topics=("detections", "camera_info"), infos=infos)
    for name, out in outputs.items():
        info = out["camera_info"]
        assert (info.distortion_model, info.header.frame_id) == (f"{name}_model", f"{name}_camera_optical")


def test_diagnostics_report_each_cameras_rates_and_counts(clients):
    send_all(clients, frames())
    values = clients["front"].latest_diagnostics()
    for name in CAMERAS:
        assert int(values[f"camera /{name}/image_raw: frames processed"]) >= 1
        assert float(values[f"camera /{name}/image_raw: input rate (Hz)"]) >= 0.0


def test_cameras_whose_outputs_would_collide_stop_start_up_in_one_line(tmp_path):
    process = start_process("sparseinst_ros.node", tmp_path / "node.log",
                            params=dict(device="cpu", image_topics=["/front/image_raw", "/front/image_rect"]))
    assert process.process.wait(timeout=120) == 1
    process.stop()
    failures = [line for line in process.log().splitlines() if "start-up failed" in line]
    assert len(failures) == 1 and "Traceback" not in process.log(), process.log()
    assert failures[0].endswith("start-up failed: parameter 'image_topics': '/front/image_raw' and "
                                "'/front/image_rect' have the same namespace '/front', so both cameras would publish "
                                "to ~/front/detections, ...; give each camera a namespace of its own")
