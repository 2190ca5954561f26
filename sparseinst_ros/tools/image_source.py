"""Image source node: publishes a video file, a folder of images, a webcam or generated scenes at a rate.

    image_source --ros-args -p source:=generated -p rate:=30.0 -p frame_id:=camera_optical_frame
    image_source --ros-args -p source:=generated_rgbd -p ground_truth:=/tmp/ground_truth.jsonl

Publishes `image` (sensor_msgs/Image), optionally `image/compressed` (JPEG), and `camera_info` (a pinhole
model with the horizontal field of view `fov_deg`), all with the same header, with sensor-data QoS.
`generated_rgbd`: a generated RGB-D sequence (`sparseinst_core.data.rgbd_sequences`: moving, crossing shapes at
0.5-4 m in front of a wall) replayed in a loop, with its own intrinsics on `camera_info`, and a registered depth
image (16UC1 millimetres, half the colour resolution) on `depth/image` with `depth/camera_info`, all with the
same header; the ground truth of each published frame (stamp, and per object track id, class and 3D centroid
in metres) goes as a JSON line to the file `ground_truth`, when set.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np
import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ..conversions import numpy_to_image, rgb_to_compressed
from ..spinning import spin_until_shutdown

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


class GeneratedScenes:
    """Scenes of coloured shapes from the synthetic generator, rendered once and replayed in a loop
    (rendering one takes longer than a frame period at camera sizes)."""

    def __init__(self, height: int, width: int, count: int, seed: int):
        from sparseinst_core.data.synthetic import DEMO_STYLE, render_scene
        rng = np.random.default_rng(seed)
        self.scenes = [render_scene(rng, height, width, **DEMO_STYLE)[0] for _ in range(count)]
        self.index = 0

    def read(self) -> np.ndarray | None:
        scene = self.scenes[self.index % len(self.scenes)]
        self.index += 1
        return scene


class GeneratedRgbd:
    """A generated RGB-D sequence of `count` frames at `rate`, rendered once and replayed in a loop; `frame` is the
    one `read` returned last (its depth and ground truth go out with it)."""

    def __init__(self, height: int, width: int, count: int, seed: int, rate: float):
        from sparseinst_core.data.rgbd_sequences import RgbdSequence, RgbdSequenceConfig
        config = RgbdSequenceConfig(num_frames=count, frame_rate=rate, colour_size=(width, height),
                                    depth_size=(width // 2, height // 2))
        self.sequence = RgbdSequence(config, seed)
        self.frames = [self.sequence[index] for index in range(count)]
        self.index = 0
        self.frame = None

    def read(self) -> np.ndarray:
        self.frame = self.frames[self.index % len(self.frames)]
        self.index += 1
        return self.frame.colour

    def camera_infos(self) -> tuple[CameraInfo, CameraInfo]:
        """The colour and the depth camera_info."""
        (width, height), (depth_width, depth_height) = self.sequence.config.colour_size, self.sequence.config.depth_size
        return (CameraInfo(width=width, height=height, k=self.sequence.colour_k.ravel().tolist()),
                CameraInfo(width=depth_width, height=depth_height, k=self.sequence.depth_k.ravel().tolist()))

    def ground_truth(self, header) -> str:
        """The current frame's objects as one JSON line, keyed by the published stamp."""
        return json.dumps({"stamp": [header.stamp.sec, header.stamp.nanosec], "objects": [
            {"track_id": obj.track_id, "class_id": obj.class_id, "centroid": [round(float(v), 5) for v in obj.centroid],
             "visible_fraction": round(float(obj.visible_fraction), 3)} for obj in self.frame.objects]})


class ImageFolder:
    """Every image file in a folder, in name order."""

    def __init__(self, folder: Path, loop: bool):
        self.paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in folder {folder}")
        self.loop, self.index = loop, 0

    def read(self) -> np.ndarray | None:
        if self.index >= len(self.paths):
            if not self.loop:
                return None
            self.index = 0
        path = self.paths[self.index]
        self.index += 1
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"cannot read image {path}")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class VideoCapture:
    """A video file (looped on request) or a webcam through OpenCV."""

    def __init__(self, target: str | int, loop: bool):
        self.capture = cv2.VideoCapture(target)
        if not self.capture.isOpened():
            raise ValueError(f"OpenCV cannot open {'camera' if isinstance(target, int) else 'video'} {target}")
        self.loop = loop and not isinstance(target, int)

    def read(self) -> np.ndarray | None:
        ok, bgr = self.capture.read()
        if not ok and self.loop:
            self.capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = self.capture.read()
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if ok else None


def open_source(source: str, loop: bool, height: int, width: int, scene_count: int, seed: int, rate: float = 30.0):
    """'generated', 'generated_rgbd', 'camera:N' (webcam N), a folder of images or a video file -> an object with
    read()."""
    if source == "generated":
        return GeneratedScenes(height, width, scene_count, seed)
    if source == "generated_rgbd":
        return GeneratedRgbd(height, width, scene_count, seed, rate)
    if source.startswith("camera:"):
        return VideoCapture(int(source.split(":", 1)[1]), loop)
    path = Path(source).expanduser()
    if path.is_dir():
        return ImageFolder(path, loop)
    if path.is_file():
        return VideoCapture(str(path), loop)
    raise FileNotFoundError(f"image source {source!r} is neither 'generated', 'camera:N', a folder nor a video file")


def pinhole_camera_info(height: int, width: int, fov_deg: float) -> CameraInfo:
    """An ideal pinhole camera (no distortion) with the given horizontal field of view."""
    focal = width / (2.0 * math.tan(math.radians(fov_deg) / 2.0))
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    return CameraInfo(height=height, width=width, distortion_model="plumb_bob", d=[0.0] * 5,
                      k=[focal, 0.0, cx, 0.0, focal, cy, 0.0, 0.0, 1.0],
                      r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                      p=[focal, 0.0, cx, 0.0, 0.0, focal, cy, 0.0, 0.0, 0.0, 1.0, 0.0])


