"""`sparseinst_bag run` on recordings made with rosbags (sqlite3 and mcap; rgb8, bgr8, mono8, JPEG): the output
bag, read back by rosbags from its own definitions, holds exactly the predictor's results for every frame, in
order, with the input's headers and bag timestamps, under the node's topics and types."""
import itertools

import numpy as np
import pytest
import yaml
from bag_fixtures import (CAMERA_INFO_TOPIC, COMPRESSED_TOPIC, DEPTH_INFO_TOPIC, DEPTH_TOPIC, ENCODINGS, IMAGE_TOPIC,
                          write_bag, write_params_file, write_rgbd_bag)
from ros_harness import MIN_SIZE
from rclpy.node import Node
from rosbags.highlevel import AnyReader
from sensor_msgs.msg import CameraInfo, Image
from vision_msgs.msg import Detection2DArray

from sparseinst_core.data.rgbd_sequences import RgbdSequence, RgbdSequenceConfig
from sparseinst_core.inference import load_predictor
from sparseinst_ros.conversions import image_to_numpy, numpy_to_image
from sparseinst_core.inference.label_image import label_instances
from sparseinst_ros.detections import box_center_size
from sparseinst_ros.frame_processor import FrameProcessor
from sparseinst_ros.tools.bag.cli import main

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]

_names = itertools.count()


@pytest.fixture(scope="module")
def params_file(weights_file, tmp_path_factory):
    # ids 1..N by score in each frame, as the predictor's own label image (track ids: see the depth test)
    return write_params_file(tmp_path_factory.mktemp("params") / "params.yaml", weights_file, tracking=False)


@pytest.fixture(scope="module")
def model(weights_file):
    return load_predictor(weights_file, min_size=MIN_SIZE, max_size=2 * MIN_SIZE, device="cpu")


@pytest.fixture(scope="module")
def predictor(model):
    return model.predictor


def read_back(path):
    """topic -> [(bag timestamp, message)] in bag order, deserialised by rosbags from the bag's own definitions
    (AnyReader also checks every connection's RIHS01 hash against its definition)."""
    messages = {}
    with AnyReader([path]) as reader:
        for connection, timestamp, raw in reader.messages():
            messages.setdefault(connection.topic, []).append((timestamp, reader.deserialize(raw, connection.msgtype)))
        connections = {c.topic: c for c in reader.connections}
    return messages, connections


@pytest.mark.parametrize("encoding,storage", zip(ENCODINGS, ["mcap", "sqlite3", "sqlite3", "mcap"]))
def test_outputs_equal_the_predictors_results_frame_by_frame(tmp_path, params_file, model, storage, encoding):
    frames = write_bag(tmp_path / "in", encoding, count=3, storage=storage)
    topic = COMPRESSED_TOPIC if encoding == "jpeg" else IMAGE_TOPIC
    assert main(["run", str(tmp_path / "in"), "--image-topic", topic, "--params-file", str(params_file),
                 "--output", str(tmp_path / "out")]) == 0
    out, connections = read_back(tmp_path / "out")
    assert set(out) == {"/sparseinst_node/detections", "/sparseinst_node/instance_mask",
                        "/sparseinst_node/overlay", "/sparseinst_node/camera_info"}   # overlay: on in the defaults
    for topic_messages in out.values():
        assert [timestamp for timestamp, _ in topic_messages] == [frame.timestamp for frame in frames]
        assert [(m.header.stamp.sec, m.header.stamp.nanosec, m.header.frame_id) for _, m in topic_messages] == \
            [(frame.sec, frame.nanosec, "camera_optical") for frame in frames]
    for frame, (_, detections), (_, mask) in zip(frames, out["/sparseinst_node/detections"],
                                                 out["/sparseinst_node/instance_mask"]):
        expected = label_instances(model.predictor(frame.rgb))
        assert len(expected) > 0
        assert (mask.encoding, mask.height, mask.width) == ("mono16", *frame.rgb.shape[:2])
        np.testing.assert_array_equal(np.frombuffer(mask.data.tobytes(), np.uint16).reshape(mask.height, mask.width),
                                      expected.label_image)
        assert [d.id for d in detections.detections] == [str(i) for i in expected.ids]
        assert [d.results[0].hypothesis.class_id for d in detections.detections] == \
            [str(c) for c in expected.class_ids]
        assert [d.results[0].hypothesis.score for d in detections.detections] == \
            [float(s) for s in expected.scores]
        assert [(d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.size_x, d.bbox.size_y)
                for d in detections.detections] == [box_center_size(box) for box in expected.boxes]
    assert connections["/sparseinst_node/detections"].msgtype == "vision_msgs/msg/Detection2DArray"
    (node_output,) = FrameProcessor(model)([numpy_to_image(frames[-1].rgb, "rgb8")], overlay=True)
    overlay = out["/sparseinst_node/overlay"][-1][1]                 # drawn by the writer thread
    np.testing.assert_array_equal(np.asarray(overlay.data).reshape(overlay.height, overlay.width, 3),
                                  image_to_numpy(node_output.messages["overlay"]))


