"""Benchmark of the node across processes (not a unit test): latency under load, overhead, memory, transport.

    python -m sparseinst_ros.tools.benchmark_node [--weights demo] [--device auto] [--phases age,overhead,rss,transport]

Starts the node and a 30 Hz publisher as separate processes (with the product's Fast DDS configuration,
config/fastdds_large_data.xml, unless FASTDDS_DEFAULT_PROFILES_FILE names another) and measures from this
process:
  1. result age under load: 300 frames of 640x480 at 30 Hz with a model slower than that; the age of each
     published result (arrival - input stamp) against the node's inference time;
  2. node overhead at 640x480: one frame at a time; end-to-end latency minus predictor time, median;
  3. resident memory of the node over a 2000-frame run at 30 Hz;
  4. (phase "transport") frames lost between a publisher and the node's subscription for 1280x720 and 1920x1080
     rgb8 at 30 Hz for 10 s each, and the input latency (frames skipped by the latest-frame policy are
     not loss).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .processes import RosProcess, product_environment

NODE = "sparseinst_node"


def scenes(height: int, width: int, count: int = 4) -> list[np.ndarray]:
    from sparseinst_core.data.synthetic import render_scene
    rng = np.random.default_rng(0)
    return [render_scene(rng, height, width)[0] for _ in range(count)]


def run_publisher(count: int, rate: float, height: int, width: int) -> None:
    """--role publisher: `count` frames at `rate` Hz, best effort; prints {"sent": n} when done."""
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from ..conversions import numpy_to_image

    rclpy.init()
    node = rclpy.create_node("benchmark_publisher")
    publisher = node.create_publisher(Image, "/benchmark/image", qos_profile_sensor_data)
    frames = scenes(height, width)
    deadline = time.monotonic() + 60
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)        # let discovery settle on both sides
    start = time.monotonic()
    for index in range(count):
        time.sleep(max(0.0, start + index / rate - time.monotonic()))
        msg = numpy_to_image(frames[index % len(frames)], "rgb8")
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.header.frame_id = "benchmark_camera"
        publisher.publish(msg)
    print(json.dumps({"sent": count, "seconds": time.monotonic() - start}), flush=True)
    node.destroy_node()
    rclpy.shutdown()


class Harness:
    """The node process, a measuring node in this process, and publisher processes."""

    def __init__(self, args):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from vision_msgs.msg import Detection2DArray

        self.env = product_environment(own_domain=True)
        os.environ.pop("FASTDDS_BUILTIN_TRANSPORTS", None)
        os.environ.update({k: self.env[k] for k in ("FASTDDS_DEFAULT_PROFILES_FILE", "ROS_DOMAIN_ID",
                                                    "ROS_AUTOMATIC_DISCOVERY_RANGE")})
        Path(args.log).parent.mkdir(parents=True, exist_ok=True)
        self.node = RosProcess("sparseinst_ros.node", params={"weights": args.weights, "device": args.device,
                                                              "diagnostics_period": 0.25, "publish_overlay": False},
                               remaps={"image": "/benchmark/image"}, env=self.env, log=args.log)
        rclpy.init()
        self.client = rclpy.create_node("benchmark_client")
        self.results: list[tuple[float, float]] = []          # (arrival monotonic, age ms)
        self.reports: list[dict] = []
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.client.create_subscription(Detection2DArray, f"/{NODE}/detections", self._on_detections, qos)
        self.client.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, qos)
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image
        self.image_pub = self.client.create_publisher(Image, "/benchmark/image", qos_profile_sensor_data)
        if not self.spin_until(lambda: self.image_pub.get_subscription_count() > 0, 180):
            raise RuntimeError(f"the node did not start; see {args.log}")
        self.spin_until(lambda: bool(self.reports), 30)

    def _on_detections(self, msg) -> None:
        now_ns = self.client.get_clock().now().nanoseconds
        age_ms = (now_ns - (msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)) / 1e6
        self.results.append((time.monotonic(), age_ms))

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith(f"/{NODE}"):
                self.reports.append({"time": time.monotonic(), **{kv.key: kv.value for kv in status.values}})

    def spin_until(self, predicate, timeout: float) -> bool:
        import rclpy
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not predicate():
            rclpy.spin_once(self.client, timeout_sec=0.02)
        return predicate()

    def spin_for(self, seconds: float) -> None:
        self.spin_until(lambda: False, seconds)

    def counters(self) -> dict:
        """The node's totals from a fresh diagnostics report."""
        count = len(self.reports)
        self.spin_until(lambda: len(self.reports) > count + 1, 10)
        return {k: int(self.reports[-1][k]) for k in ("frames received", "frames processed", "frames dropped",
                                                      "frames lost in transport")}

    def publish_from_process(self, count: int, rate: float, height: int, width: int, monitor=None,
                             env: dict | None = None) -> dict:
        """Run a publisher process while spinning here; `monitor()` is called about once a second."""
        publisher = subprocess.Popen([sys.executable, "-m", "sparseinst_ros.tools.benchmark_node", "--role",
                                      "publisher", "--count", str(count), "--rate", str(rate), "--height", str(height),
                                      "--width", str(width)], env=env or self.env, stdout=subprocess.PIPE, text=True)
        next_monitor = time.monotonic()
        while publisher.poll() is None:
            self.spin_for(0.1)
            if monitor is not None and time.monotonic() >= next_monitor:
                monitor()
                next_monitor += 1.0
        self.spin_for(3.0)              # last results and a diagnostics report
        return json.loads(publisher.stdout.read().strip().splitlines()[-1])

    def reports_since(self, start: float, key: str) -> list[float]:
        values = [float(r[key]) for r in self.reports if r["time"] >= start]
        return [v for v in values if np.isfinite(v)]

    def close(self) -> None:
        import rclpy
        self.node.stop(timeout=30)
        self.client.destroy_node()
        rclpy.shutdown()


