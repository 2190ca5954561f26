"""Per-instance 3D from a registered depth image: the instance's points, a robust centroid, an oriented box.

For each instance mask (a crop in colour pixels):

1. The depth pixels whose centres fall inside the mask. Registered depth shares the colour camera's optical
   centre and axes, so depth pixel (u_d, v_d) sees colour pixel K_c K_d^-1 [u_d, v_d, 1]: a depth image of
   another resolution than the colour image is used through the intrinsics of each, never by indexing one
   image with the other's pixel coordinates.
2. The mask eroded by a disc of `edge_erosion_px` depth pixels, or of fewer when that would keep less than
   a quarter of it (a thin object keeps its middle): depth sensors put "flying pixels" between an object and
   what lies behind it along its outline, and masks are a few pixels off at the edges anyway.
3. Valid depths only (NaN is invalid, see `camera.depth_to_metres`), then outliers along the viewing ray
   rejected: |z - median(z)| > `outlier_mads` x 1.4826 MAD (a Gaussian's standard deviation), with a floor
   of `min_outlier_band` metres so that a flat, noise-free surface (MAD 0) keeps its points.
4. The inliers back-projected with the depth camera's intrinsics: metres, camera optical frame (x right,
   y down, z forward).

Centroid: the mean of the inliers. The outliers are already gone, so the mean is robust here, and unlike a
per-axis median it is the centroid of the visible surface even for asymmetric shapes (a triangle's median
point is not its centroid). It is the centroid of the *visible surface* as the depth camera samples it, not of
the solid: the camera cannot see the back of an object.

Oriented box: gravity-aligned for a level camera. Its vertical axis is the camera's y axis (down in the
image); its yaw about that axis comes from PCA of the points' x-z footprint (the major axis, or its
perpendicular, whichever is closer to the camera's x axis, so yaw is in [-45, 45] degrees and does not flip
between frames); its extents are the 1st-99th percentiles of the points along each box axis (both from at
most BOX_POINTS inliers evenly spread over the object). Why not a full 3D PCA box: a grasp planner or an
obstacle layer reasons about footprints on the floor and heights above it, while a full PCA frame tilts with
the noise (depth noise grows with z^2 and lies along the ray) and flips for near-symmetric point sets. With
a tilted camera, transform the points first or read the box as camera-aligned.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from .camera import PinholeCamera
from .masks import InstanceMask

MAD_TO_SIGMA = 1.4826   # a Gaussian's standard deviation per unit of median absolute deviation
MIN_KEPT_AFTER_EROSION = 0.25   # erode less rather than keep less than this fraction of a mask
BOX_POINTS = 500                 # the box's orientation and extents come from this many points at most


@dataclass(frozen=True)
class GeometryOptions:
    """How instances become 3D (see the module docstring)."""

    min_points: int = 30                  # fewer valid inliers: no 3D for the instance
    max_points_per_instance: int = 2000   # points kept for a point cloud output
    edge_erosion_px: int = 2              # depth pixels removed along the mask edge (fewer for thin masks)
    outlier_mads: float = 3.0             # inlier band half-width, in Gaussian sigmas estimated by the MAD
    min_outlier_band: float = 0.01        # metres: the band is never narrower than this
    extent_percentiles: tuple[float, float] = (1.0, 99.0)

    def __post_init__(self):
        if self.min_points < 1 or self.max_points_per_instance < 1:
            raise ValueError("min_points and max_points_per_instance must be at least 1")
        if self.edge_erosion_px < 0 or self.outlier_mads <= 0 or self.min_outlier_band < 0:
            raise ValueError("need edge_erosion_px >= 0, outlier_mads > 0, min_outlier_band >= 0")
        low, high = self.extent_percentiles
        if not 0 <= low < high <= 100:
            raise ValueError(f"extent_percentiles must satisfy 0 <= low < high <= 100, got {self.extent_percentiles}")


@dataclass(frozen=True)
class OrientedBox:
    """A box in the camera optical frame, metres: `centre` (3,), `size` (3,) along its own axes, and `yaw`
    (radians) about the camera's y axis. Its axes are the columns of `rotation`: x' = (cos yaw, 0, -sin yaw),
    y' = (0, 1, 0), z' = (sin yaw, 0, cos yaw); yaw 0 is the camera-aligned box."""

    centre: np.ndarray
    size: np.ndarray
    yaw: float

    @property
    def rotation(self) -> np.ndarray:
        """(3, 3) rotation from box axes to the camera frame (a rotation by `yaw` about y)."""
        return _rotation_about_y(self.yaw)

    @property
    def quaternion(self) -> np.ndarray:
        """(4,) the rotation as a quaternion x, y, z, w (geometry_msgs order)."""
        return np.array([0.0, np.sin(self.yaw / 2), 0.0, np.cos(self.yaw / 2)])


@dataclass(frozen=True)
class Instance3D:
    """One instance in 3D, metres, camera optical frame of the depth image."""

    centroid: np.ndarray   # (3,) float64: mean of the inlier points
    box: OrientedBox
    num_points: int        # inlier points behind the centroid and box
    points: np.ndarray     # (P, 3) float32, P <= max_points_per_instance, evenly spread over the inliers


@dataclass(frozen=True)
class FrameGeometry:
    """The 3D of one frame's instances, in input order; None where an instance has too few valid points."""

    instances: list[Instance3D | None]

    @property
    def num_without_3d(self) -> int:
        return sum(instance is None for instance in self.instances)


