"""The node's parameters: names, defaults, descriptors, ranges and choices, and the checks of their values.

config/sparseinst.yaml lists the same defaults. Choices and default thresholds come from the library
(`sparseinst_core.inference.defaults`), so the node accepts exactly what the predictor does. The checks
are plain functions of `rclpy.parameter.Parameter` values: no node needed (`declare_parameters` puts the table
on a node).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

from sparseinst_core.inference.defaults import (BACKENDS, DEVICES, MASK_THRESHOLD, MAX_INSTANCES, PRECISIONS,
                                                SCORE_THRESHOLD)
from sparseinst_core.inference.label_image import MAX_LABEL
from sparseinst_core.inference.loader import DEMO_WEIGHTS

from .cameras import image_topics_error
from .conversions import MAX_INPUT_PIXELS

NODE_NAME = "sparseinst_node"     # the outputs are ~/<name>: /sparseinst_node/detections, ...
AUTO_PRESET = "auto"
INPUT_QOS = {
    "sensor_data": qos_profile_sensor_data,    # best effort, keep last 5
    "reliable": QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE),
}

_STRING, _DOUBLE = ParameterType.PARAMETER_STRING, ParameterType.PARAMETER_DOUBLE
_INTEGER, _BOOL = ParameterType.PARAMETER_INTEGER, ParameterType.PARAMETER_BOOL
_TYPE_NAMES = {_STRING: "string", _DOUBLE: "double", _INTEGER: "integer", _BOOL: "bool"}


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter: its default, what it means, and which values it takes."""

    default: object
    description: str
    type: int                                 # rcl_interfaces ParameterType
    choices: tuple[str, ...] = ()
    range: tuple[float, float] | None = None  # inclusive, for integers and doubles
    runtime: bool = False                     # may change while the model is loaded
    dynamic_typing: bool = False

    def descriptor(self) -> ParameterDescriptor:
        descriptor = ParameterDescriptor(description=self.description, type=self.type,
                                         dynamic_typing=self.dynamic_typing,
                                         additional_constraints=f"one of: {', '.join(self.choices)}" if self.choices
                                         else "")
        if self.range and self.type == _DOUBLE:
            descriptor.floating_point_range = [FloatingPointRange(from_value=self.range[0], to_value=self.range[1])]
        if self.range and self.type == _INTEGER:
            descriptor.integer_range = [IntegerRange(from_value=self.range[0], to_value=self.range[1], step=1)]
        return descriptor


