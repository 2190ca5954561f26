"""A small consumer of the node's outputs, for the demo: prints each frame's detections and the rates, and
saves the first few overlay images as PNG.

    sparseinst_demo_client --ros-args -p max_frames:=30 -p output_dir:=outputs/ros_demo

Subscribes to `sparseinst_node/detections`, `sparseinst_node/instance_mask`, `sparseinst_node/overlay` and
`sparseinst_node/detections_3d` (relative names: remap them for another node name); with depth it prints
`id class x y z` (metres) per object. Exits after `max_frames` results (0: never), with
status 1 when no result arrived within `timeout` seconds.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray, Detection3DArray

from sparseinst_core.data.synthetic import SYNTHETIC_CLASSES

from ..conversions import image_to_numpy
from ..spinning import spin_until_shutdown

QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)


class DemoClient(Node):
    def __init__(self):
        super().__init__("sparseinst_demo_client")
        self.class_names = list(self.declare_parameter("class_names", list(SYNTHETIC_CLASSES)).value)
        self.max_frames = self.declare_parameter("max_frames", 0).value
        self.timeout = self.declare_parameter("timeout", 120.0).value
        self.save_count = self.declare_parameter("save_count", 3).value
        self.output_dir = Path(self.declare_parameter("output_dir", "outputs/ros_demo").value)
        self.create_subscription(Detection2DArray, "sparseinst_node/detections", self.on_detections, QOS)
        self.create_subscription(Image, "sparseinst_node/instance_mask", self.on_mask, QOS)
        self.create_subscription(Image, "sparseinst_node/overlay", self.on_overlay, QOS)
        self.create_subscription(Detection3DArray, "sparseinst_node/detections_3d", self.on_detections_3d, QOS)
        self.overlay_topic = self.resolve_topic_name("sparseinst_node/overlay")
        self.started = time.monotonic()
        self.arrivals: list[float] = []
        self.ages_ms: list[float] = []
        self.masks: dict[tuple[int, int], np.ndarray] = {}
        self.saved: list[Path] = []

    def age_ms(self, header) -> float:
        return (self.get_clock().now().nanoseconds - (header.stamp.sec * 10**9 + header.stamp.nanosec)) / 1e6

    def on_mask(self, msg: Image) -> None:
        self.masks[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = image_to_numpy(msg)
        while len(self.masks) > 10:
            self.masks.pop(next(iter(self.masks)))

    def on_detections(self, msg: Detection2DArray) -> None:
        self.arrivals.append(time.monotonic())
        self.ages_ms.append(self.age_ms(msg.header))
        labels = self.masks.get((msg.header.stamp.sec, msg.header.stamp.nanosec))
        items = []
        for detection in msg.detections:
            hypothesis = detection.results[0].hypothesis
            class_id = int(hypothesis.class_id)
            name = self.class_names[class_id] if class_id < len(self.class_names) else hypothesis.class_id
            pixels = f" {np.count_nonzero(labels == int(detection.id))} px" if labels is not None else ""
            items.append(f"#{detection.id} {name} {hypothesis.score:.2f}{pixels}")
        print(f"[{len(self.arrivals):4d}] stamp {msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d} "
              f"frame {msg.header.frame_id!r} age {self.ages_ms[-1]:.0f} ms: "
              f"{len(msg.detections)} instance(s) {', '.join(items)}", flush=True)
        if len(self.arrivals) % 10 == 0:
            window = self.arrivals[-10:]
            rate = (len(window) - 1) / max(window[-1] - window[0], 1e-9)
            print(f"       output rate {rate:.2f} Hz, median result age {np.median(self.ages_ms[-10:]):.0f} ms",
                  flush=True)

    def on_detections_3d(self, msg: Detection3DArray) -> None:
        for detection in msg.detections:
            position = detection.results[0].pose.pose.position
            print(f"       {detection.id} {detection.results[0].hypothesis.class_id} {position.x:.3f} "
                  f"{position.y:.3f} {position.z:.3f}", flush=True)

    def on_overlay(self, msg: Image) -> None:
        if len(self.saved) >= self.save_count:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / f"overlay_{len(self.saved):02d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(image_to_numpy(msg), cv2.COLOR_RGB2BGR))
        self.saved.append(path)
        print(f"       saved {path}", flush=True)

    def done(self) -> bool:
        if self.max_frames and len(self.arrivals) >= self.max_frames:
            # wait for the overlays too, if the node publishes them
            overlays_pending = len(self.saved) < self.save_count and self.count_publishers(self.overlay_topic) > 0
            return not overlays_pending or len(self.arrivals) >= 3 * self.max_frames
        return not self.arrivals and time.monotonic() - self.started > self.timeout


def main() -> None:
    rclpy.init(args=sys.argv)
    client = DemoClient()
    try:
        spin_until_shutdown(client, done=client.done)
    finally:
        received = len(client.arrivals)
        if received:
            duration = client.arrivals[-1] - client.arrivals[0]
            rate = (received - 1) / duration if duration > 0 else float("nan")
            print(f"received {received} results, {rate:.2f} Hz, median age {np.median(client.ages_ms):.0f} ms; "
                  f"overlays: {', '.join(map(str, client.saved)) or 'none'}", flush=True)
        else:
            print(f"no result received within {client.timeout:.0f} s", file=sys.stderr, flush=True)
        client.destroy_node()
        rclpy.try_shutdown()
    sys.exit(0 if received else 1)


if __name__ == "__main__":
    main()