def instances_3d(masks: list[InstanceMask], depth: np.ndarray, depth_camera: PinholeCamera,
                 colour_camera: PinholeCamera, options: GeometryOptions = GeometryOptions()) -> FrameGeometry:
    """The 3D of each instance mask (crops in colour pixels of `colour_camera`'s image).

    depth: (H_d, W_d) float32 metres with NaN where invalid (`camera.depth_to_metres`), registered to the
    colour camera, of `depth_camera`'s size (ValueError otherwise).
    """
    depth_camera.check_image(depth, "the depth image")
    return FrameGeometry(_instances_3d(masks, depth, depth_camera, colour_camera, options))


def instance_3d(mask: InstanceMask, depth: np.ndarray, depth_camera: PinholeCamera, colour_camera: PinholeCamera,
                options: GeometryOptions = GeometryOptions()) -> Instance3D | None:
    """The 3D of one instance (see `instances_3d`); None when fewer than `options.min_points` points remain."""
    return _instances_3d([mask], depth, depth_camera, colour_camera, options)[0]


def _instances_3d(masks: list[InstanceMask], depth: np.ndarray, depth_camera: PinholeCamera,
                  colour_camera: PinholeCamera, options: GeometryOptions) -> list[Instance3D | None]:
    """Each instance's inlier pixels one by one (steps 1-3), then the back-projection and the boxes of all of
    them at once: per instance those are fixed costs of a few dozen numpy calls, which batching pays once per
    frame."""
    selections = [_inlier_pixels(mask, depth, depth_camera, colour_camera, options) for mask in masks]
    found = [selection for selection in selections if selection is not None]
    if not found:
        return [None] * len(masks)
    counts = np.array([len(selection.z) for selection in found])
    ends = np.cumsum(counts).tolist()
    rows, cols = np.divmod(np.concatenate([selection.pixels for selection in found]),
                           np.repeat([selection.width for selection in found], counts))   # (N,) in the windows
    rows += np.repeat([selection.row0 for selection in found], counts)                    # in the depth image
    cols += np.repeat([selection.col0 for selection in found], counts)
    x_factors, y_factors = _ray_factors(depth_camera)                          # x = (u - cx) / fx * z, ...
    xyz = np.empty((3, ends[-1]), np.float32)                                   # (3, N) x, y, z rows
    np.concatenate([selection.z for selection in found], out=xyz[2])
    np.multiply(x_factors.take(cols), xyz[2], out=xyz[0])
    np.multiply(y_factors.take(rows), xyz[2], out=xyz[1])
    clouds = [xyz[:, end - count:end] for count, end in zip(counts.tolist(), ends)]       # (3, N_i) views
    centroids = [cloud.sum(axis=1, dtype=np.float64) / cloud.shape[1] for cloud in clouds]   # pairwise sums per row
    boxes = _yaw_boxes([cloud[:, _spread(cloud.shape[1], BOX_POINTS)] for cloud in clouds],
                       np.array(centroids), options.extent_percentiles)
    kept = [np.ascontiguousarray(cloud[:, _spread(cloud.shape[1], options.max_points_per_instance)].T)
            for cloud in clouds]                                                # (P_i, 3) each
    instances = iter(Instance3D(centroid, box, cloud.shape[1], points)
                     for cloud, centroid, box, points in zip(clouds, centroids, boxes, kept))
    return [None if selection is None else next(instances) for selection in selections]


