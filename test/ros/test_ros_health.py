"""The node's /diagnostics status and troubleshooting hints, decided from plain data: a statistics snapshot, a
clock and a description of the graph (no running graph)."""
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.qos import ReliabilityPolicy
from ros_harness import RecordingLogger

from sparseinst_ros.frame_loop import ProcessTiming, Statistics
from sparseinst_ros.health import LOG_REPEAT_SECONDS, SizeChanges, Troubleshooting, diagnostic_status

pytestmark = pytest.mark.ros

TOPIC = "/camera/image_raw"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class FakeGraph:
    """Publishers (their reliability) per topic, and the CameraInfo topics of the graph."""

    def __init__(self, publishers=None, camera_info_topics=()):
        self.publishers = publishers or {}
        self.topics = list(camera_info_topics)
        self.lookups = 0

    def publisher_reliabilities(self, topic):
        self.lookups += 1
        return self.publishers.get(topic, [])

    def camera_info_topics(self):
        return self.topics


def snapshot(clock, received=0, processed=0, bad=(), lost=0, arrived_at=None, period=2.0):
    """Statistics of a period of `period` s that ends at `clock.now` + `period` (the clock moves there)."""
    statistics = Statistics(clock)
    now = clock.now
    if arrived_at is not None:
        clock.now = arrived_at
    for index in range(received):
        statistics.count_received(input_latency_ms=2.0, lost=lost if index == 0 else 0)
    clock.now = now
    for cause in bad:
        statistics.count_bad_input(cause)
    for _ in range(processed):
        statistics.count_processed(1, 0.012, ProcessTiming(inference_ms=10.0, age_ms=15.0))
    clock.now += period
    return statistics.snapshot()


def status(stats, enabled=True, input_silent=False):
    result = diagnostic_status(stats, name="/sparseinst_node: inference", image_topic=TOPIC, enabled=enabled,
                               input_silent=input_silent, device="cpu", precision="fp32", model="r18 from demo")
    return result, {kv.key: kv.value for kv in result.values}


def test_a_running_node_reports_ok_with_its_rates_latencies_and_counters():
    result, values = status(snapshot(Clock(), received=4, processed=3))
    assert (result.level, result.message, result.hardware_id) == (DiagnosticStatus.OK, "running", "cpu")
    assert values["input rate (Hz)"] == "2.00" and values["output rate (Hz)"] == "1.50"
    assert values["inference latency median (ms)"] == "10.00" and values["node overhead median (ms)"] == "2.00"
    assert values["end-to-end latency median (ms)"] == "15.00" and values["input latency median (ms)"] == "2.00"
    assert (values["frames received"], values["frames processed"], values["bad input frames"]) == ("4", "3", "0")
    assert (values["enabled"], values["model"], values["image topic"]) == ("true", "r18 from demo", TOPIC)
    assert list(values) == [
        "input rate (Hz)", "output rate (Hz)", "input latency median (ms)", "inference latency median (ms)",
        "inference latency max (ms)", "end-to-end latency median (ms)", "node overhead median (ms)",
        "frames received", "frames processed", "frames dropped", "frames lost in transport", "transport loss (%)",
        "frames ignored while paused", "bad input frames", "image size changes", "instances without 3D", "enabled",
        "device", "precision",
        "model", "image topic"]


def test_an_idle_period_reports_no_latency():
    _, values = status(snapshot(Clock()))
    assert values["inference latency median (ms)"] == "nan" and values["inference latency max (ms)"] == "nan"


def test_bad_input_warns_with_a_key_per_cause():
    result, values = status(snapshot(Clock(), received=3, bad=("bad_step", "bad_step", "zero_size"), lost=2))
    assert (result.level, result.message) == (DiagnosticStatus.WARN, "3 bad input frame(s) in the last 2.0 s")
    assert values["bad input: bad_step"] == "2" and values["bad input: zero_size"] == "1"
    assert values["bad input frames"] == "3"


def test_size_changes_are_counted_apart_from_bad_input_and_leave_the_status_ok():
    clock = Clock()
    statistics = Statistics(clock)
    statistics.count_received()
    assert [statistics.count_size_change() for _ in range(2)] == [1, 2]
    statistics.count_processed(1, 0.01, None)
    clock.now += 2.0
    result, values = status(statistics.snapshot())
    assert (result.level, result.message) == (DiagnosticStatus.OK, "running")
    assert values["image size changes"] == "2" and values["bad input frames"] == "0"
    assert not any(key.startswith("bad input:") for key in values)


