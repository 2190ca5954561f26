"""Generated RGB-D sequences with ground truth: shapes moving in 3D in front of a wall, seen by a pinhole camera.

Each object is a flat shape of the synthetic dataset (`synthetic.shape_mask`, coloured in its class's hue band
as in DEMO_STYLE, so the shipped demo model detects it) on a plane tilted a little away from the camera. It
moves at constant velocity in 3D, turns now and then, bounces off the edges of the view and of its depth
range (0.5-4 m), spins slowly in its plane, and crosses and hides the others; behind everything is a textured
wall at `background_distance`. Objects are sized so that they span 15-45% of the image's shorter side, the
sizes the demo model was trained on.

Every frame is ray-cast with a z-buffer: the colour image (RGB, uint8) with the colour camera's intrinsics,
and the depth image (`16UC1`, millimetres, registered to the colour camera: same optical centre and axes,
its own resolution and intrinsics) with the depth camera's. Depth is degraded like a stereo camera's: noise
of standard deviation `depth_noise` x z^2, correlated over a few pixels, plus a smooth error field of
`depth_wobble` x z^2 that does not average out over an object; flying pixels (depths between the
two sides) and dropouts (0) along depth edges; random blobs of holes; 16-bit millimetre quantisation.

Ground truth per frame and object: track id (1-based object index), class, the visible mask (a crop in colour
pixels), the fraction of the object left visible, and the 3D centroid of its *visible surface*: the mean of
the exact (noise-free) 3D points of its visible colour pixels, metres, camera optical frame. That is what a
depth camera can measure (`scene.geometry` estimates the same quantity); the object's own centre, behind
the visible part when it is partly hidden, is given too.

Deterministic for a seed: the trajectories are simulated up front, each frame's noise has its own generator.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .synthetic import (
    ELLIPSE_ASPECTS, MIN_COLOUR_DISTANCE, SYNTHETIC_CLASSES, add_sensor_noise, render_background, shape_colour,
    shape_mask,
)

TEXTURE_SIZE = 256             # pixels of the texture a shape is drawn on, in its own plane
MIN_DEPTH, MAX_DEPTH = 0.5, 4.0
MIN_VISIBLE_PIXELS = 20        # objects with fewer visible colour pixels are not in the ground truth
SHADING = 0.075                # brightness +- this from the top to the bottom of a shape, as synthetic._paint


@dataclass(frozen=True)
class RgbdSequenceConfig:
    """What a sequence looks like. Sizes are (width, height) in pixels, times in seconds, lengths in metres."""

    num_frames: int = 150
    frame_rate: float = 30.0
    colour_size: tuple[int, int] = (640, 480)
    depth_size: tuple[int, int] = (640, 480)
    focal_length: float = 525.0                              # colour pixels; the depth camera has the same view
    num_objects: tuple[int, int] = (4, 7)                    # range, inclusive
    distinct_classes: bool = False                           # every object of its own class (at most 6)
    object_depths: tuple[float, float] = (0.6, 3.6)          # each object's home depth; it moves within x0.8-1.25
    object_sizes: tuple[float, float] = (0.18, 0.36)         # diameter at home depth / shorter image side
    image_speeds: tuple[float, float] = (60.0, 200.0)        # colour pixels per second at home depth
    depth_speed: float = 0.15                                # max |dz/dt| per metre of home depth, per second
    spin: float = 0.5                                        # max in-plane turn rate, radians per second
    max_tilt: tuple[float, float] = (0.5, 0.25)              # max yaw, pitch of the planes, radians
    turn_rate: float = 0.25                                  # random turns per second
    background_distance: float = 4.5
    depth_noise: float = 0.004                               # per-pixel sigma = depth_noise * z^2, per metre
    depth_wobble: float = 0.001                              # sigma of a smooth error field (~80 px), * z^2
    flying_pixel_probability: float = 0.3                    # per depth-edge pixel
    edge_dropout_probability: float = 0.3                    # per depth-edge pixel
    hole_blobs: float = 3.0                                  # mean number of hole blobs per frame
    pixel_dropout: float = 0.005                             # isolated invalid pixels

    def __post_init__(self):
        if self.num_frames < 1 or self.frame_rate <= 0:
            raise ValueError("need num_frames >= 1 and frame_rate > 0")
        if min(*self.colour_size, *self.depth_size) < 32:
            raise ValueError(f"images must be at least 32x32, got {self.colour_size} and {self.depth_size}")
        if not MIN_DEPTH <= self.object_depths[0] <= self.object_depths[1] <= MAX_DEPTH:
            raise ValueError(f"object_depths must lie in [{MIN_DEPTH:g}, {MAX_DEPTH:g}] m")
        if self.background_distance <= MAX_DEPTH:
            raise ValueError(f"the wall must be behind the objects (> {MAX_DEPTH} m)")
        if not 1 <= self.num_objects[0] <= self.num_objects[1]:
            raise ValueError(f"num_objects must be a range 1 <= low <= high, got {self.num_objects}")
        if self.distinct_classes and self.num_objects[1] > len(SYNTHETIC_CLASSES):
            raise ValueError(f"distinct_classes allows at most {len(SYNTHETIC_CLASSES)} objects")


@dataclass(frozen=True)
class GroundTruthObject:
    """One object as seen in one frame."""

    track_id: int               # 1-based, the same in every frame
    class_id: int               # index into SYNTHETIC_CLASSES
    mask: np.ndarray            # (h, w) bool visible pixels, the crop of the colour image at mask_offset
    mask_offset: tuple[int, int]  # (x, y) colour pixel of mask[0, 0]
    visible_fraction: float     # visible pixels / pixels it would cover alone
    centroid: np.ndarray        # (3,) metres: mean of the exact 3D points of its visible pixels
    centre: np.ndarray          # (3,) metres: the centre of the shape's plane


@dataclass(frozen=True)
class RgbdFrame:
    index: int
    stamp: float                # seconds
    colour: np.ndarray          # (H, W, 3) uint8 RGB
    depth: np.ndarray           # (H_d, W_d) uint16 millimetres, 0 invalid
    objects: list[GroundTruthObject]


@dataclass(frozen=True)
class _Shape:
    label: int
    radius: float               # metres, centre to outer vertex
    home_depth: float           # metres: it moves within x0.8-1.25 of this depth (inside 0.5-4 m)
    texture: np.ndarray         # (S, S) bool: the shape in its plane, [-radius, radius]^2
    colour: np.ndarray          # (3,) float RGB
    axes: np.ndarray            # (3, 3) columns: in-plane x, in-plane y, normal (towards the camera)
    spin_phase: float
    spin_rate: float


class RgbdSequence:
    """A generated sequence: `len(sequence)` frames, `sequence[i]` renders frame i (an `RgbdFrame`).

    colour_k, depth_k: (3, 3) intrinsics of the colour and depth images (as CameraInfo.k), the depth camera
    looking through the same optical centre as the colour one.
    """

    def __init__(self, config: RgbdSequenceConfig = RgbdSequenceConfig(), seed: int = 0):
        self.config = config
        self.seed = seed
        rng = np.random.default_rng([seed, 0])
        width, height = config.colour_size
        self.colour_k = np.array([[config.focal_length, 0, (width - 1) / 2],
                                  [0, config.focal_length, (height - 1) / 2], [0, 0, 1]])
        # The same field of view at the depth resolution; pixel centres sit at integers in both images.
        scale = np.array([config.depth_size[0] / width, config.depth_size[1] / height])
        self.depth_k = np.array([[config.focal_length * scale[0], 0, (self.colour_k[0, 2] + 0.5) * scale[0] - 0.5],
                                 [0, config.focal_length * scale[1], (self.colour_k[1, 2] + 0.5) * scale[1] - 0.5],
                                 [0, 0, 1]])
        self.background = render_background(rng, height, width)
        background_colour = self.background.reshape(-1, 3).mean(axis=0)
        count = int(rng.integers(config.num_objects[0], config.num_objects[1] + 1))
        labels = (rng.permutation(len(SYNTHETIC_CLASSES))[:count] if config.distinct_classes
                  else rng.integers(len(SYNTHETIC_CLASSES), size=count))
        self.shapes = [self._new_shape(rng, int(label), background_colour) for label in labels]
        self.positions = np.stack([self._trajectory(rng, shape) for shape in self.shapes], axis=1)   # (F, N, 3)

    def __len__(self) -> int:
        return self.config.num_frames

    def __getitem__(self, index: int) -> RgbdFrame:
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} of a {len(self)}-frame sequence")
        config = self.config
        stamp = index / config.frame_rate
        rng = np.random.default_rng([self.seed, 1, index])
        planes = [self._plane(shape, self.positions[index, k], stamp) for k, shape in enumerate(self.shapes)]

        width, height = config.colour_size
        owner, z, shading, alone = _ray_cast(planes, self.colour_k, width, height, config.background_distance)
        colour = self.background.astype(np.float32)
        for k, shape in enumerate(self.shapes):
            mine = owner == k
            colour[mine] = shape.colour[None] * shading[mine][:, None]
        colour = add_sensor_noise(rng, np.clip(colour, 0, 255).astype(np.uint8))
        objects = self._ground_truth(owner, z, alone, planes)

        depth_owner, depth_z, _, _ = _ray_cast(planes, self.depth_k, *config.depth_size, config.background_distance)
        depth = _degrade_depth(rng, depth_z, depth_owner, config)
        return RgbdFrame(index, stamp, colour, depth, objects)

    def _new_shape(self, rng: np.random.Generator, label: int, background_colour: np.ndarray) -> _Shape:
        config = self.config
        home_depth = rng.uniform(*config.object_depths)
        diameter_px = np.exp(rng.uniform(*np.log(config.object_sizes))) * min(config.colour_size)
        radius = diameter_px / 2 * home_depth / config.focal_length
        aspect = rng.uniform(*ELLIPSE_ASPECTS) if SYNTHETIC_CLASSES[label] == "ellipse" else 1.0
        half = (TEXTURE_SIZE - 1) / 2
        texture = shape_mask(TEXTURE_SIZE, TEXTURE_SIZE, label, (half, half), half, 0.0, aspect)
        candidates = [shape_colour(rng, label) for _ in range(20)]
        distances = [float(np.linalg.norm(c - background_colour)) for c in candidates]
        far_enough = [c for c, d in zip(candidates, distances) if d >= MIN_COLOUR_DISTANCE]
        colour = far_enough[0] if far_enough else candidates[int(np.argmax(distances))]
        yaw, pitch = (rng.uniform(-limit, limit) for limit in config.max_tilt)
        axes = _rotation_y(yaw) @ _rotation_x(pitch) @ np.diag([1.0, 1.0, -1.0])   # normal towards the camera
        return _Shape(label, radius, home_depth, texture, colour, axes, rng.uniform(0, 2 * np.pi),
                      rng.uniform(-config.spin, config.spin))

    def _trajectory(self, rng: np.random.Generator, shape: _Shape) -> np.ndarray:
        """(F, 3) centre per frame: constant velocity, random turns, bounces at the view's and depth's edges."""
        config = self.config
        width, height = config.colour_size
        f, cx, cy = config.focal_length, self.colour_k[0, 2], self.colour_k[1, 2]
        home_depth = shape.home_depth
        depth_range = (max(MIN_DEPTH, home_depth * 0.8), min(MAX_DEPTH, home_depth * 1.25))
        margin = 0.06                                      # centre stays this fraction inside the image
        u_range = (margin * width, (1 - margin) * width)
        v_range = (margin * height, (1 - margin) * height)
        u, v = rng.uniform(*u_range), rng.uniform(*v_range)
        z = rng.uniform(*depth_range)
        position = np.array([(u - cx) * z / f, (v - cy) * z / f, z])
        velocity = self._random_velocity(rng, home_depth)
        dt = 1.0 / config.frame_rate
        positions = np.zeros((config.num_frames, 3))
        for index in range(config.num_frames):
            positions[index] = position
            if rng.random() < config.turn_rate * dt:
                velocity = self._random_velocity(rng, home_depth)
            position = position + velocity * dt
            u, v = f * position[0] / position[2] + cx, f * position[1] / position[2] + cy
            if not u_range[0] <= u <= u_range[1]:
                velocity[0] = -velocity[0] if np.sign(velocity[0]) == np.sign(u - width / 2) else velocity[0]
            if not v_range[0] <= v <= v_range[1]:
                velocity[1] = -velocity[1] if np.sign(velocity[1]) == np.sign(v - height / 2) else velocity[1]
            if not depth_range[0] <= position[2] <= depth_range[1]:
                velocity[2] = -abs(velocity[2]) if position[2] > depth_range[1] else abs(velocity[2])
        return positions

    def _random_velocity(self, rng: np.random.Generator, home_depth: float) -> np.ndarray:
        config = self.config
        speed = rng.uniform(*config.image_speeds) * home_depth / config.focal_length   # metres per second
        direction = rng.uniform(0, 2 * np.pi)
        dz = rng.uniform(-config.depth_speed, config.depth_speed) * home_depth
        return np.array([speed * np.cos(direction), speed * np.sin(direction), dz])

    def _plane(self, shape: _Shape, centre: np.ndarray, stamp: float) -> tuple:
        """(centre (3,), in-plane axes (3,) x2 turned by the spin, normal (3,), shape) for the ray caster."""
        angle = shape.spin_phase + shape.spin_rate * stamp
        first, second, normal = shape.axes.T
        turned_first = np.cos(angle) * first + np.sin(angle) * second
        turned_second = -np.sin(angle) * first + np.cos(angle) * second
        return centre, turned_first, turned_second, normal, shape

    def _ground_truth(self, owner: np.ndarray, z: np.ndarray, alone: list[int], planes: list) -> list:
        f, cx, cy = self.colour_k[0, 0], self.colour_k[0, 2], self.colour_k[1, 2]
        objects = []
        for k, shape in enumerate(self.shapes):
            rows, cols = np.nonzero(owner == k)
            if len(rows) < MIN_VISIBLE_PIXELS:
                continue
            depths = z[rows, cols]
            points = np.stack([(cols - cx) * depths / f, (rows - cy) * depths / f, depths], axis=1)
            y0, x0 = rows.min(), cols.min()
            mask = np.zeros((rows.max() - y0 + 1, cols.max() - x0 + 1), bool)
            mask[rows - y0, cols - x0] = True
            objects.append(GroundTruthObject(k + 1, shape.label, mask, (int(x0), int(y0)),
                                             len(rows) / max(alone[k], 1), points.mean(axis=0), planes[k][0].copy()))
        return objects


def _ray_cast(planes: list, k: np.ndarray, width: int, height: int, background_distance: float):
    """Render the planes with a z-buffer for intrinsics k.

    Returns owner (H, W) int (-1: the wall), z (H, W) float64 metres, shading (H, W) float (brightness of the
    owning shape at each pixel), and per plane the number of pixels it would cover alone.
    """
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    owner = np.full((height, width), -1, np.int64)
    z = np.full((height, width), background_distance)
    shading = np.ones((height, width))
    alone = []
    for index, (centre, first, second, normal, shape) in enumerate(planes):
        corners = centre + shape.radius * np.array([a * first + b * second for a in (-1, 1) for b in (-1, 1)])
        us, vs = fx * corners[:, 0] / corners[:, 2] + cx, fy * corners[:, 1] / corners[:, 2] + cy
        u0, u1 = max(int(np.floor(us.min())), 0), min(int(np.ceil(us.max())) + 1, width)
        v0, v1 = max(int(np.floor(vs.min())), 0), min(int(np.ceil(vs.max())) + 1, height)
        if u0 >= u1 or v0 >= v1:
            alone.append(0)
            continue
        ray_x = ((np.arange(u0, u1) - cx) / fx)[None, :]                           # (1, w)
        ray_y = ((np.arange(v0, v1) - cy) / fy)[:, None]                           # (h, 1)
        # Ray t (ray_x, ray_y, 1) meets the plane n.(X - centre) = 0 at t = n.centre / n.ray; z = t.
        depth = float(normal @ centre) / (normal[0] * ray_x + normal[1] * ray_y + normal[2])   # (h, w)
        offset = np.stack([ray_x * depth - centre[0], ray_y * depth - centre[1], depth - centre[2]], axis=-1)
        a, b = offset @ first / shape.radius, offset @ second / shape.radius        # (h, w) in [-1, 1] on it
        texture_col = np.rint((a + 1) / 2 * (TEXTURE_SIZE - 1)).astype(np.int64)
        texture_row = np.rint((b + 1) / 2 * (TEXTURE_SIZE - 1)).astype(np.int64)
        inside = (texture_col >= 0) & (texture_col < TEXTURE_SIZE) & (texture_row >= 0) & (texture_row < TEXTURE_SIZE)
        covered = np.zeros_like(inside)
        covered[inside] = shape.texture[texture_row[inside], texture_col[inside]]
        alone.append(int(np.count_nonzero(covered)))
        window = (slice(v0, v1), slice(u0, u1))
        nearer = covered & (depth < z[window])
        owner[window][nearer] = index
        z[window][nearer] = depth[nearer]
        shading[window][nearer] = 1.0 + SHADING * b[nearer]
    return owner, z, shading, alone


def _degrade_depth(rng: np.random.Generator, z: np.ndarray, owner: np.ndarray, config: RgbdSequenceConfig
                   ) -> np.ndarray:
    """Exact depth (H, W) metres -> a stereo camera's 16UC1 millimetres (see the module docstring)."""
    height, width = z.shape
    white = rng.standard_normal((height, width)).astype(np.float32)
    correlated = cv2.GaussianBlur(white, (0, 0), 1.5)             # stereo matching windows: a few pixels
    correlated /= max(float(correlated.std()), 1e-6)
    cells = rng.standard_normal((max(height // 80, 2), max(width // 80, 2))).astype(np.float32)
    wobble = cv2.resize(cells, (width, height), interpolation=cv2.INTER_CUBIC)   # does not average out
    wobble /= max(float(wobble.std()), 1e-6)
    noisy = z + z ** 2 * (config.depth_noise * correlated + config.depth_wobble * wobble)

    # Depth edges: a pixel whose 3x3 neighbourhood spans another surface more than 5 cm away.
    near = cv2.erode(z.astype(np.float32), np.ones((3, 3), np.uint8))
    far = cv2.dilate(z.astype(np.float32), np.ones((3, 3), np.uint8))
    owners_differ = (cv2.dilate(owner.astype(np.float32), np.ones((3, 3), np.uint8))
                     != cv2.erode(owner.astype(np.float32), np.ones((3, 3), np.uint8)))
    edge = owners_differ & (far - near > 0.05)
    draw = rng.random((height, width))
    flying = edge & (draw < config.flying_pixel_probability)
    noisy[flying] = near[flying] + rng.random(int(flying.sum())) * (far[flying] - near[flying])
    invalid = edge & (draw >= 1 - config.edge_dropout_probability)
    invalid |= rng.random((height, width)) < config.pixel_dropout
    holes = np.zeros((height, width), np.uint8)
    scale = min(height, width) / 480
    for _ in range(int(rng.poisson(config.hole_blobs))):
        centre = (int(rng.integers(width)), int(rng.integers(height)))
        axes = tuple(int(a) for a in rng.uniform(3, 25, size=2) * scale + 1)
        cv2.ellipse(holes, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, thickness=-1)
    invalid |= holes.astype(bool)
    millimetres = np.clip(np.rint(noisy * 1000.0), 0, np.iinfo(np.uint16).max).astype(np.uint16)
    millimetres[invalid] = 0
    return millimetres


def _rotation_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rotation_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