def percentiles(values) -> str:
    if not len(values):
        return "n/a"
    p50, p95, top = np.percentile(values, [50, 95, 100])
    return f"p50 {p50:.1f} / p95 {p95:.1f} / max {top:.1f}"


def result_age_under_load(h: Harness, frames: int) -> None:
    start, first = time.monotonic(), len(h.results)
    h.publish_from_process(frames, 30.0, 480, 640)
    results = h.results[first:]
    ages = np.array([age for _, age in results])
    inference_median = np.median(h.reports_since(start, "inference latency median (ms)"))
    period_ms = 1000.0 / 30.0
    print(f"\n1. result age under load: {frames} frames 640x480 at 30 Hz -> {len(ages)} results")
    if not len(ages):
        return
    # Each result's own inference time: the node reports the slowest inference of every 0.25 s period;
    # a result belongs to the first report after it arrived here (or the next one, when the report was
    # cut between publishing and counting), so the larger of those two bounds its inference time.
    reports = [(r["time"], float(r["inference latency max (ms)"])) for r in h.reports
               if r["time"] >= start and r["inference latency max (ms)"] != "nan"]
    own = np.array([max([ms for t, ms in reports if t >= arrival][:2], default=np.nan) for arrival, _ in results])
    paired = np.isfinite(own)
    excess = ages[paired] - own[paired]
    print(f"   inference time (node): median {inference_median:.1f} ms, max {np.nanmax(own):.1f} ms "
          f"(slower than the {period_ms:.1f} ms frame period: {inference_median > period_ms})")
    print(f"   result age (ms): {percentiles(ages)}")
    print(f"   age - that result's inference time (ms), {int(paired.sum())} results paired: {percentiles(excess)}")
    print("   with the latest-frame policy a frame waits at most one frame period for the model to finish the "
          "one before, so the age is at most its own inference + one frame period + the node's overhead:")
    bound = period_ms + 5.0
    print(f"   results older than their inference + {bound:.1f} ms (one frame period + 5 ms): "
          f"{int(np.sum(excess > bound))} of {int(paired.sum())}")


def node_overhead(h: Harness, frames: int) -> None:
    """One frame at a time, so that each diagnostics report (every 0.25 s) covers at most one frame and the
    predictor time of every frame can be paired with its end-to-end latency measured here."""
    from ..conversions import numpy_to_image
    images = scenes(480, 640)
    overheads, end_to_end, predictor, in_node = [], [], [], []
    for index in range(frames):
        processed = h.counters()["frames processed"]
        count, reports = len(h.results), len(h.reports)
        msg = numpy_to_image(images[index % len(images)], "rgb8")
        msg.header.stamp = h.client.get_clock().now().to_msg()
        h.image_pub.publish(msg)
        if not h.spin_until(lambda: len(h.results) > count, 30):
            continue
        h.spin_until(lambda: any(int(r["frames processed"]) > processed for r in h.reports[reports:]), 5)
        report = next((r for r in h.reports[reports:] if int(r["frames processed"]) == processed + 1), None)
        if report is None:
            continue
        end_to_end.append(h.results[-1][1])
        predictor.append(float(report["inference latency median (ms)"]))
        in_node.append(float(report["node overhead median (ms)"]))
        overheads.append(end_to_end[-1] - predictor[-1])
    print(f"\n2. node overhead at 640x480, one frame at a time ({len(overheads)} of {frames} frames paired)")
    print(f"   end-to-end latency (stamp -> detections received here), ms: {percentiles(end_to_end)}")
    print(f"   predictor time, ms: {percentiles(predictor)}")
    print(f"   overhead = end-to-end - predictor, per frame, ms: {percentiles(overheads)}")
    print(f"   of which inside the node (conversion, label image, messages, publishing), ms: {percentiles(in_node)}; "
          f"the rest is DDS transport of the image and the outputs, and thread wake-ups")