class ImageSourceNode(Node):
    def __init__(self):
        super().__init__("image_source")
        declare = self.declare_parameter
        source = declare("source", "generated", ParameterDescriptor(
            description="'generated' (shapes scenes), 'generated_rgbd' (a moving RGB-D sequence with depth), "
                        "'camera:N' (webcam N), a folder of images or a video file")).value
        rate = declare("rate", 30.0, ParameterDescriptor(
            description="frames per second",
            floating_point_range=[FloatingPointRange(from_value=0.1, to_value=1000.0)])).value
        self.frame_id = declare("frame_id", "camera_optical_frame",
                                ParameterDescriptor(description="header.frame_id of every message")).value
        size_range = [IntegerRange(from_value=32, to_value=8192, step=1)]
        height = declare("height", 480, ParameterDescriptor(description="generated scene height",
                                                             integer_range=size_range)).value
        width = declare("width", 640, ParameterDescriptor(description="generated scene width",
                                                          integer_range=size_range)).value
        scene_count = declare("scene_count", 20, ParameterDescriptor(
                              description="generated scenes (frames of the RGB-D sequence) replayed in a loop",
                              integer_range=[IntegerRange(from_value=1, to_value=1000, step=1)])).value
        seed = declare("seed", 0, ParameterDescriptor(description="seed of the generated scenes")).value
        loop = declare("loop", True, ParameterDescriptor(description="restart a video or folder at its end")).value
        self.encoding = declare("encoding", "rgb8", ParameterDescriptor(
            description="encoding of the published image", additional_constraints="rgb8 or bgr8")).value
        self.compressed = declare("publish_compressed", False, ParameterDescriptor(
            description="also publish image/compressed (JPEG)")).value
        self.max_frames = declare("max_frames", 0, ParameterDescriptor(
            description="stop after this many frames; 0: never")).value
        self.fov_deg = declare("fov_deg", 60.0, ParameterDescriptor(
            description="horizontal field of view of the published camera_info")).value
        ground_truth = declare("ground_truth", "", ParameterDescriptor(
            description="generated_rgbd: file for the ground truth of each published frame (JSON lines)")).value
        if self.encoding not in ("rgb8", "bgr8"):
            raise ValueError(f"parameter 'encoding' must be rgb8 or bgr8, got {self.encoding!r}")

        self.source = open_source(source, loop, height, width, scene_count, seed, rate)
        self.rgbd = self.source if isinstance(self.source, GeneratedRgbd) else None
        if self.rgbd is not None:
            self.depth_pub = self.create_publisher(Image, "depth/image", qos_profile_sensor_data)
            self.depth_info_pub = self.create_publisher(CameraInfo, "depth/camera_info", qos_profile_sensor_data)
        self.ground_truth = open(ground_truth, "w") if ground_truth and self.rgbd is not None else None
        self.image_pub = self.create_publisher(Image, "image", qos_profile_sensor_data)
        self.compressed_pub = (self.create_publisher(CompressedImage, "image/compressed", qos_profile_sensor_data)
                               if self.compressed else None)
        self.info_pub = self.create_publisher(CameraInfo, "camera_info", qos_profile_sensor_data)
        self.published = 0
        self.finished = False
        self.timer = self.create_timer(1.0 / rate, self.publish_next)
        self.get_logger().info(f"publishing {source} at {rate:g} Hz on {self.resolve_topic_name('image')} "
                               f"(frame_id {self.frame_id})")

    def publish_next(self) -> None:
        rgb = self.source.read()
        if rgb is None or (self.max_frames and self.published >= self.max_frames):
            self.get_logger().info(f"source finished after {self.published} frames")
            self.timer.cancel()
            self.finished = True
            return
        header = Image().header
        header.stamp = self.get_clock().now().to_msg()
        header.frame_id = self.frame_id
        pixels = rgb if self.encoding == "rgb8" else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        self.image_pub.publish(numpy_to_image(pixels, self.encoding, header))
        if self.compressed_pub is not None:
            self.compressed_pub.publish(rgb_to_compressed(rgb, "jpeg", header))
        if self.rgbd is None:
            info = pinhole_camera_info(rgb.shape[0], rgb.shape[1], self.fov_deg)
        else:
            info = self._publish_depth(header)
        info.header = header
        self.info_pub.publish(info)
        self.published += 1

    def destroy_node(self):
        if self.ground_truth is not None:
            self.ground_truth.close()
        super().destroy_node()

    def _publish_depth(self, header) -> CameraInfo:
        """The depth image and its camera_info of the frame just read, and its ground truth; the colour camera_info."""
        colour_info, depth_info = self.rgbd.camera_infos()
        depth = numpy_to_image(self.rgbd.frame.depth, "mono16", header)
        depth.encoding = "16UC1"
        depth_info.header = header
        self.depth_pub.publish(depth)
        self.depth_info_pub.publish(depth_info)
        if self.ground_truth is not None:
            self.ground_truth.write(self.rgbd.ground_truth(header) + "\n")
            self.ground_truth.flush()
        return colour_info


def main() -> None:
    rclpy.init(args=sys.argv)
    try:
        node = ImageSourceNode()
    except (FileNotFoundError, ValueError) as error:
        rclpy.logging.get_logger("image_source").fatal(f"start-up failed: {error}")
        rclpy.try_shutdown()
        sys.exit(1)
    try:
        spin_until_shutdown(node, done=lambda: node.finished)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