def test_transport_loss_warns():
    result, values = status(snapshot(Clock(), received=3, lost=1))
    assert (result.level, result.message) == (DiagnosticStatus.WARN,
                                              "1 frame(s) lost before reaching the node in the last 2.0 s")
    assert values["frames lost in transport"] == "1" and values["transport loss (%)"] == "25.00"


def test_a_silent_input_warns_and_a_paused_node_is_ok():
    result, _ = status(snapshot(Clock()), input_silent=True)
    assert (result.level, result.message) == (DiagnosticStatus.WARN, f"no images received on {TOPIC}")
    result, values = status(snapshot(Clock(), bad=("bad_step",)), enabled=False)
    assert (result.level, result.message, values["enabled"]) == (DiagnosticStatus.OK, "paused (~/enable)", "false")


@pytest.fixture
def default_transports(monkeypatch):
    """This process' Fast DDS as the camera driver's would be without the product's profile."""
    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE", raising=False)
    monkeypatch.delenv("FASTRTPS_DEFAULT_PROFILES_FILE", raising=False)
    monkeypatch.delenv("FASTDDS_BUILTIN_TRANSPORTS", raising=False)


def hints_for(graph, input_qos="sensor_data", timeout=5.0):
    clock, logger = Clock(), RecordingLogger()
    hints = Troubleshooting(logger, graph, clock)
    hints.open(TOPIC, input_qos, timeout)
    return hints, clock, logger


def test_a_silent_topic_with_publishers_names_the_likely_causes_once(default_transports):
    graph = FakeGraph({TOPIC: [ReliabilityPolicy.BEST_EFFORT]})
    hints, clock, logger = hints_for(graph, input_qos="reliable")
    clock.now += 4.0
    hints.review(snapshot(clock, period=0), camera_info_received=False)
    assert logger.warnings == [] and not hints.input_silent and graph.lookups == 0   # not yet: within the timeout
    clock.now += 3.0
    hints.review(snapshot(clock, period=0), camera_info_received=False)
    assert hints.input_silent and len(logger.warnings) == 1
    warning = logger.warnings[0]
    assert warning.startswith(f"no image received on {TOPIC} for 7 s although 1 publisher(s) exist: ")
    assert "a publisher is best effort while input_qos is 'reliable'" in warning
    assert "Fast DDS runs with its default transports" in warning and "fastdds_large_data.xml" in warning
    clock.now += 5.0
    hints.review(snapshot(clock, period=0), camera_info_received=False)
    assert len(logger.warnings) == 1                                       # once per silence
    hints.review(snapshot(clock, received=1, arrived_at=clock.now), camera_info_received=False)
    assert not hints.input_silent                                          # images flow again


def test_one_silent_camera_among_several_is_said_and_named_in_the_status(default_transports):
    graph = FakeGraph({"/front/image_raw": [ReliabilityPolicy.BEST_EFFORT],
                       "/rear/image_raw": [ReliabilityPolicy.BEST_EFFORT]})
    clock, logger = Clock(), RecordingLogger()
    hints = Troubleshooting(logger, graph, clock)
    hints.open(["/front/image_raw", "/rear/image_raw"], "sensor_data", 5.0)
    clock.now += 7.0
    # the rear camera keeps sending: the node as a whole still receives frames
    stats = snapshot(clock, received=10, arrived_at=clock.now)
    hints.review(stats, camera_info_received=True, last_received={"/front/image_raw": None,
                                                                 "/rear/image_raw": clock.now})
    assert hints.input_silent and hints.silent_text == "/front/image_raw"
    assert len(logger.warnings) == 1 and logger.warnings[0].startswith("no image received on /front/image_raw for ")
    result = diagnostic_status(snapshot(clock), name="n", image_topic=hints.image_topic, enabled=True,
                               input_silent=hints.input_silent, silent_topics=hints.silent_text)
    assert result.message == "no images received on /front/image_raw"
    hints.review(stats, camera_info_received=True, last_received={"/front/image_raw": clock.now,
                                                                 "/rear/image_raw": clock.now})
    assert not hints.input_silent


