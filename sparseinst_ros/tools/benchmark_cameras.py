"""Benchmark of several cameras (not a unit test): N cameras through one node against N nodes, one per camera.

    python -m sparseinst_ros.tools.benchmark_cameras [--cameras 4] [--weights demo] [--seconds 30] [--rate 30]

A publisher process sends N camera streams (`/cam<i>/image_raw`, rgb8, `--rate` Hz each, faster than the model
on a CPU, so every setup runs at its limit) with the product's Fast DDS configuration, to
  1. one node with `image_topics` naming all N topics: the latest frame of each camera, one batch per cycle;
  2. N node processes, one per camera (`sparseinst_node_<i>`), as one would run them without `image_topics`.
This process counts the detections each camera gets over `--seconds` after a warm-up, and prints the results
per second in total and per camera (the slowest camera says whether one is starved), the result age, and the
results per CPU second of the node processes: on a machine shared with other work, N processes get a larger
share of the CPUs than one, so results per second alone favour N nodes; per CPU second compares the work.
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

from .benchmark_node import percentiles, scenes
from .processes import RosProcess, product_environment

NODE = "sparseinst_node"


def camera_topic(index: int) -> str:
    return f"/cam{index}/image_raw"


def run_publisher(cameras: int, rate: float, seconds: float, height: int, width: int) -> None:
    """--role publisher: every camera's stream at `rate` Hz for `seconds`, best effort; prints {"sent": n}."""
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from ..conversions import numpy_to_image

    rclpy.init()
    node = rclpy.create_node("cameras_benchmark_publisher")
    publishers = [node.create_publisher(Image, camera_topic(i), qos_profile_sensor_data) for i in range(cameras)]
    frames = scenes(height, width)
    deadline = time.monotonic() + 120
    while any(p.get_subscription_count() == 0 for p in publishers) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)        # let discovery settle on both sides
    start, sent = time.monotonic(), 0
    while (elapsed := time.monotonic() - start) < seconds:
        time.sleep(max(0.0, start + sent / rate - time.monotonic()))
        for index, publisher in enumerate(publishers):
            msg = numpy_to_image(frames[(sent + index) % len(frames)], "rgb8")
            msg.header.stamp = node.get_clock().now().to_msg()
            msg.header.frame_id = f"cam{index}_optical"
            publisher.publish(msg)
        sent += 1
    print(json.dumps({"sent_per_camera": sent, "seconds": elapsed}), flush=True)
    node.destroy_node()
    rclpy.shutdown()


class Counter:
    """A node in this process that records (arrival, age ms) of every camera's detections."""

    def __init__(self, output_topics: list[str]):
        import rclpy
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from vision_msgs.msg import Detection2DArray

        self.node = rclpy.create_node("cameras_benchmark_counter")
        self.results: list[list[tuple[float, float]]] = [[] for _ in output_topics]
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        for index, topic in enumerate(output_topics):
            self.node.create_subscription(Detection2DArray, topic, self._recorder(index), qos)

    def _recorder(self, index: int):
        def record(msg) -> None:
            now_ns = self.node.get_clock().now().nanoseconds
            age_ms = (now_ns - (msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)) / 1e6
            self.results[index].append((time.monotonic(), age_ms))
        return record

    def spin_for(self, seconds: float) -> None:
        import rclpy
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            rclpy.spin_once(self.node, timeout_sec=0.02)


