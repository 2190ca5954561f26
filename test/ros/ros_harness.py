"""Helpers for the ROS tests: run a node in its own process and talk to it from the test process."""
from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from vision_msgs.msg import Detection2DArray

from sparseinst_ros.tools.processes import RosProcess

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config" / "sparseinst.yaml"
NODE_NAME = "sparseinst_node"
CLASS_NAMES = ["circle", "square", "triangle"]   # of the test weights (conftest.weights_file)
MIN_SIZE = 128   # the nodes under test run at this input size, to stay fast on a CPU


class RecordingLogger:
    """Stands in for a node's logger: keeps what it is asked to log as (level, message) `records`."""

    def __init__(self):
        self.records: list[tuple[str, str]] = []

    def __getattr__(self, level):
        if level not in ("debug", "info", "warning", "error", "fatal"):
            raise AttributeError(level)
        return lambda message: self.records.append((level, message))

    @property
    def warnings(self) -> list[str]:
        return self.messages("warning")

    def messages(self, level: str) -> list[str]:
        return [message for logged, message in self.records if logged == level]


def start_process(module: str, log_path: Path, env: dict | None = None, **ros_arguments) -> RosProcess:
    """`python -m <module> --ros-args ...` in the tests' environment (see conftest) with `env` on top (None
    removes a variable); `ros_arguments`: params, remaps, params_file."""
    return RosProcess(module, log=log_path, env_overrides=env, **ros_arguments)


def stamp(sec: int, nanosec: int = 0):
    from builtin_interfaces.msg import Time
    return Time(sec=sec, nanosec=nanosec)