def test_a_silent_topic_without_publishers_is_no_fault_of_the_transport():
    hints, clock, logger = hints_for(FakeGraph())
    clock.now += 60.0
    hints.review(snapshot(clock), camera_info_received=False)
    assert logger.warnings == [] and not hints.input_silent


def test_transport_loss_is_logged_throttled_with_the_advice_for_large_images():
    hints, clock, logger = hints_for(FakeGraph())
    hints.frame_received(3 * 2**20)
    for _ in range(3):
        hints.review(snapshot(clock, received=5, lost=2, arrived_at=clock.now), camera_info_received=True)
    assert len(logger.warnings) == 1
    assert logger.warnings[0].startswith(f"2 of 7 image(s) published on {TOPIC} in the last period were lost before "
                                         "reaching this node: give every process")
    clock.now += LOG_REPEAT_SECONDS
    hints.review(snapshot(clock, received=5, lost=2, arrived_at=clock.now), camera_info_received=True)
    assert len(logger.warnings) == 2 and "so far; repeats are logged every 10 s" in logger.warnings[1]


def test_small_images_lost_point_at_the_network():
    hints, clock, logger = hints_for(FakeGraph())
    hints.frame_received(1000)
    hints.review(snapshot(clock, received=1, lost=1, arrived_at=clock.now), camera_info_received=True)
    assert logger.warnings[0].endswith("check the network and the publisher's QoS")


def test_large_images_under_default_transports_are_pointed_out_once(default_transports):
    hints, _, logger = hints_for(FakeGraph())
    hints.frame_received(1000)
    assert logger.warnings == []
    for _ in range(3):
        hints.frame_received(2_764_800)
    assert len(logger.warnings) == 1
    assert logger.warnings[0].startswith(f"receiving 2.8 MB images on {TOPIC}, but Fast DDS runs with its default "
                                         "transports")


def test_large_images_under_the_product_profile_are_fine():
    hints, _, logger = hints_for(FakeGraph())       # conftest: the product's profile
    hints.frame_received(2_764_800)
    assert logger.warnings == []


def test_depth_problems_warn_with_a_key_per_cause_and_instances_without_3d_are_counted():
    clock = Clock()
    statistics = Statistics(clock)
    statistics.count_received()
    assert [statistics.count_depth_problem("no_depth_in_slop") for _ in range(2)] == [1, 2]
    statistics.count_depth_problem("depth_frame_id")
    statistics.count_without_3d(3)
    statistics.count_processed(3, 0.01, None)
    clock.now += 2.0
    result, values = status(statistics.snapshot())
    assert (result.level, result.message) == (DiagnosticStatus.WARN, "3 frame(s) without 3D (depth problem) in the "
                                                                     "last 2.0 s")
    assert values["depth problem: no_depth_in_slop"] == "2" and values["depth problem: depth_frame_id"] == "1"
    assert values["instances without 3D"] == "3" and values["bad input frames"] == "0"
    clock.now += 2.0
    result, values = status(statistics.snapshot())                 # totals stay, the period's warning goes
    assert result.level == DiagnosticStatus.OK and values["depth problem: no_depth_in_slop"] == "2"


def test_depth_problems_are_logged_once_per_cause():
    hints, clock, logger = hints_for(FakeGraph())
    for _ in range(2):
        hints.depth_problem("depth_encoding", "depth encoding 'rgb8' is not a depth encoding")
        clock.now += 2 * LOG_REPEAT_SECONDS
    hints.depth_problem("no_depth_in_slop", "no depth image within depth_slop")
    assert logger.warnings == [
        "no 3D for a frame [depth_encoding]: depth encoding 'rgb8' is not a depth encoding (said once; /diagnostics "
        "counts 'depth problem: depth_encoding')",
        "no 3D for a frame [no_depth_in_slop]: no depth image within depth_slop (said once; /diagnostics counts "
        "'depth problem: no_depth_in_slop')"]


