"""The SparseInst ROS 2 node: camera images in, instances out, never behind the camera.

`SparseInstPipeline` is the whole implementation; `SparseInstNode` (plain, everything at start-up) and
`sparseinst_ros.lifecycle_node.SparseInstLifecycleNode` (managed) only decide *when* its steps run:
load the model, open the outputs, open the inputs, and undo each.

Inference runs in its own thread on the latest frame only: a frame that arrives while the model is busy
replaces the pending one (counted as dropped), so output latency is bounded by one inference time.
"""
from __future__ import annotations

import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType,
                                SetParametersResult)
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_srvs.srv import SetBool
from vision_msgs.msg import Detection2DArray

from sparseinst_core.inference import Instances, visualize

from .conversions import ImageConversionError, check_message, compressed_to_rgb, image_to_rgb, numpy_to_image
from .detections import InstanceLabels, label_instances, resolve_class_filter, to_detection_array
from .spinning import spin_until_shutdown
from .transport import (LARGE_SAMPLE_BYTES, TRANSPORT_ADVICE, SequenceGapCounter,  # noqa: F401 (re-exported)
                        lossy_fastdds_configuration)

DEMO_WEIGHTS = "demo"
AUTO_PRESET = "auto"
RUNTIME_PARAMETERS = ("score_threshold", "mask_threshold", "classes")
LOG_REPEAT_SECONDS = 10.0
OUTPUT_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
INPUT_QOS = {
    "sensor_data": qos_profile_sensor_data,    # best effort, keep last 5
    "reliable": QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE),
}


def _descriptor(description, type_, *, float_range=None, int_range=None, constraints="") -> ParameterDescriptor:
    descriptor = ParameterDescriptor(description=description, type=type_, additional_constraints=constraints)
    if float_range:
        descriptor.floating_point_range = [FloatingPointRange(from_value=float_range[0], to_value=float_range[1])]
    if int_range:
        descriptor.integer_range = [IntegerRange(from_value=int_range[0], to_value=int_range[1], step=1)]
    return descriptor


_STRING, _DOUBLE = ParameterType.PARAMETER_STRING, ParameterType.PARAMETER_DOUBLE
_INTEGER, _BOOL = ParameterType.PARAMETER_INTEGER, ParameterType.PARAMETER_BOOL
# name -> (default, descriptor). config/sparseinst.yaml lists the same defaults.
PARAMETERS = {
    "preset": ("auto", _descriptor(
        "model preset (r18_giam, r50_giam, ...); 'auto' takes it from the checkpoint, official checkpoints "
        "need it set", _STRING)),
    "weights": (DEMO_WEIGHTS, _descriptor(
        "checkpoint file (.pth or .safetensors); 'demo' is the shipped demo model", _STRING)),
    "class_names": ("", _descriptor(
        "class names file (one per line, or JSON); empty: from the checkpoint, else COCO for 80 classes",
        _STRING)),
    "device": ("auto", _descriptor("inference device", _STRING, constraints="one of: auto, cuda, cpu")),
    "precision": ("fp32", _descriptor("inference precision (fp16 needs CUDA)", _STRING,
                                      constraints="one of: fp32, fp16, bf16")),
    "backend": ("torch", _descriptor(
        "inference engine: torch, or onnxruntime (exports the model for the fixed padded input size; falls back "
        "to torch when onnxruntime is missing)", _STRING, constraints="one of: torch, onnxruntime")),
    "min_size": (0, _descriptor("shorter image side fed to the model; 0: the model's own test size (640 for "
                                "the official presets)", _INTEGER, int_range=(0, 4096))),
    "max_size": (0, _descriptor("longest image side fed to the model; 0: the model's own test size (853 for "
                                "the official presets)", _INTEGER, int_range=(0, 8192))),
    "score_threshold": (0.3, _descriptor("minimum instance score (run-time)", _DOUBLE, float_range=(0.0, 1.0))),
    "mask_threshold": (0.45, _descriptor("mask probability threshold (run-time)", _DOUBLE,
                                         float_range=(0.0, 1.0))),
    "classes": (None, _descriptor("class filter: a list of names or of integer ids; empty publishes all classes "
                                  "(run-time)", ParameterType.PARAMETER_STRING_ARRAY)),
    "max_instances": (100, _descriptor("at most this many instances per image, best scores first", _INTEGER,
                                       int_range=(1, 65535))),
    "publish_overlay": (True, _descriptor("publish ~/overlay (drawn only while someone subscribes)", _BOOL)),
    "compressed_input": (False, _descriptor("subscribe to <image>/compressed (JPEG/PNG) instead of image",
                                            _BOOL)),
    "input_qos": ("sensor_data", _descriptor("QoS of the image and camera_info subscriptions", _STRING,
                                             constraints="one of: sensor_data, reliable")),
    "diagnostics_period": (1.0, _descriptor("seconds between /diagnostics reports", _DOUBLE,
                                            float_range=(0.05, 60.0))),
    "input_timeout": (5.0, _descriptor("warn when no image arrived for this many seconds while the topic has "
                                       "publishers", _DOUBLE, float_range=(0.5, 3600.0))),
}
CHOICES = {"device": ("auto", "cuda", "cpu"), "precision": ("fp32", "fp16", "bf16"),
           "backend": ("torch", "onnxruntime"),
           "input_qos": tuple(INPUT_QOS)}


