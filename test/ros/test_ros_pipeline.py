"""The node's per-frame bookkeeping, in process and without inference: the image callback counts bad frames
itself (not only those that reach the model), measures transport loss from publisher sequence numbers, the
class filter takes names or ids, and a camera_info published elsewhere in the graph is pointed out."""
import itertools
import struct
import time
from types import SimpleNamespace
import zlib

import numpy as np
import pytest
from rclpy.node import Node
from rclpy.parameter import Parameter
from ros_harness import RecordingLogger
from sensor_msgs.msg import CameraInfo, CompressedImage

import sparseinst_ros.node
from sparseinst_core.inference import LoadedPredictor
from sparseinst_ros.conversions import numpy_to_image, rgb_to_compressed
from sparseinst_ros.frame_loop import Statistics
from sparseinst_ros.frame_processor import FrameOutputs, FrameProcessor
from sparseinst_ros.health import NodeGraph, Troubleshooting
from sparseinst_ros.image_header import PNG_SIGNATURE
from sparseinst_ros.node import SparseInstPipeline
from sparseinst_ros.transport import ReceiveBuffers, SequenceGapCounter

pytestmark = pytest.mark.ros

_names = itertools.count()


@pytest.fixture
def pipeline(ros):
    """A pipeline whose frame loop is never started: accepted frames stay pending."""
    node = Node(f"pipeline_test_{next(_names)}", parameter_overrides=[Parameter("device", value="cpu")])
    pipeline = SparseInstPipeline(node, node.create_publisher, node.destroy_publisher)
    pipeline.logger = pipeline.hints.logger = RecordingLogger()
    pipeline.hints.open("/camera/image_raw", "sensor_data", 5.0)
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
        pipeline.on_image(msg, None)
    stats = pipeline.loop.snapshot()
    assert stats.bad_inputs == {"bad_step": 5, "unknown_encoding": 3, "zero_size": 2}
    assert stats.received == 10 and stats.dropped == 0   # none of them took the pending place
    pipeline.on_image(good_image(), None)
    assert pipeline.loop.snapshot().dropped == 0
    pipeline.on_image(good_image(), None)                # replaces the good frame, which was pending
    assert pipeline.loop.snapshot().dropped == 1
    # each cause is logged once (repeats are throttled)
    assert [w.split("]")[0] for w in pipeline.logger.warnings] == [
        "skipped a frame [bad_step", "skipped a frame [unknown_encoding", "skipped a frame [zero_size"]


def test_a_size_change_is_no_bad_input(pipeline):
    pipeline.on_image(good_image(), None)
    pipeline.on_image(numpy_to_image(np.zeros((8, 6, 3), np.uint8), "rgb8"), None)
    stats = pipeline.loop.snapshot()
    assert stats.bad_inputs == {} and stats.dropped == 1   # the frame is pending: outputs follow the new size
    assert pipeline.logger.warnings == []