@dataclass(frozen=True)
class _Inliers:
    """An instance's inlier depth pixels: flat indices (N,) into its window of `width` columns at (row0, col0)
    of the depth image, and their depths z (N,) in metres."""

    row0: int
    col0: int
    width: int
    pixels: np.ndarray
    z: np.ndarray


def _inlier_pixels(mask: InstanceMask, depth: np.ndarray, depth_camera: PinholeCamera,
                   colour_camera: PinholeCamera, options: GeometryOptions) -> _Inliers | None:
    """Steps 1-3 of the module docstring for one instance; None when fewer than `options.min_points` remain."""
    window = mask_in_depth_pixels(mask, depth_camera, colour_camera)
    if window is None:
        return None
    (row0, col0), depth_mask = window
    height, width = depth_mask.shape
    depths = depth[row0:row0 + height, col0:col0 + width]                      # (h, w) metres, NaN invalid
    pixels = np.flatnonzero(_eroded(depth_mask, options.edge_erosion_px) & (depths > 0))   # NaN > 0 is False
    if len(pixels) < options.min_points:
        return None
    z = depths.take(pixels)                                                     # (N,) metres
    median = _middle(z)
    deviation = np.abs(z - median)                                              # (N,) along the ray
    inliers = np.flatnonzero(deviation <= _band(deviation, options.outlier_mads, options.min_outlier_band))
    if len(inliers) < options.min_points:
        return None
    return _Inliers(row0, col0, width, pixels.take(inliers), z.take(inliers))