def resolve_weights(weights: str) -> Path:
    """The checkpoint a `weights` parameter names; "demo" is the model shipped with sparseinst_core."""
    if weights != DEMO_WEIGHTS:
        return Path(weights).expanduser()
    from sparseinst_core.io import demo_weights_path

    return demo_weights_path()


@dataclass
class LoadedModel:
    """A predictor and what describes it in logs and diagnostics."""

    predictor: object
    class_names: list[str]
    description: str


def load_predictor(weights: str, preset: str, class_names_file: str, device: str, precision: str,
                   min_size: int, max_size: int, score_threshold: float, mask_threshold: float,
                   backend: str = "torch") -> LoadedModel:
    """Build, load and wrap the model; raises FileNotFoundError/ValueError/RuntimeError with the reason.

    min_size/max_size 0 take the test size recorded in the model's config.
    """
    from sparseinst_core import COCO_CLASSES, Predictor, load_class_names, load_model

    path = resolve_weights(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path} (parameter 'weights' = {weights!r})")
    model, report = load_model(path, preset=None if preset == AUTO_PRESET else preset)
    if class_names_file:
        class_names = load_class_names(class_names_file)
    elif report.metadata.get("class_names"):
        class_names = list(report.metadata["class_names"])
    elif model.num_classes == len(COCO_CLASSES):
        class_names = list(COCO_CLASSES)
    else:
        class_names = [str(i) for i in range(model.num_classes)]
    if len(class_names) != model.num_classes:
        raise ValueError(f"{len(class_names)} class names (from {class_names_file or 'the checkpoint'}) but the "
                         f"model has {model.num_classes} classes")
    min_size = min_size or model.config.min_size_test
    max_size = max_size or max(model.config.max_size_test, min_size)
    predictor = Predictor(model, min_size=min_size, max_size=max_size, score_threshold=score_threshold,
                          mask_threshold=mask_threshold, device=device, precision=precision, backend=backend,
                          fallback="torch" if backend != "torch" else None)
    description = f"{getattr(model, 'preset', None) or preset} from {path}, input {min_size}..{max_size} px"
    return LoadedModel(predictor, class_names, description)


@dataclass
class Frame:
    msg: Image | CompressedImage
    received: float                      # time.monotonic() at the subscription callback


class LatestFrameSlot:
    """Holds at most one pending frame; a newer frame replaces it and the older one counts as dropped."""

    def __init__(self):
        self._frame: Frame | None = None
        self._condition = threading.Condition()
        self._closed = False

    def put(self, frame: Frame) -> bool:
        """Make `frame` the pending one; True when it replaced (dropped) an older frame."""
        with self._condition:
            replaced = self._frame is not None
            self._frame = frame
            self._condition.notify()
            return replaced

    def take(self, timeout: float | None = None) -> Frame | None:
        """The pending frame, waiting for one; None when closed or after `timeout` seconds."""
        with self._condition:
            self._condition.wait_for(lambda: self._frame is not None or self._closed, timeout)
            frame, self._frame = self._frame, None
            return None if self._closed else frame

    def clear(self) -> None:
        with self._condition:
            self._frame = None

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()