def png_header(width, height):
    """The first bytes of a PNG image of this size (all the node reads before deciding)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return PNG_SIGNATURE + struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


@pytest.mark.parametrize("make,cause", [
    (lambda: numpy_to_image(np.zeros((64, 65, 3), np.uint8), "rgb8"), "too_large"),          # 4160 > 4096 pixels
    (lambda: CompressedImage(format="png", data=png_header(15000, 15000)), "too_large"),
    (lambda: numpy_to_image(np.zeros((1, 40, 3), np.uint8), "rgb8"), "degenerate_size"),
    (lambda: numpy_to_image(np.zeros((40, 2, 3), np.uint8), "rgb8"), "degenerate_size"),
    (lambda: CompressedImage(format="png", data=png_header(400, 1)), "degenerate_size"),
    (lambda: numpy_to_image(np.zeros((4, 5, 2), np.uint8), "yuv422"), "odd_width"),
])
def test_frames_too_large_degenerate_or_of_odd_packed_width_are_refused_on_arrival(ros, make, cause):
    node = Node(f"pipeline_test_{next(_names)}", parameter_overrides=[Parameter("max_input_pixels", value=64 * 64)])
    pipeline = SparseInstPipeline(node, node.create_publisher, node.destroy_publisher)
    pipeline.logger = pipeline.hints.logger = RecordingLogger()
    try:
        pipeline.on_image(make(), None)
        pipeline.on_image(good_image(), None)
        stats = pipeline.loop.snapshot()
        assert stats.bad_inputs == {cause: 1} and stats.dropped == 0   # it never took the pending place
        assert pipeline.logger.warnings[0].startswith(f"skipped a frame [{cause}]: ")
    finally:
        node.destroy_node()


def test_frames_arriving_while_paused_are_ignored_unchecked(pipeline):
    bad_step = good_image()
    bad_step.step = 3
    pipeline.loop.pause()
    pipeline.on_image(good_image(), None)
    pipeline.on_image(bad_step, None)
    stats = pipeline.loop.snapshot()
    assert (stats.received, stats.ignored_paused, stats.bad_inputs) == (2, 2, {})


def test_transport_loss_from_publisher_sequence_numbers(pipeline):
    for sequence in (1, 2, 5, 6, 10):                 # 3, 4, 7, 8, 9 never arrived
        pipeline.on_image(good_image(), info(sequence))
    pipeline.on_image(good_image(), info(1, publisher=b"B"))   # another publisher has its own numbering
    stats = pipeline.loop.snapshot()
    assert stats.lost_in_transport == 5 and stats.period_lost == 5
    assert stats.transport_loss_fraction == pytest.approx(5 / 11)


def test_sequence_gap_counter_ignores_restarts_and_missing_numbers():
    counter = SequenceGapCounter()
    assert [counter.add(info(s)) for s in (1, 2, 4)] == [0, 0, 1]
    assert counter.add(info(1)) == 0                  # the publisher restarted: no loss counted
    assert counter.add(info(2)) == 0
    assert counter.add({"publication_sequence_number": None}) == 0   # an rmw without sequence numbers
    assert counter.add(None) == 0
    counter.forget_publishers()                       # e.g. after the subscription was paused
    assert counter.add(info(40)) == 0
    assert counter.add(info(43)) == 2


def test_receive_buffers_are_renewed_after_a_refused_message_larger_than_any_accepted():
    clock = iter(range(0, 1000, 5)).__next__                  # 5 s between calls
    buffers = ReceiveBuffers(min_bytes=100, min_interval_s=8.0, clock=clock)
    assert not buffers.refused(100)                            # not above min_bytes
    buffers.accepted(500)
    assert not buffers.refused(400)                            # the buffer is that large for good frames anyway
    assert buffers.refused(501)
    assert not buffers.refused(600)                            # within min_interval_s of the renewal
    assert buffers.refused(600)


def test_a_refused_oversize_message_renews_the_image_subscription(ros):
    node = Node(f"pipeline_test_{next(_names)}", parameter_overrides=[Parameter("max_input_pixels", value=64 * 64)])
    pipeline = SparseInstPipeline(node, node.create_publisher, node.destroy_publisher)
    pipeline.logger = pipeline.hints.logger = RecordingLogger()
    try:
        pipeline.subscriptions.append(pipeline._subscribe_image())
        first = pipeline.subscriptions[0]
        topic = first.topic_name
        pipeline.on_image(numpy_to_image(np.zeros((64, 64, 3), np.uint8), "rgb8"), None)
        pipeline.on_image(numpy_to_image(np.zeros((65, 64, 3), np.uint8), "rgb8"), None)     # refused, but small
        assert pipeline.subscriptions[0] is first
        pipeline.on_image(numpy_to_image(np.zeros((2048, 6000, 3), np.uint8), "rgb8"), None)  # refused, 37 MB
        assert pipeline.subscriptions[0] is not first and pipeline.subscriptions[0].topic_name == topic
        assert pipeline.loop.snapshot().bad_inputs == {"too_large": 2}
    finally:
        node.destroy_node()


class StubProcessor:
    """Outputs of the image's size, nothing else (no model, no tracking)."""

    tracking = None

    def __call__(self, msgs, camera_infos, overlay, depths=None):
        return [FrameOutputs({}, None, (msgs[0].height, msgs[0].width), {"inference": 1.0})]