def measure(label: str, nodes: list[RosProcess], output_topics: list[str], args, env: dict) -> dict:
    """Publish all cameras for warm-up + `args.seconds`, count each camera's results in the measured window."""
    counter = Counter(output_topics)
    publisher = subprocess.Popen(
        [sys.executable, "-m", "sparseinst_ros.tools.benchmark_cameras", "--role", "publisher", "--cameras",
         str(args.cameras), "--rate", str(args.rate), "--seconds", str(args.warmup + args.seconds), "--height",
         str(args.height), "--width", str(args.width)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        while publisher.poll() is None and not any(counter.results):
            counter.spin_for(0.1)                      # nodes loading, discovery, first results
        first = time.monotonic()
        counter.spin_for(args.warmup)
        window_start, cpu_start = time.monotonic(), cpu_seconds(nodes)
        counter.spin_for(args.seconds)
        window_end, cpu_end = time.monotonic(), cpu_seconds(nodes)
        publisher.wait(timeout=args.warmup + args.seconds + 180)
    finally:
        if publisher.poll() is None:
            publisher.kill()
        counter.node.destroy_node()
        for node in nodes:
            node.stop(timeout=30)
    window = window_end - window_start
    per_camera = [[age for arrival, age in results if window_start <= arrival < window_end]
                  for results in counter.results]
    rates = [len(ages) / window for ages in per_camera]
    ages = [age for camera in per_camera for age in camera]
    print(f"\n{label}: {len(per_camera)} cameras, {window:.0f} s measured after {window_start - first:.0f} s warm-up")
    print(f"   results/s total {sum(rates):.2f}; per camera {', '.join(f'{r:.2f}' for r in rates)} "
          f"(slowest/fastest {min(rates) / max(rates) if max(rates) else 0:.2f})")
    cpu = cpu_end - cpu_start
    print(f"   result age (stamp -> detections here), ms: {percentiles(ages)}")
    print(f"   node processes used {cpu:.1f} CPU s in {window:.0f} s: {sum(map(len, per_camera)) / cpu:.2f} results "
          f"per CPU second")
    return {"setup": label, "total_per_s": sum(rates), "per_camera_per_s": rates,
            "age_ms_p50": float(np.median(ages)) if ages else None, "per_cpu_s": sum(map(len, per_camera)) / cpu}


def cpu_seconds(nodes: list[RosProcess]) -> float:
    """User and system CPU time of the node processes so far."""
    import psutil
    return sum(sum(psutil.Process(node.process.pid).cpu_times()[:2]) for node in nodes)


def node_parameters(args) -> dict:
    return {"weights": args.weights, "device": args.device, "min_size": args.min_size, "max_size": args.max_size,
            "publish_overlay": False}


def one_node(args, env: dict) -> dict:
    topics = [camera_topic(i) for i in range(args.cameras)]
    node = RosProcess("sparseinst_ros.node", params={**node_parameters(args), "image_topics": topics}, env=env,
                      log=Path(args.log_dir) / "one_node.log")
    outputs = [f"/{NODE}/cam{i}/detections" for i in range(args.cameras)]
    return measure(f"1. one node, {args.cameras} cameras in one batch (image_topics)", [node], outputs, args, env)


def node_per_camera(args, env: dict) -> dict:
    nodes = [RosProcess("sparseinst_ros.node", params=node_parameters(args),
                        remaps={"image": camera_topic(i), "__node": f"{NODE}_{i}"}, env=env,
                        log=Path(args.log_dir) / f"node_{i}.log") for i in range(args.cameras)]
    outputs = [f"/{NODE}_{i}/detections" for i in range(args.cameras)]
    return measure(f"2. {args.cameras} nodes, one camera each", nodes, outputs, args, env)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=["benchmark", "publisher"], default="benchmark", help=argparse.SUPPRESS)
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--weights", default="demo", help="checkpoint for the nodes (default: the demo model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--min-size", type=int, default=0, help="the nodes' min_size (0: the model's own)")
    parser.add_argument("--max-size", type=int, default=0, help="the nodes' max_size (0: the model's own)")
    parser.add_argument("--height", type=int, default=240, help="camera image height")
    parser.add_argument("--width", type=int, default=320, help="camera image width")
    parser.add_argument("--rate", type=float, default=30.0, help="frames per second of each camera")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds after the first result before counting")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds counted")
    parser.add_argument("--setups", default="one,per-camera", help="comma-separated, from: one, per-camera")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of all setups, in alternating order")
    parser.add_argument("--log-dir", default="outputs/benchmark_cameras", help="the nodes' output")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if args.role == "publisher":
        run_publisher(args.cameras, args.rate, args.seconds, args.height, args.width)
        return 0

    import rclpy
    import torch
    env = product_environment(own_domain=True)
    os.environ.pop("FASTDDS_BUILTIN_TRANSPORTS", None)
    os.environ.update({k: env[k] for k in ("FASTDDS_DEFAULT_PROFILES_FILE", "ROS_DOMAIN_ID",
                                           "ROS_AUTOMATIC_DISCOVERY_RANGE")})
    Path(args.log_dir).mkdir(parents=True, exist_ok=True)
    print(f"{args.cameras} cameras of {args.width}x{args.height} at {args.rate:g} Hz, weights {args.weights}, "
          f"{args.device}; {os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads "
          f"per process")
    setups = {"one": one_node, "per-camera": node_per_camera}
    names = [name.strip() for name in args.setups.split(",")]
    results = []
    rclpy.init()
    try:
        for round_index in range(args.rounds):         # A B, B A, ...: drifts of a shared machine hit both alike
            for name in (names if round_index % 2 == 0 else names[::-1]):
                results.append({"round": round_index, "name": name, **setups[name](args, env)})
    finally:
        rclpy.shutdown()
    for key, what in (("total_per_s", "results per second in total"), ("per_cpu_s", "results per CPU second")):
        values = {name: [r[key] for r in results if r["name"] == name] for name in names}
        print(f"\n{what}, by round: " + "; ".join(f"{name}: {', '.join(f'{v:.2f}' for v in vs)}"
                                                  for name, vs in values.items()))
        if all(values.get(name) for name in ("one", "per-camera")):
            ratios = [one / many for one, many in zip(values["one"], values["per-camera"]) if many]
            print(f"   one node / {args.cameras} nodes, per round: {', '.join(f'{r:.2f}' for r in ratios)}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
