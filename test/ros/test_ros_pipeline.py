"""The node's per-frame bookkeeping, in process and without inference: bad frames are counted in the
subscription callback (not only those that reach the model), transport loss is measured from publisher
sequence numbers, the class filter takes names or ids, and a misplaced camera_info is pointed out."""
import itertools
import time

import numpy as np
import pytest
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo

from sparseinst_ros.conversions import numpy_to_image, rgb_to_compressed
from sparseinst_ros.node import LoadedModel, SparseInstPipeline
from sparseinst_ros.transport import SequenceGapCounter

pytestmark = pytest.mark.ros

_names = itertools.count()


class RecordingLogger:
    def __init__(self):
        self.warnings = []

    def warning(self, message):
        self.warnings.append(message)

    info = error = warning


@pytest.fixture
def pipeline(ros):
    """A pipeline whose inference thread is never started: frames stay in the latest-frame slot."""
    node = Node(f"pipeline_test_{next(_names)}", parameter_overrides=[Parameter("device", value="cpu")])
    pipeline = SparseInstPipeline(node, node.create_publisher, node.destroy_publisher)
    pipeline.logger = RecordingLogger()
    pipeline.image_topic = "/camera/image_raw"
    yield pipeline
    node.destroy_node()


def info(sequence, publisher=b"A"):
    return {"publication_sequence_number": sequence, "publisher_gid": {"data": publisher}}


def good_image():
    return numpy_to_image(np.zeros((4, 6, 3), np.uint8), "rgb8")


def test_bad_frames_are_counted_even_when_inference_never_sees_them(pipeline):
    bad_step = good_image()
    bad_step.step = 3                                 # smaller than a row
    unknown = good_image()
    unknown.encoding = "32FC1"
    empty_compressed = rgb_to_compressed(np.zeros((4, 6, 3), np.uint8))
    empty_compressed.data = []
    for msg in [bad_step] * 5 + [unknown] * 3 + [empty_compressed] * 2:
        pipeline._on_image(msg, None)
    assert dict(pipeline.stats.bad_inputs) == {"bad_step": 5, "unknown_encoding": 3, "zero_size": 2}
    assert pipeline.stats.dropped == 0                # none of them took the slot from a good frame
    pipeline._on_image(good_image(), None)
    assert pipeline.slot.take(timeout=0).msg.step == good_image().step
    # each cause is logged once (repeats are throttled)
    assert [w.split("]")[0] for w in pipeline.logger.warnings] == [
        "skipped a frame [bad_step", "skipped a frame [unknown_encoding", "skipped a frame [zero_size"]


def test_size_change_is_counted_in_the_callback(pipeline):
    pipeline._on_image(good_image(), None)
    pipeline._on_image(numpy_to_image(np.zeros((8, 6, 3), np.uint8), "rgb8"), None)
    assert pipeline.stats.bad_inputs["size_changed"] == 1


def test_transport_loss_from_publisher_sequence_numbers(pipeline):
    for sequence in (1, 2, 5, 6, 10):                 # 3, 4, 7, 8, 9 never arrived
        pipeline._on_image(good_image(), info(sequence))
    pipeline._on_image(good_image(), info(1, publisher=b"B"))   # another publisher has its own numbering
    assert pipeline.stats.transport.lost == 5
    assert pipeline.stats.period_lost == 5
    assert pipeline.stats.transport.loss_fraction == pytest.approx(5 / 11)


def test_sequence_gap_counter_ignores_restarts_and_missing_numbers():
    counter = SequenceGapCounter()
    assert [counter.add(info(s)) for s in (1, 2, 4)] == [0, 0, 1]
    assert counter.add(info(1)) == 0                  # the publisher restarted: no loss counted
    assert counter.add(info(2)) == 0
    assert counter.add({"publication_sequence_number": None}) == 0   # an rmw without sequence numbers
    assert counter.add(None) == 0
    counter.forget_publishers()                       # e.g. after the subscription was paused
    assert counter.add(info(40)) == 0
    assert (counter.lost, counter.received) == (1, 6)


def test_class_filter_takes_names_or_integer_ids(pipeline):
    pipeline.model = LoadedModel(predictor=None, class_names=["circle", "square", "triangle"], description="")
    node = pipeline.node
    assert node.set_parameters([Parameter("classes", value=[2, 0])])[0].successful
    assert pipeline.allowed_classes == {0, 2}
    assert node.set_parameters([Parameter("classes", value=["square"])])[0].successful
    assert pipeline.allowed_classes == {1}
    result = node.set_parameters([Parameter("classes", value=2.5)])[0]
    assert not result.successful and "list of class names or of integer ids" in result.reason
    result = node.set_parameters([Parameter("classes", value=[7])])[0]
    assert not result.successful and "out of range" in result.reason
    assert pipeline.allowed_classes == {1}            # a rejected change leaves the filter as it was


def test_a_camera_info_published_elsewhere_is_pointed_out(pipeline):
    other = Node(f"camera_driver_{next(_names)}")
    publisher = other.create_publisher(CameraInfo, "/camera_info", 1)
    try:
        deadline = time.monotonic() + 10
        while pipeline.node.count_publishers("/camera_info") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)                          # graph discovery
        pipeline._check_camera_info(processed=1)
        assert len(pipeline.logger.warnings) == 1
        warning = pipeline.logger.warnings[0]
        assert "no camera_info on /camera/camera_info" in warning and "published on /camera_info" in warning
        pipeline._check_camera_info(processed=1)      # said once
        assert len(pipeline.logger.warnings) == 1
    finally:
        other.destroy_publisher(publisher)
        other.destroy_node()


def test_no_camera_info_hint_when_it_arrives_or_nothing_is_processed(pipeline):
    pipeline._check_camera_info(processed=0)
    pipeline._on_camera_info(CameraInfo())
    pipeline._check_camera_info(processed=1)
    assert pipeline.logger.warnings == []


def test_camera_info_of_the_same_stamp_is_preferred_else_the_latest(pipeline):
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header
    for sec, width in ((1, 640), (2, 800), (3, 1024)):
        info = CameraInfo(width=width, height=480, k=[float(width)] + [0.0] * 8)
        info.header.stamp = Time(sec=sec)
        pipeline._on_camera_info(info)
    matched = pipeline._matching_camera_info(Header(stamp=Time(sec=2), frame_id="cam"))
    assert (matched.width, matched.k[0]) == (800, 800.0)
    latest = pipeline._matching_camera_info(Header(stamp=Time(sec=99), frame_id="cam"))
    assert latest.width == 1024
    assert pipeline._recent_camera_info[-1].header.stamp.sec == 3   # the stored messages are not modified


def test_no_camera_info_is_republished_when_none_arrived(pipeline):
    from std_msgs.msg import Header
    assert pipeline._matching_camera_info(Header()) is None