PARAMETERS: dict[str, ParameterSpec] = {
    "preset": ParameterSpec(AUTO_PRESET, "model preset (r18_giam, r50_giam, ...); 'auto' takes it from the checkpoint, "
                            "official checkpoints need it set", _STRING),
    "weights": ParameterSpec(DEMO_WEIGHTS, "checkpoint file (.pth or .safetensors); 'demo' is the shipped demo model",
                             _STRING),
    "class_names": ParameterSpec("", "class names file (one per line, or JSON); empty: from the checkpoint, else COCO "
                                 "for 80 classes", _STRING),
    "device": ParameterSpec("auto", "inference device", _STRING, choices=DEVICES),
    "precision": ParameterSpec("fp32", "inference precision (fp16 needs CUDA)", _STRING, choices=PRECISIONS),
    "backend": ParameterSpec("torch", "inference engine: torch, onnxruntime or openvino (CPU; both export the "
                             "model for each padded input size into the export cache; fall back to torch when "
                             "the package is missing)", _STRING,
                             choices=BACKENDS),
    "min_size": ParameterSpec(0, "shorter image side fed to the model; 0: the model's own test size (640 for the "
                              "official presets)", _INTEGER, range=(0, 4096)),
    "max_size": ParameterSpec(0, "longest image side fed to the model; 0: the model's own test size (853 for the "
                              "official presets)", _INTEGER, range=(0, 8192)),
    "score_threshold": ParameterSpec(SCORE_THRESHOLD, "minimum instance score (run-time)", _DOUBLE, range=(0.0, 1.0),
                                     runtime=True),
    "mask_threshold": ParameterSpec(MASK_THRESHOLD, "mask probability threshold (run-time)", _DOUBLE,
                                    range=(0.0, 1.0), runtime=True),
    # Names (strings) or ids (integers), hence dynamically typed and checked by `class_filter_error`. An empty
    # list has no type in ROS parameters (YAML `[]` reads as unset, the ros2 CLI sends an empty bool array):
    # unset or any empty array means all classes.
    "classes": ParameterSpec(None, "class filter: a list of names or of integer ids; empty publishes all classes "
                             "(run-time)", ParameterType.PARAMETER_STRING_ARRAY, runtime=True, dynamic_typing=True),
    "max_instances": ParameterSpec(MAX_INSTANCES, "at most this many instances per image, best scores first",
                                   _INTEGER, range=(1, MAX_LABEL)),
    "publish_overlay": ParameterSpec(True, "publish ~/overlay (drawn only while someone subscribes)", _BOOL),
    # Like `classes`, an empty list is unset: the one camera on the topic `image`.
    "image_topics": ParameterSpec(None, "image topics of several cameras, batched into one inference per cycle; "
                                  "each camera's outputs go to ~/<its topic's namespace>/detections, ... (see "
                                  "sparseinst_ros.cameras); empty: the one topic image",
                                  ParameterType.PARAMETER_STRING_ARRAY, dynamic_typing=True),
    "compressed_input": ParameterSpec(False, "subscribe to <image>/compressed (JPEG/PNG) instead of image", _BOOL),
    "max_input_pixels": ParameterSpec(MAX_INPUT_PIXELS, "larger images (width x height, raw or compressed) are "
                                      "refused before decoding", _INTEGER, range=(1, 2**31 - 1)),
    "input_qos": ParameterSpec("sensor_data", "QoS of the image and camera_info subscriptions", _STRING,
                               choices=tuple(INPUT_QOS)),
    "drop_frames": ParameterSpec(True, "process the latest frame only (live cameras: results never lag); false: "
                                 "every frame in arrival order from a queue of queue_size (replaying a recording)",
                                 _BOOL),
    "queue_size": ParameterSpec(30, "frames waiting for the model with drop_frames false; when full the oldest is "
                                "dropped (counted in /diagnostics)", _INTEGER, range=(1, 10000)),
    "tracking": ParameterSpec(True, "detection ids are persistent track ids (mask IoU, class, motion; 3D with depth); "
                              "false: ids 1..N by score in each frame", _BOOL),
    "track_min_hits": ParameterSpec(3, "observations before a track is confirmed (every instance gets its track's id "
                                    "from the first one)", _INTEGER, range=(1, 1000)),
    "track_max_age": ParameterSpec(30, "a track survives this many frames of the camera unseen (seconds: frames x "
                                   "the camera's frame interval, measured on every arriving frame, so frames the "
                                   "node skips do not shorten it)", _INTEGER, range=(1, 100000)),
    "depth": ParameterSpec(False, "subscribe to depth/image (16UC1 mm or 32FC1 m, registered to the image) and "
                           "depth/camera_info; publish ~/detections_3d, ~/points and ~/markers", _BOOL),
    "depth_slop": ParameterSpec(0.05, "seconds: a depth image pairs with the colour image of the same stamp, else "
                                "with the nearest one within this", _DOUBLE, range=(0.0, 10.0)),
    "max_points_per_instance": ParameterSpec(2000, "points of each instance in ~/points, spread over it", _INTEGER,
                                             range=(1, 10**7)),
    "diagnostics_period": ParameterSpec(1.0, "seconds between /diagnostics reports", _DOUBLE, range=(0.05, 60.0)),
    "input_timeout": ParameterSpec(5.0, "warn when no image arrived for this many seconds while the topic has "
                                   "publishers", _DOUBLE, range=(0.5, 3600.0)),
}
RUNTIME_PARAMETERS = tuple(name for name, spec in PARAMETERS.items() if spec.runtime)


_ARRAYS = (Parameter.Type.BOOL_ARRAY, Parameter.Type.INTEGER_ARRAY, Parameter.Type.DOUBLE_ARRAY,
           Parameter.Type.STRING_ARRAY, Parameter.Type.BYTE_ARRAY)


def class_filter_error(parameter: Parameter) -> str | None:
    """Why a value of the `classes` parameter is not a class filter; None when it is one (an empty array of
    any type clears the filter)."""
    if parameter.type_ in (Parameter.Type.NOT_SET, Parameter.Type.STRING_ARRAY, Parameter.Type.INTEGER_ARRAY):
        return None
    if parameter.type_ in _ARRAYS and len(parameter.value) == 0:
        return None
    return (f"parameter 'classes' must be a list of class names or of integer ids (empty for all), got "
            f"{parameter.type_.name.lower()} {parameter.value!r}")