def test_connections_carry_the_definitions_and_type_hashes_of_the_messages_rclpy_publishes(ros, tmp_path,
                                                                                           params_file):
    write_bag(tmp_path / "in", "rgb8", count=1)
    assert main(["run", str(tmp_path / "in"), "--image-topic", IMAGE_TOPIC, "--params-file", str(params_file),
                 "--output", str(tmp_path / "out")]) == 0
    _, connections = read_back(tmp_path / "out")
    node = Node(f"bag_type_hashes_{next(_names)}")
    try:
        for topic, message_type in [("detections", Detection2DArray), ("instance_mask", Image),
                                    ("camera_info", CameraInfo)]:
            node.create_publisher(message_type, f"hash_{topic}", 1)
            rclpy_hash = str(node.get_publishers_info_by_topic(f"/hash_{topic}")[0].topic_type_hash)
            assert connections[f"/sparseinst_node/{topic}"].digest == rclpy_hash, topic
    finally:
        node.destroy_node()
    definition = connections["/sparseinst_node/detections"].msgdef.data
    assert definition.startswith("std_msgs/Header header\nvision_msgs/Detection2D[] detections\n")
    assert "MSG: vision_msgs/ObjectHypothesisWithPose" in definition


def test_parameters_file_selects_outputs_and_classes_and_copy_input_adds_the_images(tmp_path, params_file, predictor):
    frames = write_bag(tmp_path / "in", "rgb8", count=2, camera_info=False)
    everything = label_instances(predictor(frames[0].rgb))
    kept = int(everything.class_ids[0])
    params = yaml.safe_load(params_file.read_text())
    params["/**"]["ros__parameters"].update(publish_overlay=False, classes=[kept], max_instances=1)
    params["sparseinst_node"] = {"ros__parameters": {"score_threshold": 0.05}}   # the node's section wins
    custom = tmp_path / "custom.yaml"
    custom.write_text(yaml.safe_dump(params))
    assert main(["run", str(tmp_path / "in"), "--image-topic", IMAGE_TOPIC, "--params-file", str(custom),
                 "--output", str(tmp_path / "out"), "--storage", "sqlite3", "--copy-input"]) == 0
    out, connections = read_back(tmp_path / "out")
    assert set(out) == {"/sparseinst_node/detections", "/sparseinst_node/instance_mask", IMAGE_TOPIC}
    assert (tmp_path / "out" / "out.db3").is_file()
    predictor.score_threshold = 0.05
    try:
        expected = label_instances(predictor(frames[0].rgb), frozenset({kept}), max_instances=1)
    finally:
        predictor.score_threshold = 0.3
    detections = out["/sparseinst_node/detections"][0][1].detections
    assert [(d.results[0].hypothesis.class_id, d.results[0].hypothesis.score) for d in detections] == \
        [(str(kept), float(expected.scores[0]))]
    copied = [(t, np.asarray(m.data)) for t, m in out[IMAGE_TOPIC]]
    assert [t for t, _ in copied] == [frame.timestamp for frame in frames]
    np.testing.assert_array_equal(copied[1][1].reshape(frames[1].rgb.shape), frames[1].rgb)


