"""The SparseInst ROS 2 node: camera images in, instances out, never behind the camera.

`SparseInstPipeline` adapts the library to ROS: it declares the parameters (`parameters`), creates the
publishers and subscriptions of its `cameras`, a service and a timer, converts messages (`conversions`,
`detections`), runs the model in a `frame_loop.FrameLoop` on the latest frame of each camera, in one batch
(or, with `drop_frames: false`, on every frame from a bounded queue, for replayed recordings), and reports
`health`. `SparseInstNode` (plain, everything at start-up) and
`sparseinst_ros.lifecycle_node.SparseInstLifecycleNode` (managed) only decide *when* its steps run: load the
model, open the outputs, open the inputs, and undo each.
"""
from __future__ import annotations

import sys
from functools import partial

import torch
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import SetBool

from sparseinst_core.inference import LoadedPredictor, load_predictor

from . import spinning
from .cameras import cameras_of, diagnostic_values
from .conversions import ImageConversionError, check_message
from .detections import resolve_class_filter
from .failures import StartUpError, model_load_failure
from .frame_loop import FrameLoop, ProcessTiming, pending_frames
from .frame_processor import FrameProcessor, processor_from_parameters
from .health import NodeGraph, Troubleshooting, diagnostic_status
from .memory import release_free_memory
from .node_outputs import NodeOutputs
from .parameters import (INPUT_QOS, NODE_NAME, PARAMETERS, change_error, declare_parameters, input_qos,
                         loader_arguments)
from .transport import ReceiveBuffers, SequenceGapCounter


def _age_ms(node: Node, stamp) -> float | None:
    """Milliseconds from a header stamp to now on the node's clock, which follows `use_sim_time` (so replayed
    stamps age by the replay's /clock); None for an unset stamp or while sim time has not started."""
    stamp_ns = stamp.sec * 10**9 + stamp.nanosec
    now_ns = node.get_clock().now().nanoseconds
    return (now_ns - stamp_ns) / 1e6 if stamp_ns and now_ns else None