def test_the_heap_is_trimmed_once_after_frames_of_another_size(pipeline, monkeypatch):
    trims = []
    monkeypatch.setattr(sparseinst_ros.node, "release_free_memory", lambda: trims.append(time.monotonic()) or True)
    pipeline.processor = StubProcessor()
    pipeline.open_outputs()
    pipeline.loop.start()

    def process(height, width):
        processed = pipeline.loop.statistics.snapshot().processed
        pipeline.on_image(numpy_to_image(np.zeros((height, width, 3), np.uint8), "rgb8"), None)
        deadline = time.monotonic() + 10
        while pipeline.loop.statistics.snapshot().processed == processed and time.monotonic() < deadline:
            time.sleep(0.01)
    try:
        for _ in range(3):
            process(4, 6)
            pipeline.report()
        assert trims == []                                   # a steady stream never pays for it
        process(8, 6)
        pipeline.report()
        pipeline.report()
        assert len(trims) == 1
    finally:
        pipeline.close_inputs()
        pipeline.close_outputs()


def test_class_filter_takes_names_or_integer_ids(pipeline):
    predictor = SimpleNamespace(classes=None, max_instances=100)       # what the filter is applied to
    pipeline.model = LoadedPredictor(predictor=predictor, class_names=["circle", "square", "triangle"], description="")
    pipeline.processor = FrameProcessor(pipeline.model)
    node = pipeline.node
    assert node.set_parameters([Parameter("classes", value=[2, 0])])[0].successful
    assert pipeline.processor.allowed_classes == {0, 2}
    assert node.set_parameters([Parameter("classes", value=["square"])])[0].successful
    assert pipeline.processor.allowed_classes == {1}
    result = node.set_parameters([Parameter("classes", value=2.5)])[0]
    assert not result.successful and "list of class names or of integer ids" in result.reason
    result = node.set_parameters([Parameter("classes", value=[7])])[0]
    assert not result.successful and "out of range" in result.reason
    assert pipeline.processor.allowed_classes == {1}            # a rejected change leaves the filter as it was


def test_deleting_the_class_filter_is_refused_and_it_stays_declared(pipeline):
    node = pipeline.node
    result = node.set_parameters([Parameter("classes")])[0]        # what `ros2 param delete` sends
    assert not result.successful and "classes cannot be deleted" in result.reason
    assert node.has_parameter("classes")
    assert node.set_parameters([Parameter("score_threshold", value=0.4)])[0].successful


def test_a_camera_info_published_elsewhere_in_the_graph_is_pointed_out_once(ros):
    node = Node(f"camera_info_test_{next(_names)}")
    other = Node(f"camera_driver_{next(_names)}")
    publisher = other.create_publisher(CameraInfo, "/camera_info", 1)
    own_output = node.create_publisher(CameraInfo, "~/camera_info", 1)    # the node's own output is no hint
    logger = RecordingLogger()
    hints = Troubleshooting(logger, NodeGraph(node))
    hints.open("/camera/image_raw", "sensor_data", 5.0)
    statistics = Statistics()
    try:
        deadline = time.monotonic() + 10
        while node.count_publishers("/camera_info") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)                          # graph discovery
        statistics.count_processed(1, 0.01, None)
        hints.review(statistics.snapshot(), camera_info_received=False)
        assert len(logger.warnings) == 1
        warning = logger.warnings[0]
        assert "no camera_info on /camera/camera_info" in warning and "published on /camera_info:" in warning
        statistics.count_processed(1, 0.01, None)
        hints.review(statistics.snapshot(), camera_info_received=False)   # said once
        assert len(logger.warnings) == 1
    finally:
        node.destroy_publisher(own_output)
        other.destroy_publisher(publisher)
        other.destroy_node()
        node.destroy_node()