def test_camera_info_goes_with_the_frame_of_the_same_stamp(tmp_path, params_file):
    frames = write_bag(tmp_path / "in", "rgb8", count=2)
    assert main(["run", str(tmp_path / "in"), "--image-topic", IMAGE_TOPIC, "--params-file", str(params_file),
                 "--output", str(tmp_path / "out")]) == 0
    out, _ = read_back(tmp_path / "out")
    infos = [m for _, m in out["/sparseinst_node/camera_info"]]
    assert [(m.header.stamp.sec, m.header.stamp.nanosec) for m in infos] == [(f.sec, f.nanosec) for f in frames]
    assert list(infos[0].k) == [100.0, 0.0, 64.0, 0.0, 100.0, 48.0, 0.0, 0.0, 1.0]
    with AnyReader([tmp_path / "in"]) as reader:
        assert CAMERA_INFO_TOPIC in reader.topics


def test_default_output_is_beside_the_bag_and_the_summary_counts_instances(tmp_path, params_file, capsys):
    write_bag(tmp_path / "drive.mcap.d", "rgb8", count=2)
    recording = tmp_path / "drive.mcap.d" / "drive.mcap.d.mcap"          # one .mcap file as BAG
    assert main(["run", str(recording), "--image-topic", IMAGE_TOPIC, "--params-file", str(params_file)]) == 0
    assert (tmp_path / "drive.mcap.d" / "drive.mcap.d_sparseinst" / "metadata.yaml").is_file()
    summary = capsys.readouterr().out
    assert "run: 2 of 2 frames of /camera/image_raw processed" in summary
    assert "instances: " in summary and "time per frame: read " in summary and "write " in summary


def test_a_depth_topic_adds_the_3d_outputs_of_the_node_with_its_track_ids(tmp_path):
    """A generated RGB-D recording through the shipped demo model: detections_3d, points and markers for every
    frame, with the colour stamp, the ids of the 2D detections (track ids, the same object keeps its id)."""
    sequence = RgbdSequence(RgbdSequenceConfig(num_frames=3, frame_rate=15.0, num_objects=(2, 2),
                                               distinct_classes=True, colour_size=(320, 240), depth_size=(160, 120)),
                            seed=2)
    write_rgbd_bag(tmp_path / "in", sequence)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"device": "cpu", "min_size": 240, "max_size": 320,
                                                                  "publish_overlay": False}}}))
    assert main(["run", str(tmp_path / "in"), "--image-topic", IMAGE_TOPIC, "--params-file", str(params),
                 "--depth-topic", DEPTH_TOPIC, "--depth-info-topic", DEPTH_INFO_TOPIC,
                 "--output", str(tmp_path / "out")]) == 0
    out, _ = read_back(tmp_path / "out")
    assert {topic: len(messages) for topic, messages in out.items()} == {
        f"/sparseinst_node/{name}": 3 for name in ("detections", "instance_mask", "camera_info", "detections_3d",
                                                   "points", "markers")}
    ids_by_class = []
    for (_, detections), (_, detections_3d), (_, cloud), (_, mask) in zip(
            out["/sparseinst_node/detections"], out["/sparseinst_node/detections_3d"], out["/sparseinst_node/points"],
            out["/sparseinst_node/instance_mask"]):
        assert detections_3d.header.stamp == detections.header.stamp == cloud.header.stamp
        ids = {int(d.id) for d in detections.detections}
        labels = np.frombuffer(mask.data.tobytes(), np.uint16)
        assert set(np.unique(labels).tolist()) - {0} == ids
        assert {int(d.id) for d in detections_3d.detections} <= ids and len(detections_3d.detections) >= 2
        ids_by_class.append({d.results[0].hypothesis.class_id: d.id for d in detections_3d.detections})
    assert ids_by_class[0] == ids_by_class[1] == ids_by_class[2]