class SparseInstPipeline:
    """Parameters, model, subscriptions, frame loop and publishers of one node.

    `node` is a `Node` or a `LifecycleNode`; `create_publisher`/`destroy_publisher` are its (lifecycle)
    publisher factory and its inverse. `on_image`, `on_enable` and `on_set_parameters` are
    the ROS callbacks.
    """

    def __init__(self, node: Node, create_publisher, destroy_publisher):
        self.node = node
        self.logger = node.get_logger()
        self.model: LoadedPredictor | None = None
        self.processor: FrameProcessor | None = None
        self.hints = Troubleshooting(self.logger, NodeGraph(node))
        self.sequence_gaps = SequenceGapCounter()
        self.receive_buffers = ReceiveBuffers()
        self.heap_to_trim = False
        self.publishers = NodeOutputs(node, create_publisher, destroy_publisher)
        self.subscriptions: list = []
        self.timers: list = []
        self.enable_service = None
        declare_parameters(node)
        self.cameras = cameras_of(self.param("image_topics"))
        self.loop = FrameLoop(self._process, self._on_process_error, name="sparseinst_inference")
        node.add_on_set_parameters_callback(self.on_set_parameters)

    def param(self, name: str):
        return self.node.get_parameter(name).value

    @property
    def enabled(self) -> bool:
        return not self.loop.paused

    def on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        """Thresholds and the class filter change at run time; the rest needs a new model."""
        reason = change_error(parameters, model_loaded=self.model is not None)
        if reason:
            return SetParametersResult(successful=False, reason=reason)
        changes = {p.name: p.value for p in parameters}
        if "classes" in changes and self.model is not None:
            try:
                self.processor.allowed_classes = resolve_class_filter(changes["classes"] or [], self.model.class_names)
            except ValueError as error:
                return SetParametersResult(successful=False, reason=str(error))
        if self.model is not None:
            for name in ("score_threshold", "mask_threshold"):
                if name in changes:
                    setattr(self.model.predictor, name, float(changes[name]))
            if {"classes", "score_threshold"} & set(changes):
                self.publish_label_info()
        return SetParametersResult(successful=True)

    def publish_label_info(self) -> None:
        if self.model is not None and self.publishers:                 # loaded, outputs open
            self.publishers.publish_label_info(self.model.class_names, self.processor.allowed_classes,
                                               self.model.predictor.score_threshold)

    # ------------------------------------------------------------------------------------------ life cycle
    def load_model(self) -> None:
        """Load the weights named by the parameters; a `StartUpError` names the file or parameter and the cause."""
        values = {name: self.param(name) for name in PARAMETERS}
        arguments = loader_arguments(values)
        try:
            model = load_predictor(**arguments)
        except Exception as error:   # a broken or hostile file makes loading raise anything
            failure = model_load_failure(error, arguments["weights"], arguments["class_names_file"])
            raise StartUpError(failure) from error
        try:
            allowed_classes = resolve_class_filter(self.param("classes") or [], model.class_names)
        except ValueError as error:
            raise StartUpError(f"parameter 'classes': {error}") from None
        self.processor = processor_from_parameters(model, allowed_classes, values, every_frame_processed=False)
        self.model = model
        self.logger.info(f"loaded {model.description} on {model.predictor.device} ({model.predictor.precision}), "
                         f"{len(model.class_names)} classes")

    def unload_model(self) -> None:
        """Drop the model (and the GPU memory it cached); a no-op when none is loaded."""
        if self.model is None:
            return
        self.model = self.processor = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.logger.info("unloaded the model")

    def open_outputs(self) -> None:
        self.cameras = cameras_of(self.param("image_topics"))
        self.publishers.open(self.cameras, overlay=self.param("publish_overlay"), depth=self.param("depth"))
        self.publish_label_info()
        self.enable_service = self.node.create_service(SetBool, "~/enable", self.on_enable)

    def close_outputs(self) -> None:
        self.publishers.close()
        if self.enable_service is not None:
            self.node.destroy_service(self.enable_service)
            self.enable_service = None

    def open_inputs(self) -> None:
        """Subscribe to each camera's image (or its compressed transport), then the sibling camera_infos and,
        with `depth`, the depth inputs; start inference."""
        self.loop.use_pending(pending_frames(self.param("drop_frames"), self.param("queue_size"), len(self.cameras)))
        self.subscriptions = [self._subscribe_image(index) for index in range(len(self.cameras))]
        self.hints.open([s.topic_name for s in self.subscriptions], self.param("input_qos"), self.param("input_timeout"))
        qos = INPUT_QOS[self.param("input_qos")]
        self.subscriptions += [camera.subscribe_camera_info(self.node, qos) for camera in self.cameras]
        for camera in self.cameras:
            camera.depth = None
            if self.param("depth"):
                self.subscriptions += camera.subscribe_depth(self.node, qos, self.param("depth_slop"))
        self.sequence_gaps.forget_publishers()
        self.loop.start()
        # Rates and durations are this machine's work: wall-clock periods, also under sim time (and while a replay
        # is paused); ages (stamp to now) use the node's clock.
        self.timers.append(self.node.create_timer(self.param("diagnostics_period"), self.report,
                                                  clock=Clock(clock_type=ClockType.STEADY_TIME)))
        self.logger.info(f"listening on {self.hints.image_topic} ({self.param('input_qos')} QoS)")

    def _subscribe_image(self, camera: int = 0):
        qos = input_qos(self.param("input_qos"), self.param("drop_frames"), self.param("queue_size"))
        return self.cameras[camera].subscribe_image(self.node, partial(self.on_image, camera=camera), qos,
                                                    self.param("compressed_input"))

    def close_inputs(self) -> None:
        """Stop receiving and let the inference thread finish its current frame."""
        for subscription in self.subscriptions:
            self.node.destroy_subscription(subscription)
        for timer in self.timers:
            self.node.destroy_timer(timer)
        self.subscriptions, self.timers = [], []
        self.loop.stop()

    # ------------------------------------------------------------------------------------------- callbacks
    def on_image(self, msg: Image | CompressedImage, info, camera: int = 0) -> None:
        """Count, check the header (cheap), and make the frame its camera's pending one; no pixel work here."""
        self.cameras[camera].arrived()
        if not self.loop.count_arrival(_age_ms(self.node, msg.header.stamp), self.sequence_gaps.add(info)):
            return                                           # paused
        # Malformed frames are counted here, not in the inference thread: under load most frames are
        # replaced before inference, and a bad one must not hide among the dropped.
        try:
            check_message(msg, self.param("max_input_pixels"))
        except ImageConversionError as error:
            self.count_bad_input(error.cause, str(error))
            self.cameras[camera].bad_inputs += 1
            if self.receive_buffers.refused(len(msg.data)) and self.subscriptions:
                # the middleware lets go of the buffer it grew for this message with the old subscription
                self.node.destroy_subscription(self.subscriptions[camera])
                self.subscriptions[camera] = self._subscribe_image(camera)
                self.heap_to_trim = True
            return
        self.receive_buffers.accepted(len(msg.data))
        self.hints.frame_received(len(msg.data))
        if self.processor is not None and self.processor.tracking is not None:   # the camera's frame interval
            stamp = msg.header.stamp
            self.processor.tracking.arrived(msg.header.frame_id, stamp.sec + 1e-9 * stamp.nanosec)
        self.cameras[camera].dropped += self.loop.submit((camera, msg))

    def on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        if request.data:
            self.loop.resume()
        else:
            self.loop.pause()
        response.success = True
        response.message = "inference enabled" if self.enabled else "inference paused"
        self.logger.info(response.message)
        return response

    def count_bad_input(self, cause: str, message: str) -> None:
        self.hints.bad_input(cause, message, self.loop.statistics.count_bad_input(cause))

    def _note_size(self, camera, height: int, width: int) -> None:
        """A processed frame whose size differs from its camera's previous one: counted and said (not bad input)."""
        change = camera.size_change(height, width)
        if change:
            self.hints.size_changed(change, self.loop.statistics.count_size_change())
            self.heap_to_trim = True

    # ------------------------------------------------------------------------------------------- inference
    def _process(self, frames: list) -> ProcessTiming:
        """One cycle's (camera index, message) pairs, at most one per camera, as one predictor batch."""
        cameras, msgs = [self.cameras[index] for index, _ in frames], [msg for _, msg in frames]
        depths = [camera.depth and camera.depth.paired(msg.header) for camera, msg in zip(cameras, msgs)]
        outputs = self.processor(msgs, [camera.camera_info.match(msg.header) for camera, msg in zip(cameras, msgs)],
                                 overlay=[camera.overlay_wanted for camera in cameras],
                                 depths=depths if self.param("depth") else None)
        for camera, output in zip(cameras, outputs):
            self._note_size(camera, *output.image_size)
            if output.depth_problem is not None:
                self.loop.statistics.count_depth_problem(output.depth_problem.cause)
                self.hints.depth_problem(output.depth_problem.cause, str(output.depth_problem))
            self.loop.statistics.count_without_3d(output.num_without_3d)
            camera.publish(output.messages)
        ages = [age for msg in msgs if (age := _age_ms(self.node, msg.header.stamp)) is not None]
        return ProcessTiming(outputs[0].timings_ms["inference"], max(ages, default=None))

    def _on_process_error(self, error: Exception) -> None:
        if isinstance(error, ImageConversionError):
            self.count_bad_input(error.cause, str(error))
        elif self.node.context.ok():                         # shutting down: publishers are gone, not a frame's fault
            self.count_bad_input("inference_error", f"{type(error).__name__}: {error}")

    # ----------------------------------------------------------------------------------------- diagnostics
    def report(self) -> None:
        """The diagnostics timer: hints for the period, then the status on /diagnostics."""
        if self.heap_to_trim:              # once after frames of another size or an oversize message: see `memory`
            self.heap_to_trim = False
            release_free_memory()
        stats = self.loop.snapshot()
        topics = list(zip(self.hints.image_topics, self.cameras))       # each camera's (resolved) image topic
        self.hints.review(stats, {topic: camera.camera_info.received for topic, camera in topics if camera.processed},
                          {topic: camera.last_received for topic, camera in topics})
        model = self.model
        status = diagnostic_status(
            stats, name=f"{self.node.get_fully_qualified_name()}: inference", image_topic=self.hints.image_topic,
            enabled=self.enabled, input_silent=self.hints.input_silent, silent_topics=self.hints.silent_text,
            device=str(model.predictor.device) if model else "", precision=model.predictor.precision if model else "",
            model=model.description if model else "", cameras=diagnostic_values(self.cameras, stats.period_s))
        array_msg = DiagnosticArray(status=[status])
        array_msg.header.stamp = self.node.get_clock().now().to_msg()
        self.publishers.publish({"diagnostics": array_msg})


class SparseInstNode(Node):
    """The plain node: loads the model and starts at construction; a weights error raises."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
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
    return spinning.run(node_factory, NODE_NAME)


def main() -> None:
    sys.exit(run(SparseInstNode))


if __name__ == "__main__":
    main()