@dataclass
class Statistics:
    """Counters since start-up and samples of the current diagnostics period (guarded by `lock`)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    received: int = 0
    processed: int = 0
    dropped: int = 0
    ignored_paused: int = 0
    transport: SequenceGapCounter = field(default_factory=SequenceGapCounter)   # frames lost before the node
    period_lost: int = 0
    bad_inputs: Counter = field(default_factory=Counter)        # cause -> count since start-up
    period_received: int = 0
    period_processed: int = 0
    period_bad: int = 0
    input_latency_ms: list[float] = field(default_factory=list)   # stamp -> subscription callback
    inference_ms: list[float] = field(default_factory=list)
    end_to_end_ms: list[float] = field(default_factory=list)
    overhead_ms: list[float] = field(default_factory=list)
    last_received: float | None = None                          # time.monotonic()


def _age_ms(node: Node, stamp) -> float | None:
    """Milliseconds from a header stamp to now on the node's clock; None for an unset stamp."""
    stamp_ns = stamp.sec * 10**9 + stamp.nanosec
    return (node.get_clock().now().nanoseconds - stamp_ns) / 1e6 if stamp_ns else None


def _median(values) -> float:
    return float(np.median(values)) if len(values) else float("nan")


class SparseInstPipeline:
    """Parameters, model, subscriptions, inference thread and publishers of one node.

    `node` is a `Node` or a `LifecycleNode`; `create_publisher`/`destroy_publisher` are its (lifecycle)
    publisher factory and its inverse.
    """

    def __init__(self, node: Node, create_publisher, destroy_publisher):
        self.node = node
        self.logger = node.get_logger()
        self._create_publisher = create_publisher
        self._destroy_publisher = destroy_publisher
        self.image_topic = ""
        self.model: LoadedModel | None = None
        self.allowed_classes: frozenset[int] | None = None
        self.enabled = True
        self.stats = Statistics()
        self.slot = LatestFrameSlot()
        self.publishers: dict[str, object] = {}
        self.subscriptions: list = []
        self.timers: list = []
        self.worker: threading.Thread | None = None
        self.enable_service = None
        self._recent_camera_info: deque[CameraInfo] = deque(maxlen=10)
        self._last_logged: dict[str, float] = {}
        self._last_size: tuple[int, int] | None = None
        self._transport_warned = False
        self._camera_info_checked = False
        self._last_sample_bytes = 0
        self._no_input_warned = False
        self._inputs_opened = 0.0
        self._period_start = time.monotonic()
        self._declare_parameters()
        node.add_on_set_parameters_callback(self._on_set_parameters)

    # ----------------------------------------------------------------------------------------- parameters
    def _declare_parameters(self) -> None:
        for name, (default, descriptor) in PARAMETERS.items():
            if name == "classes":
                # Names (strings) or ids (integers): dynamically typed, checked by `_class_filter_error`. An
                # empty list has no type in ROS parameters (YAML `[]` reads as unset): unset means all classes.
                descriptor.dynamic_typing = True
                self.node.declare_parameter(name, None, descriptor)
                error = _class_filter_error(self.node.get_parameter(name))
                if error:
                    raise ValueError(error)
            else:
                self.node.declare_parameter(name, default, descriptor)
        for name, choices in CHOICES.items():
            if self.param(name) not in choices:
                raise ValueError(f"parameter {name!r} is {self.param(name)!r}; expected one of {', '.join(choices)}")

    def param(self, name: str):
        return self.node.get_parameter(name).value

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        """Thresholds and the class filter change at run time; the rest needs a new model."""
        changes = {p.name: p.value for p in parameters}
        for parameter in parameters:
            if parameter.name == "classes" and _class_filter_error(parameter):
                return SetParametersResult(successful=False, reason=_class_filter_error(parameter))
        static = sorted(set(changes) - set(RUNTIME_PARAMETERS))
        if static and self.model is not None:
            return SetParametersResult(successful=False, reason=(
                f"{', '.join(static)} cannot change while the model is loaded; only {', '.join(RUNTIME_PARAMETERS)} "
                f"change at run time (restart the node, or clean up and reconfigure the lifecycle node)"))
        for name, choices in CHOICES.items():
            if name in changes and changes[name] not in choices:
                return SetParametersResult(successful=False,
                                           reason=f"{name} must be one of {', '.join(choices)}, got {changes[name]!r}")
        if "classes" in changes and self.model is not None:
            try:
                allowed = resolve_class_filter(changes["classes"] or [], self.model.class_names)
            except ValueError as error:
                return SetParametersResult(successful=False, reason=str(error))
            self.allowed_classes = allowed
        if self.model is not None:
            for name in ("score_threshold", "mask_threshold"):
                if name in changes:
                    setattr(self.model.predictor, name, float(changes[name]))
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------------------------------ life cycle
    def load_model(self) -> None:
        """Load the weights named by the parameters; raises with the reason (missing/unreadable file ...)."""
        model = load_predictor(self.param("weights"), self.param("preset"), self.param("class_names"),
                               self.param("device"), self.param("precision"), self.param("min_size"),
                               self.param("max_size"), self.param("score_threshold"), self.param("mask_threshold"),
                               self.param("backend"))
        self.allowed_classes = resolve_class_filter(self.param("classes") or [], model.class_names)
        self.model = model
        self.logger.info(f"loaded {model.description} on {model.predictor.device} ({model.predictor.precision}), "
                         f"{len(model.class_names)} classes")

    def unload_model(self) -> None:
        """Drop the model (and the GPU memory it cached); a no-op when none is loaded."""
        if self.model is None:
            return
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.logger.info("unloaded the model")

    def open_outputs(self) -> None:
        create = self._create_publisher
        self.publishers = {
            "detections": create(Detection2DArray, "~/detections", OUTPUT_QOS),
            "instance_mask": create(Image, "~/instance_mask", OUTPUT_QOS),
            "camera_info": create(CameraInfo, "~/camera_info", OUTPUT_QOS),
            "diagnostics": create(DiagnosticArray, "/diagnostics", OUTPUT_QOS),
        }
        if self.param("publish_overlay"):
            self.publishers["overlay"] = create(Image, "~/overlay", OUTPUT_QOS)
        self.enable_service = self.node.create_service(SetBool, "~/enable", self._on_enable)

    def close_outputs(self) -> None:
        for publisher in self.publishers.values():
            self._destroy_publisher(publisher)
        self.publishers = {}
        if self.enable_service is not None:
            self.node.destroy_service(self.enable_service)
            self.enable_service = None

    def open_inputs(self) -> None:
        """Subscribe to the image (or its compressed transport) and the sibling camera_info; start inference."""
        qos = INPUT_QOS[self.param("input_qos")]
        if self.param("compressed_input"):
            # image_transport naming: the compressed stream of <image> is <image>/compressed, after remapping
            self.image_topic = self.node.resolve_topic_name("image") + "/compressed"
            self.subscriptions.append(self.node.create_subscription(
                CompressedImage, self.image_topic, self._on_image, qos))
        else:
            self.image_topic = self.node.resolve_topic_name("image")
            self.subscriptions.append(self.node.create_subscription(Image, "image", self._on_image, qos))
        self.subscriptions.append(self.node.create_subscription(
            CameraInfo, camera_info_topic(self.node.resolve_topic_name("image")), self._on_camera_info, qos))
        self.slot = LatestFrameSlot()
        with self.stats.lock:
            self.stats.transport.forget_publishers()
        self.worker = threading.Thread(target=self._inference_loop, name="sparseinst_inference", daemon=True)
        self.worker.start()
        self.timers.append(self.node.create_timer(self.param("diagnostics_period"), self._report))
        self._inputs_opened = time.monotonic()
        self._no_input_warned = False
        self.logger.info(f"listening on {self.image_topic} ({self.param('input_qos')} QoS)")

    def close_inputs(self) -> None:
        """Stop receiving and let the inference thread finish its current frame."""
        for subscription in self.subscriptions:
            self.node.destroy_subscription(subscription)
        for timer in self.timers:
            self.node.destroy_timer(timer)
        self.subscriptions, self.timers = [], []
        self.slot.close()
        if self.worker is not None:
            self.worker.join(timeout=30.0)
            self.worker = None

    # ------------------------------------------------------------------------------------------- callbacks
    def _on_image(self, msg, info) -> None:
        """Count, check the header (cheap), and make the frame the pending one; no pixel work here."""
        now = time.monotonic()
        input_latency_ms = _age_ms(self.node, msg.header.stamp)
        with self.stats.lock:
            self.stats.received += 1
            self.stats.period_received += 1
            self.stats.last_received = now
            self.stats.period_lost += self.stats.transport.add(info)
            if input_latency_ms is not None:
                self.stats.input_latency_ms.append(input_latency_ms)
        if not self.enabled:
            with self.stats.lock:
                self.stats.ignored_paused += 1
            return
        # Malformed frames are counted here, not in the inference thread: under load most frames are
        # replaced before inference, and a bad one must not hide among the dropped.
        try:
            check_message(msg)
        except ImageConversionError as error:
            self._count_bad_input(error.cause, str(error))
            return
        if isinstance(msg, Image):
            self._check_size(msg.height, msg.width)
        self._last_sample_bytes = len(msg.data)
        if not self._transport_warned and len(msg.data) > LARGE_SAMPLE_BYTES:
            self._transport_warned = True
            problem = lossy_fastdds_configuration()
            if problem:
                self.logger.warning(f"receiving {len(msg.data) / 1e6:.1f} MB images on {self.image_topic}, but "
                                    f"{problem}: {TRANSPORT_ADVICE}")
        if self.slot.put(Frame(msg, now)):
            with self.stats.lock:
                self.stats.dropped += 1

    def _check_size(self, height: int, width: int) -> None:
        if self._last_size is not None and (height, width) != self._last_size:
            self._count_bad_input("size_changed", f"image size changed from {self._last_size[1]}x"
                                  f"{self._last_size[0]} to {width}x{height}; outputs follow the new size")
        self._last_size = (height, width)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._recent_camera_info.append(msg)

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        self.enabled = bool(request.data)
        if not self.enabled:
            self.slot.clear()
        response.success = True
        response.message = "inference enabled" if self.enabled else "inference paused"
        self.logger.info(response.message)
        return response

    # ------------------------------------------------------------------------------------------- inference
    def _inference_loop(self) -> None:
        slot = self.slot
        while True:
            frame = slot.take()
            if frame is None:
                return
            try:
                self._process(frame)
            except ImageConversionError as error:
                self._count_bad_input(error.cause, str(error))
            except Exception as error:   # a failing frame must not stop the node
                if not self.node.context.ok():   # shutting down: publishers are gone, not a frame's fault
                    return
                self._count_bad_input("inference_error", f"{type(error).__name__}: {error}")

    def _process(self, frame: Frame) -> None:
        started = time.monotonic()
        msg = frame.msg
        if isinstance(msg, CompressedImage):
            rgb = compressed_to_rgb(msg)
            self._check_size(*rgb.shape[:2])   # known only once decoded
        else:
            rgb = image_to_rgb(msg)
        model = self.model
        inference_start = time.monotonic()
        result = model.predictor(rgb)
        inference_s = time.monotonic() - inference_start
        instances = label_instances(result, self.allowed_classes, self.param("max_instances"))
        self._publish(msg.header, rgb, instances, model.class_names)
        done = time.monotonic()
        end_to_end_ms = _age_ms(self.node, msg.header.stamp)
        with self.stats.lock:
            self.stats.processed += 1
            self.stats.period_processed += 1
            self.stats.inference_ms.append(inference_s * 1e3)
            self.stats.overhead_ms.append((done - started - inference_s) * 1e3)
            if end_to_end_ms is not None:
                self.stats.end_to_end_ms.append(end_to_end_ms)

    def _publish(self, header, rgb: np.ndarray, instances: InstanceLabels, class_names) -> None:
        publishers = self.publishers
        publishers["instance_mask"].publish(numpy_to_image(instances.label_image, "mono16", header))
        publishers["detections"].publish(to_detection_array(instances, header))
        overlay = publishers.get("overlay")
        if overlay is not None and overlay.get_subscription_count() > 0:
            overlay.publish(numpy_to_image(draw_overlay(rgb, instances, class_names), "rgb8", header))
        camera_info = self._matching_camera_info(header)
        if camera_info is not None:
            camera_info.header = header
            publishers["camera_info"].publish(camera_info)

    def _matching_camera_info(self, header) -> CameraInfo | None:
        """The camera_info with the image's stamp, else the latest one (a copy: the header is replaced)."""
        candidates = list(self._recent_camera_info)
        if not candidates:
            return None
        match = next((info for info in reversed(candidates) if info.header.stamp == header.stamp), candidates[-1])
        return CameraInfo(height=match.height, width=match.width, distortion_model=match.distortion_model,
                          d=match.d, k=match.k, r=match.r, p=match.p, binning_x=match.binning_x,
                          binning_y=match.binning_y, roi=match.roi)

    def _count_bad_input(self, cause: str, message: str) -> None:
        with self.stats.lock:
            self.stats.bad_inputs[cause] += 1
            self.stats.period_bad += 1
            count = self.stats.bad_inputs[cause]
        self._warn_throttled(cause, f"skipped a frame [{cause}]: {message}", count)

    def _warn_throttled(self, cause: str, message: str, count: int) -> None:
        """Log `message` the first time `cause` occurs, then at most every LOG_REPEAT_SECONDS."""
        now = time.monotonic()
        last = self._last_logged.get(cause)
        if last is None or now - last >= LOG_REPEAT_SECONDS:
            self._last_logged[cause] = now
            repeat = f" ({count} so far; repeats are logged every {LOG_REPEAT_SECONDS:.0f} s)" if last else ""
            self.logger.warning(f"{message}{repeat}")

    # ----------------------------------------------------------------------------------------- diagnostics
    def _report(self) -> None:
        now = time.monotonic()
        period = max(now - self._period_start, 1e-6)
        self._period_start = now
        stats = self.stats
        with stats.lock:
            received, processed, bad = stats.period_received, stats.period_processed, stats.period_bad
            lost, stats.period_lost = stats.period_lost, 0
            lost_total, loss_fraction = stats.transport.lost, stats.transport.loss_fraction
            inference, end_to_end, overhead = stats.inference_ms, stats.end_to_end_ms, stats.overhead_ms
            input_latency = stats.input_latency_ms
            stats.period_received = stats.period_processed = stats.period_bad = 0
            stats.inference_ms, stats.end_to_end_ms, stats.overhead_ms, stats.input_latency_ms = [], [], [], []
            totals = dict(received=stats.received, processed=stats.processed, dropped=stats.dropped,
                          ignored_paused=stats.ignored_paused)
            bad_inputs = dict(stats.bad_inputs)
            last_received = stats.last_received
        self._check_input_silence(now, last_received)
        if lost:
            self._warn_transport_loss(lost, received, lost_total)
        self._check_camera_info(processed)

        level, message = DiagnosticStatus.OK, "running"
        if not self.enabled:
            message = "paused (~/enable)"
        elif bad:
            level, message = DiagnosticStatus.WARN, f"{bad} bad input frame(s) in the last {period:.1f} s"
        elif lost:
            level, message = DiagnosticStatus.WARN, (f"{lost} frame(s) lost before reaching the node in the last "
                                                     f"{period:.1f} s")
        elif self._no_input_warned:
            level, message = DiagnosticStatus.WARN, f"no images received on {self.image_topic}"
        model = self.model
        values = {
            "input rate (Hz)": f"{received / period:.2f}",
            "output rate (Hz)": f"{processed / period:.2f}",
            "input latency median (ms)": f"{_median(input_latency):.2f}",
            "inference latency median (ms)": f"{_median(inference):.2f}",
            "inference latency max (ms)": f"{max(inference, default=float('nan')):.2f}",
            "end-to-end latency median (ms)": f"{_median(end_to_end):.2f}",
            "node overhead median (ms)": f"{_median(overhead):.2f}",
            "frames received": str(totals["received"]),
            "frames processed": str(totals["processed"]),
            "frames dropped": str(totals["dropped"]),
            "frames lost in transport": str(lost_total),
            "transport loss (%)": f"{100 * loss_fraction:.2f}",
            "frames ignored while paused": str(totals["ignored_paused"]),
            "bad input frames": str(sum(bad_inputs.values())),
            **{f"bad input: {cause}": str(count) for cause, count in sorted(bad_inputs.items())},
            "enabled": str(self.enabled).lower(),
            "device": str(model.predictor.device) if model else "",
            "precision": model.predictor.precision if model else "",
            "model": model.description if model else "",
            "image topic": self.image_topic,
        }
        status = DiagnosticStatus(level=level, name=f"{self.node.get_fully_qualified_name()}: inference",
                                  message=message, hardware_id=values["device"],
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        array_msg = DiagnosticArray(status=[status])
        array_msg.header.stamp = self.node.get_clock().now().to_msg()
        self.publishers["diagnostics"].publish(array_msg)

    def _check_input_silence(self, now: float, last_received: float | None) -> None:
        """Warn once per silence when the image topic has publishers but nothing arrives."""
        since = now - (last_received if last_received is not None else self._inputs_opened)
        if since < self.param("input_timeout"):
            self._no_input_warned = False
            return
        publishers = self.node.get_publishers_info_by_topic(self.image_topic)
        if self._no_input_warned or not publishers:
            return
        self._no_input_warned = True
        hints = []
        if self.param("input_qos") == "reliable" and any(
                p.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for p in publishers):
            hints.append("a publisher is best effort while input_qos is 'reliable': set input_qos to "
                         "'sensor_data'")
        problem = lossy_fastdds_configuration()
        if problem:
            hints.append(f"{problem}: {TRANSPORT_ADVICE}")
        self.logger.warning(f"no image received on {self.image_topic} for {since:.0f} s although "
                            f"{len(publishers)} publisher(s) exist" + (": " + "; ".join(hints) if hints else ""))

    def _warn_transport_loss(self, lost: int, received: int, lost_total: int) -> None:
        """Frames were published to the image topic but never arrived (gaps in publisher sequence numbers)."""
        hint = TRANSPORT_ADVICE if self._last_sample_bytes > LARGE_SAMPLE_BYTES else (
            "check the network and the publisher's QoS")
        self._warn_throttled("transport_loss", f"{lost} of {lost + received} image(s) published on {self.image_topic} "
                             f"in the last period were lost before reaching this node: {hint}", lost_total)

    def _check_camera_info(self, processed: int) -> None:
        """Once images flow: say so when no camera_info arrives beside them but one is published elsewhere."""
        if self._camera_info_checked or processed == 0 or self._recent_camera_info:
            return
        self._camera_info_checked = True
        expected = camera_info_topic(self.image_topic.removesuffix("/compressed"))
        if self.node.count_publishers(expected):
            return   # published, just not yet received
        elsewhere = sorted(name for name, types in self.node.get_topic_names_and_types()
                           if "sensor_msgs/msg/CameraInfo" in types and name != expected
                           and not name.startswith(self.node.get_fully_qualified_name() + "/"))
        if elsewhere:
            self.logger.warning(f"no camera_info on {expected} (looked up beside the image topic); CameraInfo is "
                                f"published on {', '.join(elsewhere)}: remap the image topic so that its camera_info "
                                f"is its sibling, or the camera's camera_info to {expected}")


def _class_filter_error(parameter: Parameter) -> str | None:
    """Why a value of the `classes` parameter is not a class filter; None when it is one."""
    if parameter.type_ in (Parameter.Type.NOT_SET, Parameter.Type.STRING_ARRAY, Parameter.Type.INTEGER_ARRAY):
        return None
    return (f"parameter 'classes' must be a list of class names or of integer ids (empty for all), got "
            f"{parameter.type_.name.lower()} {parameter.value!r}")


def camera_info_topic(image_topic: str) -> str:
    """The camera_info beside an image topic: /cam/image_raw -> /cam/camera_info (image_transport's rule)."""
    namespace = image_topic.rsplit("/", 1)[0]
    return f"{namespace}/camera_info"


def draw_overlay(rgb: np.ndarray, instances: InstanceLabels, class_names) -> np.ndarray:
    """The published instances (after class filter and overlaps) drawn over the image: uint8 [H,W,3] RGB."""
    masks = instances.label_image[None] == instances.ids[:, None, None]     # [N,H,W]
    return visualize.draw_overlay(rgb, Instances(instances.scores, instances.class_ids, masks), class_names)


class SparseInstNode(Node):
    """The plain node: loads the model and starts at construction; a weights error raises."""

    def __init__(self, **kwargs):
        super().__init__("sparseinst_node", **kwargs)
        self.pipeline = SparseInstPipeline(self, self.create_publisher, self.destroy_publisher)
        self.pipeline.load_model()
        self.pipeline.open_outputs()
        self.pipeline.open_inputs()

    def destroy_node(self):
        if hasattr(self, "pipeline"):   # absent when start-up failed
            self.pipeline.close_inputs()
        super().destroy_node()


def run(node_factory) -> int:
    """Spin a node until shutdown; start-up errors are logged with their reason and give exit status 1."""
    rclpy.init(args=sys.argv)
    try:
        node = node_factory()
    except (FileNotFoundError, ValueError, RuntimeError, ParameterException) as error:
        rclpy.logging.get_logger("sparseinst_node").fatal(f"start-up failed: {error}")
        rclpy.try_shutdown()
        return 1
    try:
        spin_until_shutdown(node)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def main() -> None:
    sys.exit(run(SparseInstNode))


if __name__ == "__main__":
    main()