def mask_in_depth_pixels(mask: InstanceMask, depth_camera: PinholeCamera, colour_camera: PinholeCamera
                         ) -> tuple[tuple[int, int], np.ndarray] | None:
    """The depth pixels whose centres fall inside `mask` (colour pixels): ((row0, col0), (h, w) bool) with the
    window's top-left depth pixel, or None when the mask covers no depth pixel."""
    if mask.area == 0:
        return None
    if (depth_camera.fx, depth_camera.fy, depth_camera.cx, depth_camera.cy) == (
            colour_camera.fx, colour_camera.fy, colour_camera.cx, colour_camera.cy):
        x0, y0, x1, y1 = mask.box                                               # same pixels: a plain crop
        cx0, cy0 = max(x0, 0), max(y0, 0)
        cx1, cy1 = min(x1, depth_camera.width), min(y1, depth_camera.height)
        if cx0 >= cx1 or cy0 >= cy1:
            return None
        return (cy0, cx0), mask.mask[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
    cols = _depth_pixels_in(mask.x, mask.mask.shape[1], colour_camera.fx, colour_camera.cx,
                            depth_camera.fx, depth_camera.cx, depth_camera.width)
    rows = _depth_pixels_in(mask.y, mask.mask.shape[0], colour_camera.fy, colour_camera.cy,
                            depth_camera.fy, depth_camera.cy, depth_camera.height)
    if cols is None or rows is None:
        return None
    (col0, crop_cols), (row0, crop_rows) = cols, rows
    return (row0, col0), mask.mask[crop_rows[:, None], crop_cols[None, :]]       # (h_d, w_d)


def _depth_pixels_in(start: int, length: int, f_colour: float, c_colour: float, f_depth: float, c_depth: float,
                     depth_size: int) -> tuple[int, np.ndarray] | None:
    """Along one image axis: the depth pixels whose centres map into colour pixels start..start+length-1,
    as (first depth pixel, (n,) index of the colour pixel each one sees, relative to start)."""
    scale = f_depth / f_colour
    # Colour pixel i spans [i - 0.5, i + 0.5); depth pixel d maps to colour coordinate (d - c_d) / scale + c_c.
    first = max(int(np.ceil((start - 0.5 - c_colour) * scale + c_depth)), 0)
    last = min(int(np.ceil((start + length - 0.5 - c_colour) * scale + c_depth)) - 1, depth_size - 1)
    if first > last:
        return None
    colour = np.rint((np.arange(first, last + 1) - c_depth) / scale + c_colour).astype(np.int64) - start
    return first, np.clip(colour, 0, length - 1)


@lru_cache(maxsize=8)
def _ray_factors(camera: PinholeCamera) -> tuple[np.ndarray, np.ndarray]:
    """(W,) (u - cx) / fx of each column and (H,) (v - cy) / fy of each row, float32."""
    columns = (np.arange(camera.width, dtype=np.float32) - np.float32(camera.cx)) / np.float32(camera.fx)
    rows = (np.arange(camera.height, dtype=np.float32) - np.float32(camera.cy)) / np.float32(camera.fy)
    return columns, rows


def _eroded(mask: np.ndarray, erosion_px: int) -> np.ndarray:
    """`mask` less the pixels within `erosion_px` of its edge (a disc), or within fewer pixels when that
    would leave less than MIN_KEPT_AFTER_EROSION of it: thin objects keep their middle."""
    source = np.ascontiguousarray(mask).view(np.uint8)
    area = cv2.countNonZero(source)
    for radius in range(erosion_px, 0, -1):
        eroded = cv2.erode(source, _disc(radius), borderType=cv2.BORDER_CONSTANT, borderValue=0)
        if cv2.countNonZero(eroded) >= MIN_KEPT_AFTER_EROSION * area:
            return eroded.view(bool)
    return mask


@lru_cache(maxsize=None)
def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _band(deviation: np.ndarray, outlier_mads: float, min_band: float) -> float:
    """Half-width of the inlier band from the depths' absolute deviations from their median (N,):
    max(outlier_mads sigma_MAD, min_band)."""
    return max(outlier_mads * MAD_TO_SIGMA * _middle(deviation), min_band)


def _middle(values: np.ndarray) -> float:
    """The median of (N,) values (the upper one of the middle two for even N), by one partial sort."""
    middle = len(values) // 2
    return float(np.partition(values, middle)[middle])


def _yaw_boxes(point_sets: list[np.ndarray], centroids: np.ndarray, percentiles: tuple[float, float]
               ) -> list[OrientedBox]:
    """The boxes about the camera's y axis (see the module docstring) of I point sets (3, M_i), M_i <=
    BOX_POINTS, with their centroids (I, 3): all at once, the sets side by side in a zero-padded array."""
    if not point_sets:
        return []
    counts = np.array([points.shape[1] for points in point_sets])
    centred = np.zeros((len(point_sets), 3, counts.max()), np.float32)        # (I, 3, M)
    for index, points in enumerate(point_sets):
        np.subtract(points, centroids[index].astype(np.float32)[:, None], out=centred[index, :, :counts[index]])
    scatter = (centred @ centred.transpose(0, 2, 1)).astype(np.float64)        # (I, 3, 3); padding adds zeros
    # Major axis of each x-z footprint's scatter, at angle `major` from x towards z (2x2 PCA).
    yaw = -0.5 * np.arctan2(2.0 * scatter[:, 0, 2], scatter[:, 0, 0] - scatter[:, 2, 2])   # x' = (cos, 0, -sin)
    yaw = np.where(np.abs(yaw) > math.pi / 4, yaw - np.copysign(math.pi / 2, yaw), yaw)    # the axis nearer x
    rotations = np.stack([_rotation_about_y(angle) for angle in yaw.tolist()])            # (I, 3, 3)
    local = rotations.transpose(0, 2, 1).astype(np.float32) @ centred          # (I, 3, M) in box axes
    local[np.arange(local.shape[2]) >= counts[:, None, None].repeat(3, axis=1)] = np.inf   # padding sorts last
    ordered = np.sort(local, axis=2)
    ranks = np.array([[round(p / 100 * (count - 1)) for p in percentiles] for count in counts.tolist()])   # (I, 2)
    rows = np.arange(len(point_sets))[:, None]
    low = ordered[rows, np.arange(3), ranks[:, :1]].astype(np.float64)         # (I, 3)
    high = ordered[rows, np.arange(3), ranks[:, 1:]].astype(np.float64)
    centres = centroids + (rotations @ ((low + high) / 2)[:, :, None])[:, :, 0]
    return [OrientedBox(centre, size, angle) for centre, size, angle in zip(centres, high - low, yaw.tolist())]


def _rotation_about_y(angle: float) -> np.ndarray:
    cos, sin = math.cos(angle), math.sin(angle)
    return np.array([[cos, 0.0, sin], [0.0, 1.0, 0.0], [-sin, 0.0, cos]])


def _spread(count: int, limit: int) -> slice:
    """Every k-th of `count` items, k the smallest step that keeps at most `limit` (deterministic; in raster
    order, they cover the object)."""
    return slice(None, None, -(-count // limit))