def test_bad_input_is_logged_per_cause_then_throttled():
    hints, clock, logger = hints_for(FakeGraph())
    hints.bad_input("bad_step", "step 3 < row", 1)
    hints.bad_input("bad_step", "step 3 < row", 2)
    hints.bad_input("zero_size", "0x0", 1)
    assert logger.warnings == ["skipped a frame [bad_step]: step 3 < row", "skipped a frame [zero_size]: 0x0"]
    clock.now += LOG_REPEAT_SECONDS
    hints.bad_input("bad_step", "step 3 < row", 9)
    assert logger.warnings[-1] == ("skipped a frame [bad_step]: step 3 < row (9 so far; repeats are logged every "
                                   "10 s)")


def test_a_camera_info_published_elsewhere_is_pointed_out_once():
    graph = FakeGraph(camera_info_topics=["/camera_info", "/other/camera_info"])
    hints, clock, logger = hints_for(graph)
    hints.review(snapshot(clock, received=1, processed=1, arrived_at=clock.now), camera_info_received=False)
    assert logger.warnings == [
        "no camera_info on /camera/camera_info (looked up beside the image topic); CameraInfo is published on "
        "/camera_info, /other/camera_info: remap the image topic so that its camera_info is its sibling, or the "
        "camera's camera_info to /camera/camera_info"]
    hints.review(snapshot(clock, received=1, processed=1, arrived_at=clock.now), camera_info_received=False)
    assert len(logger.warnings) == 1


def test_each_cameras_missing_camera_info_is_pointed_out():
    graph = FakeGraph({"/front/camera_info": [ReliabilityPolicy.RELIABLE]},
                      camera_info_topics=["/front/camera_info", "/rear_cam/camera_info"])
    clock, logger = Clock(), RecordingLogger()
    hints = Troubleshooting(logger, graph, clock)
    hints.open(["/front/image_raw", "/rear/image_raw"], "sensor_data", 5.0)
    for _ in range(2):
        hints.review(snapshot(clock, received=2, processed=2, arrived_at=clock.now),
                     camera_info_received={"/front/image_raw": True, "/rear/image_raw": False})
    assert len(logger.warnings) == 1 and logger.warnings[0].startswith(
        "no camera_info on /rear/camera_info (looked up beside the image topic); CameraInfo is published on "
        "/rear_cam/camera_info:")          # not on the front camera's own


@pytest.mark.parametrize("processed, received, graph", [
    (0, False, FakeGraph(camera_info_topics=["/camera_info"])),              # no image processed yet
    (1, True, FakeGraph(camera_info_topics=["/camera_info"])),               # it arrives beside the image
    (1, False, FakeGraph({"/camera/camera_info": [ReliabilityPolicy.RELIABLE]}, ["/camera/camera_info"])),  # on its way
    (1, False, FakeGraph()),                                                 # there is none anywhere
])
def test_no_camera_info_hint_when_it_would_not_help(processed, received, graph):
    hints, clock, logger = hints_for(graph)
    hints.review(snapshot(clock, received=1, processed=processed, arrived_at=clock.now),
                 camera_info_received=received)
    assert logger.warnings == []


def test_compressed_input_looks_for_the_camera_info_of_the_image_topic():
    hints, clock, logger = hints_for(FakeGraph(camera_info_topics=["/camera_info"]))
    hints.open(TOPIC + "/compressed", "sensor_data", 5.0)
    hints.review(snapshot(clock, received=1, processed=1, arrived_at=clock.now), camera_info_received=False)
    assert logger.warnings[0].startswith("no camera_info on /camera/camera_info ")


def test_a_size_change_is_said_at_info_level_with_repeats_throttled():
    hints, clock, logger = hints_for(FakeGraph())
    hints.size_changed("image size changed from 640x480 to 1280x720; outputs follow the new size", 1)
    clock.now += 1.0
    hints.size_changed("image size changed from 1280x720 to 640x480; outputs follow the new size", 2)
    assert logger.records == [("info", "image size changed from 640x480 to 1280x720; outputs follow the new size")]
    clock.now += LOG_REPEAT_SECONDS
    hints.size_changed("image size changed from 640x480 to 1280x720; outputs follow the new size", 3)
    assert logger.messages("info")[-1].endswith("(3 so far; repeats are logged every 10 s)")


def test_an_image_size_change_is_reported_with_both_sizes():
    sizes = SizeChanges()
    assert sizes.check(480, 640) is None and sizes.check(480, 640) is None
    assert sizes.check(720, 1280) == "image size changed from 640x480 to 1280x720; outputs follow the new size"
    assert sizes.check(720, 1280) is None