def resident_memory(h: Harness, frames: int) -> None:
    import psutil
    process = psutil.Process(h.node.process.pid)
    samples: list[tuple[float, float]] = []
    start = time.monotonic()
    def sample():
        samples.append((time.monotonic() - start, process.memory_info().rss / 2**20))

    h.publish_from_process(frames, 30.0, 480, 640, monitor=sample)
    times, rss = np.array(samples).T
    half = len(rss) // 2
    slope = np.polyfit(times[half:], rss[half:], 1)[0] * 60 if len(rss) > 4 else float("nan")
    print(f"\n3. resident memory of the node over {frames} frames at 30 Hz ({times[-1]:.0f} s)")
    print(f"   RSS at start {rss[0]:.0f} MiB, at end {rss[-1]:.0f} MiB, max {rss.max():.0f} MiB; "
          f"trend over the second half {slope:+.2f} MiB/min")


def set_enabled(h: Harness, enabled: bool) -> None:
    from std_srvs.srv import SetBool
    client = h.client.create_client(SetBool, f"/{NODE}/enable")
    client.wait_for_service(timeout_sec=30)
    future = client.call_async(SetBool.Request(data=enabled))
    h.spin_until(future.done, 30)
    h.client.destroy_client(client)


def transport_loss(h: Harness, seconds: float) -> None:
    print(f"\n4. transport: rgb8 at 30 Hz for {seconds:.0f} s each, separate publisher process, best effort")
    default_transports = {k: v for k, v in h.env.items() if k != "FASTDDS_DEFAULT_PROFILES_FILE"}
    runs = [(inference, size, "the product's profile", h.env)
            for inference in (False, True) for size in ((720, 1280), (1080, 1920))]
    # the deployment mistake the node must notice: a camera driver started without the profile
    runs.append((False, (720, 1280), "Fast DDS defaults in the publisher", default_transports))
    for inference, (height, width), label, env in runs:
        set_enabled(h, inference)
        before, start = h.counters(), time.monotonic()
        sent = h.publish_from_process(int(30 * seconds), 30.0, height, width, env=env)["sent"]
        after = h.counters()
        received = after["frames received"] - before["frames received"]
        skipped = after["frames dropped"] - before["frames dropped"]
        gaps = after["frames lost in transport"] - before["frames lost in transport"]
        latency = h.reports_since(start, "input latency median (ms)")
        print(f"   {width}x{height}, {label}, inference {'running' if inference else 'paused '}: sent {sent}, "
              f"received by the node {received}, lost {sent - received} ({100.0 * (sent - received) / sent:.1f}%; "
              f"the node's own sequence-gap count: {gaps}); input latency median {np.median(latency):.1f} ms; skipped by "
              f"the latest-frame policy (not loss) {skipped}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=["benchmark", "publisher"], default="benchmark", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=300, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=30.0, help=argparse.SUPPRESS)
    parser.add_argument("--height", type=int, default=480, help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, default=640, help=argparse.SUPPRESS)
    parser.add_argument("--weights", default="demo", help="checkpoint for the node (default: the demo model)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--frames", type=int, default=300, help="frames of the result-age run")
    parser.add_argument("--overhead-frames", type=int, default=30)
    parser.add_argument("--rss-frames", type=int, default=2000)
    parser.add_argument("--phases", default="age,overhead,rss,transport",
                        help="comma-separated, from: age, overhead, rss, transport (large-image loss, issue 6)")
    parser.add_argument("--log", default="outputs/benchmark_node.node.log", help="the node's output")
    args = parser.parse_args(argv)
    if args.role == "publisher":
        run_publisher(args.count, args.rate, args.height, args.width)
        return 0

    harness = Harness(args)
    try:
        print(f"node: {harness.reports[-1]['model'] if harness.reports else '?'} on "
              f"{harness.reports[-1]['device'] if harness.reports else '?'}")
        phases = {"age": lambda: result_age_under_load(harness, args.frames),
                  "overhead": lambda: node_overhead(harness, args.overhead_frames),
                  "rss": lambda: resident_memory(harness, args.rss_frames),
                  "transport": lambda: transport_loss(harness, 10.0)}
        for phase in args.phases.split(","):
            phases[phase.strip()]()
    finally:
        harness.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