def image_topics_parameter_error(parameter: Parameter) -> str | None:
    """Why a value of the `image_topics` parameter names no cameras (see `cameras.image_topics_error`); None when
    it does (an empty array of any type is the one topic `image`)."""
    if parameter.type_ == Parameter.Type.NOT_SET or (parameter.type_ in _ARRAYS and len(parameter.value) == 0):
        return None
    if parameter.type_ != Parameter.Type.STRING_ARRAY:
        return (f"parameter 'image_topics' must be a list of topic names (empty for the one topic image), got "
                f"{parameter.type_.name.lower()} {parameter.value!r}")
    return image_topics_error(list(parameter.value))


def value_error(parameter: Parameter) -> str | None:
    """Why a value does not fit its parameter's type and range (what rclpy refuses when the node declares it,
    checked here for the offline tools that read the node's parameters file); None when it fits."""
    spec = PARAMETERS[parameter.name]
    if parameter.name == "classes":
        return class_filter_error(parameter)
    if parameter.name == "image_topics":
        return image_topics_parameter_error(parameter)
    if parameter.type_.value != spec.type:
        return (f"parameter {parameter.name!r} must be of type {_TYPE_NAMES[spec.type]}, got "
                f"{parameter.type_.name.lower()} {parameter.value!r}")
    if spec.range and not spec.range[0] <= parameter.value <= spec.range[1]:
        return f"parameter {parameter.name!r} is {parameter.value!r}; expected {spec.range[0]}..{spec.range[1]}"
    return None


def start_up_error(parameters: Iterable[Parameter]) -> str | None:
    """Why the declared values cannot start the node; None when they can."""
    for parameter in parameters:
        choices = PARAMETERS[parameter.name].choices
        if value_error(parameter):
            return value_error(parameter)
        if choices and parameter.value not in choices:
            return f"parameter {parameter.name!r} is {parameter.value!r}; expected one of {', '.join(choices)}"
    return None


def declare_parameters(node) -> None:
    """Declare every parameter on `node` (an rclpy node); a ValueError names a value that cannot start it."""
    for name, spec in PARAMETERS.items():
        node.declare_parameter(name, spec.default, spec.descriptor())
    error = start_up_error(node.get_parameters(list(PARAMETERS)))
    if error:
        raise ValueError(error)


def change_error(parameters: Iterable[Parameter], model_loaded: bool) -> str | None:
    """Why a set of parameter changes is refused; None when it is accepted. Thresholds and the class filter
    change at run time; the rest needs a new model. Deleting a parameter (`ros2 param delete`: a value of type
    NOT_SET) is refused: the node reads every one of its parameters."""
    changes = {p.name: p for p in parameters}
    deleted = sorted(name for name, p in changes.items() if p.type_ == Parameter.Type.NOT_SET)
    if deleted:
        hint = "; to publish all classes, set classes to []" if "classes" in deleted else ""
        return f"{', '.join(deleted)} cannot be deleted: the node needs a value for each of its parameters{hint}"
    if "classes" in changes and class_filter_error(changes["classes"]):
        return class_filter_error(changes["classes"])
    if "image_topics" in changes and image_topics_parameter_error(changes["image_topics"]):
        return image_topics_parameter_error(changes["image_topics"])
    static = sorted(set(changes) - set(RUNTIME_PARAMETERS))
    if static and model_loaded:
        return (f"{', '.join(static)} cannot change while the model is loaded; only {', '.join(RUNTIME_PARAMETERS)} "
                f"change at run time (restart the node, or clean up and reconfigure the lifecycle node)")
    for name, parameter in changes.items():
        choices = PARAMETERS[name].choices if name in PARAMETERS else ()
        if choices and parameter.value not in choices:
            return f"{name} must be one of {', '.join(choices)}, got {parameter.value!r}"
    return None


def input_qos(name: str, drop_frames: bool, queue_size: int) -> QoSProfile:
    """The QoS of the image subscription: the profile `name`; when every frame counts (`drop_frames` false),
    its history holds `queue_size` samples, as many as the frame queue."""
    profile = INPUT_QOS[name]
    if drop_frames:
        return profile
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=max(profile.depth, queue_size),
                      reliability=profile.reliability, durability=profile.durability)


def loader_arguments(values: Mapping[str, object]) -> dict:
    """Parameter values (name -> value) -> the keyword arguments of `sparseinst_core.inference.load_predictor`."""
    return dict(weights=values["weights"], preset=None if values["preset"] == AUTO_PRESET else values["preset"],
                class_names_file=values["class_names"] or None, min_size=values["min_size"],
                max_size=values["max_size"], score_threshold=values["score_threshold"],
                mask_threshold=values["mask_threshold"], device=values["device"], precision=values["precision"],
                backend=values["backend"],
                fallback="torch" if values["backend"] != "torch" else None)   # no onnxruntime: run on torch