class Client:
    """The test side: publishes images and camera_info, collects every output of the node by stamp."""

    def __init__(self, name: str, image_topic: str = "/camera/image_raw", node_name: str = NODE_NAME,
                 image_qos=qos_profile_sensor_data, outputs_namespace: str = ""):
        """`outputs_namespace`: where the node publishes this camera's outputs, under its private namespace."""
        self.node = Node(name)
        self.node_name = node_name
        prefix = f"/{node_name}" + (f"/{outputs_namespace}" if outputs_namespace else "")
        self.image_pub = self.node.create_publisher(Image, image_topic, image_qos)
        self.compressed_pub = self.node.create_publisher(CompressedImage, image_topic + "/compressed", image_qos)
        self.info_pub = self.node.create_publisher(
            CameraInfo, image_topic.rsplit("/", 1)[0] + "/camera_info", qos_profile_sensor_data)
        self.outputs: dict[str, dict] = defaultdict(dict)      # topic -> {(sec, nanosec): msg}
        for topic, msg_type in (("detections", Detection2DArray), ("instance_mask", Image),
                                ("overlay", Image), ("camera_info", CameraInfo)):
            self.node.create_subscription(msg_type, f"{prefix}/{topic}", self._collector(topic), 10)
        self.diagnostics: list[DiagnosticArray] = []
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.parameters = AsyncParameterClient(self.node, node_name)

    def _collector(self, topic):
        def collect(msg):
            self.outputs[topic][(msg.header.stamp.sec, msg.header.stamp.nanosec)] = msg
        return collect

    def _on_diagnostics(self, msg: DiagnosticArray):
        if any(status.name.startswith(f"/{self.node_name}") for status in msg.status):
            self.diagnostics.append(msg)

    def spin_until(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            rclpy.spin_once(self.node, timeout_sec=0.05)
        return predicate()

    def spin_for(self, seconds: float) -> None:
        self.spin_until(lambda: False, seconds)

    def wait_for_subscriber(self, timeout: float = 60.0) -> bool:
        return self.spin_until(lambda: self.image_pub.get_subscription_count() > 0, timeout)

    def send(self, msg, topics=("detections", "instance_mask"), timeout: float = 30.0, repeat: float = 2.0):
        """Publish `msg` (re-published every `repeat` s: best effort may drop) until outputs with its stamp
        arrive on every topic in `topics`; returns {topic: msg} or raises AssertionError on timeout."""
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        publisher = self.compressed_pub if isinstance(msg, CompressedImage) else self.image_pub
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            publisher.publish(msg)
            if self.spin_until(lambda: all(key in self.outputs[t] for t in topics), repeat):
                return {t: self.outputs[t][key] for t in topics}
        raise AssertionError(f"no {topics} output for stamp {key} within {timeout} s")

    def receives_nothing_for(self, msg, seconds: float) -> bool:
        """Publish `msg` a few times and check that no output carries its stamp."""
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        publisher = self.compressed_pub if isinstance(msg, CompressedImage) else self.image_pub
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            publisher.publish(msg)
            if self.spin_until(lambda: any(key in out for out in self.outputs.values()), 0.5):
                return False
        return True

    def set_parameters(self, *parameters: Parameter, **values):
        """Set `parameters` and `values` (an empty list as a string array) through the node's parameter services;
        returns the SetParametersResult list."""
        params = [*parameters, *(Parameter(name, value=value) if not (isinstance(value, list) and not value)
                                 else Parameter(name, Parameter.Type.STRING_ARRAY, value)
                                 for name, value in values.items())]
        return self._parameter_request(lambda: self.parameters.set_parameters(params)).results

    def delete_parameters(self, *names: str):
        """`ros2 param delete` through the node's parameter services; returns the SetParametersResult list."""
        return self._parameter_request(lambda: self.parameters.delete_parameters(list(names))).results

    def list_parameters(self) -> list[str]:
        return list(self._parameter_request(lambda: self.parameters.list_parameters()).result.names)

    def _parameter_request(self, send):
        """The response to a parameter service request; each is idempotent here, so an unanswered request is
        sent again (see `call`)."""
        assert self.parameters.wait_for_services(timeout_sec=30.0)
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            future = send()
            if self.spin_until(future.done, 5.0):
                return future.result()
        raise AssertionError("parameter request timed out")

    def latest_diagnostics(self, after: float | None = None, timeout: float = 10.0) -> dict[str, str]:
        """Key/values of a diagnostics report published after now (or `after`, a node clock time in s)."""
        since = self.node.get_clock().now().nanoseconds / 1e9 if after is None else after
        def fresh():
            return [d for d in self.diagnostics if d.header.stamp.sec + d.header.stamp.nanosec / 1e9 > since]
        assert self.spin_until(lambda: bool(fresh()), timeout), "no fresh diagnostics"
        status = fresh()[-1].status[0]
        return {"level": status.level, "message": status.message,
                **{kv.key: kv.value for kv in status.values}}

    def call(self, client, request, timeout: float = 30.0, retry_after: float | None = None):
        """Call a service; with `retry_after` (only for idempotent requests), send the request again when no
        answer came within that many seconds: a server that has not yet discovered this client drops its
        response (rmw: "failed to send response")."""
        assert client.wait_for_service(timeout_sec=timeout), f"service {client.srv_name} not available"
        deadline = time.monotonic() + timeout
        while True:
            future = client.call_async(request)
            attempt = min(retry_after or timeout, max(deadline - time.monotonic(), 0.0))
            if self.spin_until(future.done, attempt):
                return future.result()
            assert retry_after and time.monotonic() < deadline, f"service {client.srv_name} timed out"

    def destroy(self):
        self.node.destroy_node()


def unusable_weights(kind: str, directory, weights_file):
    """A weights file (and class names file) of one kind of breakage, built from the test weights; returns
    (weights, {"class_names": file} or {}, the file the message must name)."""
    import torch
    if kind == "text_named_pth":
        path = directory / "notes.pth"
        path.write_text("these are not weights\n")
        return path, {}, path
    if kind == "binary_class_names":
        names = directory / "names.txt"
        names.write_bytes(b"\xff\xfe\x00\x81 not text")
        return weights_file, {"class_names": str(names)}, names
    checkpoint = torch.load(weights_file, weights_only=True)
    checkpoint.update({"unknown_config_key": {"config": {**checkpoint["config"], "future_option": 1}},
                       "class_names_of_wrong_type": {"class_names": 5},
                       "config_a_string": {"config": "r18_giam"}}[kind])
    path = directory / f"{kind}.pth"
    torch.save(checkpoint, path)
    return path, {}, path


UNUSABLE_WEIGHTS = ["text_named_pth", "unknown_config_key", "class_names_of_wrong_type", "config_a_string",
                    "binary_class_names"]


def scene_image(height: int = 96, width: int = 128, seed: int = 0) -> np.ndarray:
    """A generated scene of shapes (RGB uint8), as the demo model sees them."""
    from sparseinst_core.data.synthetic import render_scene
    image, _, _ = render_scene(np.random.default_rng(seed), height, width)
    return image
