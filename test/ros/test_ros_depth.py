"""Depth beside the colour image: pairing by stamp, the checks of a depth frame, and track ids per stream."""
import threading

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image

from sparseinst_core.inference.label_image import label_instances
from sparseinst_ros.conversions import numpy_to_image
from sparseinst_ros.depth_input import DepthProblem, PairedDepth, registered_depth
from sparseinst_ros.depth_pairing import DepthPairing
from sparseinst_ros.instance_tracking import FrameInterval, InstanceTracking, StreamTracker, TrackingSettings

pytestmark = pytest.mark.ros
MS = 10**6


def test_pairing_takes_the_exact_stamp_first_then_the_nearest_within_the_slop():
    pairing = DepthPairing(slop=0.05)
    for stamp_ms in (0, 33, 66, 100):
        pairing.add(stamp_ms * MS, f"depth {stamp_ms}")
    assert pairing.match(66 * MS) == "depth 66"
    assert pairing.match(70 * MS) == "depth 66"
    assert pairing.match(140 * MS) == "depth 100"                 # 40 ms away
    assert pairing.match(151 * MS) is None                       # 51 ms away: outside the slop


def test_pairing_keeps_a_bounded_number_of_frames():
    pairing = DepthPairing(slop=1.0, keep=3)
    for stamp in range(10):
        pairing.add(stamp * MS, stamp)
    assert pairing.match(0) == 7                                  # 0..6 are gone


def test_wait_match_returns_the_exact_frame_that_arrives_while_waiting():
    pairing = DepthPairing(slop=0.05)
    pairing.add(0, "previous frame")                              # within the slop, but not the frame's own
    timer = threading.Timer(0.05, pairing.add, (33 * MS, "own frame"))
    timer.start()
    try:
        assert pairing.wait_match(33 * MS, timeout=10.0) == "own frame"
    finally:
        timer.join()


def depth_message(array, encoding="16UC1", frame_id="camera"):
    msg = Image(height=array.shape[0], width=array.shape[1], encoding=encoding, step=array.shape[1] * array.itemsize,
                data=array.tobytes())
    msg.header.frame_id = frame_id
    return msg


def camera_info(width, height, focal=100.0):
    return CameraInfo(width=width, height=height, k=[focal, 0.0, (width - 1) / 2, 0.0, focal, (height - 1) / 2,
                                                     0.0, 0.0, 1.0])


def colour_message(width=64, height=48, frame_id="camera"):
    msg = numpy_to_image(np.zeros((height, width, 3), np.uint8), "rgb8")
    msg.header.frame_id = frame_id
    return msg


def test_both_encodings_give_metres_and_a_half_resolution_depth_keeps_its_own_intrinsics():
    millimetres = np.full((24, 32), 1500, np.uint16)
    depth = registered_depth(colour_message(), camera_info(64, 48),
                             PairedDepth(depth_message(millimetres), camera_info(32, 24, focal=50.0)), (48, 64))
    assert depth.metres.shape == (24, 32) and np.allclose(depth.metres, 1.5)
    assert (depth.depth_camera.fx, depth.colour_camera.fx, depth.frame_id) == (50.0, 100.0, "camera")
    metres = np.full((48, 64), 2.0, np.float32)
    metres[0, 0] = np.nan
    depth = registered_depth(colour_message(), camera_info(64, 48),
                             PairedDepth(depth_message(metres, "32FC1"), camera_info(64, 48)), (48, 64))
    assert np.isnan(depth.metres[0, 0]) and np.allclose(depth.metres[1:], 2.0)


@pytest.mark.parametrize("change, cause", [
    ({"depth": None}, "no_depth_in_slop"),
    ({"frame_id": "camera_depth_optical_frame"}, "depth_frame_id"),
    ({"encoding": "mono8"}, "depth_encoding"),
    ({"depth_info": camera_info(64, 48)}, "depth_intrinsics"),          # a 64x48 K for a 32x24 image
    ({"colour_info": camera_info(640, 480)}, "depth_intrinsics"),
    ({"colour_info": None}, "no_camera_info"),
    ({"depth_info": None}, "no_depth_camera_info"),
])
def test_each_unusable_depth_frame_names_its_cause(change, cause):
    image = depth_message(np.full((24, 32), 1000, np.uint16), frame_id=change.get("frame_id", "camera"))
    if "encoding" in change:
        image.encoding = change["encoding"]
    depth_info = change.get("depth_info", camera_info(32, 24, 50.0))
    depth = change.get("depth", PairedDepth(image, depth_info))
    with pytest.raises(DepthProblem) as raised:
        registered_depth(colour_message(), change.get("colour_info", camera_info(64, 48)), depth, (48, 64))
    assert raised.value.cause == cause


def test_the_frame_interval_is_the_median_of_the_recent_intervals_and_restarts_when_time_goes_back():
    interval = FrameInterval()
    assert interval.seconds() is None
    for stamp in (0.0, 0.1, 0.2, 0.5, 0.6):                        # one frame lost: 0.3 s
        interval.observe(stamp)
    assert interval.seconds() == pytest.approx(0.1)
    interval.observe(0.0)
    assert interval.seconds() is None


def test_track_max_age_counts_camera_frames_even_when_only_every_tenth_frame_is_processed():
    tracker = StreamTracker(TrackingSettings(track_min_hits=3, track_max_age=30))
    for frame in range(100):                                      # a 30 Hz camera
        tracker.arrivals.observe(frame / 30)
    for frame in range(0, 100, 10):                               # inference at 3 Hz
        tracker.processed.observe(frame / 30)
    config = tracker.config()
    assert config.track_max_age == pytest.approx(1.0)             # 30 frames of 1/30 s
    assert config.tentative_max_age == pytest.approx(0.5)         # 1.5 processed intervals (0.5 s): the default


class Result:
    """A predictor result of full-size masks."""

    def __init__(self, masks, labels, scores):
        self.masks, self.labels, self.scores = np.array(masks), np.array(labels), np.array(scores, np.float32)


def square(x, y, size=8, shape=(48, 64)):
    mask = np.zeros(shape, bool)
    mask[y:y + size, x:x + size] = True
    return mask


def test_track_ids_persist_per_stream_and_the_label_image_follows_them():
    tracking = InstanceTracking(TrackingSettings())
    ids = {}
    for frame in range(4):
        # the scores swap from frame 1 on, so the per-frame order (ids 1..N by score) changes, the track ids do not
        scores = [0.9, 0.8] if frame == 0 else [0.7, 0.95]
        labels = label_instances(Result([square(5 + frame, 5), square(40 - frame, 30)], [0, 1], scores))
        tracked, confirmed = tracking.assign("camera", frame / 30, labels)
        by_class = dict(zip(tracked.class_ids.tolist(), tracked.ids.tolist()))
        ids.setdefault("camera", by_class)
        assert by_class == ids["camera"]
        for instance_id in tracked.ids.tolist():
            assert (tracked.label_image == instance_id).sum() == 64
        assert confirmed.tolist() == [frame >= 2] * 2
    other, _ = tracking.assign("other_camera", 0.0, label_instances(Result([square(5, 5)], [1], [0.9])))
    assert other.ids.tolist() == [1]                               # its own tracker: its own ids
