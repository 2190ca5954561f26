"""The node replaying a recording across processes, as `ros2 bag play --clock` drives it: with the shipped
config/replay.yaml (drop_frames false, reliable input, use_sim_time) every frame of a burst published far faster
than the model runs gets exactly one result, in recording order, and the node's ages follow the replay's /clock
while its diagnostics keep coming on wall time when the clock stops."""
import time

import pytest
from bag_fixtures import IMAGE_TOPIC, write_bag
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_harness import CONFIG, MIN_SIZE, start_process
from rosbags.rosbag2 import Reader
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]

FRAMES = 20
REPLAY_CONFIG = CONFIG.with_name("replay.yaml")
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)   # the player's, with a QoS override


@pytest.fixture(scope="module")
def node(ros, weights_file, tmp_path_factory):
    log = tmp_path_factory.mktemp("replay") / "node.log"
    process = start_process("sparseinst_ros.node", log, params_file=REPLAY_CONFIG,
                            params=dict(weights=str(weights_file), device="cpu", min_size=MIN_SIZE,
                                        max_size=2 * MIN_SIZE, diagnostics_period=0.5),
                            remaps={"image": IMAGE_TOPIC})
    yield process
    assert process.stop() == 0, process.log()


def stamp_ns(header) -> int:
    return header.stamp.sec * 10**9 + header.stamp.nanosec


def test_every_replayed_frame_gets_exactly_one_result_in_order_and_ages_follow_the_clock(node, tmp_path):
    frames = write_bag(tmp_path / "recording", "rgb8", count=FRAMES, camera_info=False)
    player = Node("replay_test_player")
    images = player.create_publisher(Image, IMAGE_TOPIC, RELIABLE)
    clock = player.create_publisher(Clock, "/clock", RELIABLE)
    results, diagnostics = [], []
    player.create_subscription(Detection2DArray, "/sparseinst_node/detections", lambda m: results.append(m), RELIABLE)
    player.create_subscription(DiagnosticArray, "/diagnostics", lambda m: diagnostics.append(m), 10)

    def spin_until(predicate, timeout):
        import rclpy
        deadline = time.monotonic() + timeout
        while not predicate() and time.monotonic() < deadline:
            rclpy.spin_once(player, timeout_sec=0.05)
        return predicate()

    def tick(timestamp):
        clock.publish(Clock(clock=Time(sec=timestamp // 10**9, nanosec=timestamp % 10**9)))

    try:
        assert spin_until(lambda: images.get_subscription_count() > 0, 120), node.log()
        spin_until(lambda: clock.get_subscription_count() > 0, 10)      # the node's time source, under sim time
        tick(frames[0].timestamp)
        spin_until(lambda: False, 1.0)                        # the node's clock starts at the recording's time
        with Reader(tmp_path / "recording") as reader:         # recorded bytes, published as they are
            for _, timestamp, raw in reader.messages():
                tick(timestamp)
                images.publish(bytes(raw))
        assert spin_until(lambda: len(results) >= FRAMES, 120), f"{len(results)} results\n{node.log()}"
        spin_until(lambda: False, 1.0)                        # nothing more arrives
        assert [stamp_ns(r.header) for r in results] == [f.sec * 10**9 + f.nanosec for f in frames]

        def reports():
            return [{kv.key: kv.value for kv in d.status[0].values} for d in diagnostics
                    if d.status and d.status[0].name.startswith("/sparseinst_node")]
        # /clock stands still from here on: reports on the steady clock keep coming
        assert spin_until(lambda: reports() and reports()[-1]["frames processed"] == str(FRAMES), 30), reports()
        assert (reports()[-1]["frames received"], reports()[-1]["frames dropped"]) == (str(FRAMES), "0")
        # ages on the replay's clock: at most the 0.7 s of recording time, not the years since it was recorded
        for key in ("input latency median (ms)", "end-to-end latency median (ms)"):
            medians = [float(report[key]) for report in reports() if report[key] != "nan"]
            assert medians and all(-100.0 < median < 1000.0 for median in medians), (key, medians)
        assert abs(stamp_ns(diagnostics[-1].header) - frames[-1].timestamp) < 10**9   # stamped in replay time
    finally:
        player.destroy_node()
