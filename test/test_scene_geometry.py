"""Per-instance 3D from registered depth, against hand-computed cases; camera intrinsics and depth units.

The scenes are built here from the pinhole model (x = (u - cx) z / fx), not with the code under test: a
320x240 camera with fx = fy = 500 and the principal point at the image centre.
"""
import math
import warnings

import numpy as np
import pytest

from sparseinst_core.scene import (
    GeometryOptions, InstanceMask, OrientedBox, PinholeCamera, depth_to_metres, instance_3d, instances_3d,
)

CAMERA = PinholeCamera(fx=500.0, fy=500.0, cx=159.5, cy=119.5, width=320, height=240)
HALF = PinholeCamera(fx=250.0, fy=250.0, cx=79.5, cy=59.5, width=160, height=120)   # same view, half size


def rectangle(x0: int, y0: int, x1: int, y1: int) -> InstanceMask:
    """Columns x0..x1-1, rows y0..y1-1 as a crop at (x0, y0)."""
    return InstanceMask(np.ones((y1 - y0, x1 - x0), bool), x0, y0)


def plane_depth(camera: PinholeCamera, z0: float, slope: float = 0.0) -> np.ndarray:
    """(H, W) float32 depth of the plane z = z0 + slope * x, seen through each pixel's ray."""
    u = np.arange(camera.width)[None, :]
    ray_x = (u - camera.cx) / camera.fx                   # x / z along each column's rays
    return np.broadcast_to(z0 / (1.0 - slope * ray_x), (camera.height, camera.width)).astype(np.float32)


def expected_centroid(camera: PinholeCamera, depth: np.ndarray, columns: slice, rows: slice) -> np.ndarray:
    """Mean of the back-projected points of the valid pixels in a window."""
    v, u = np.mgrid[rows, columns]
    z = depth[rows, columns].astype(np.float64)
    valid = np.isfinite(z) & (z > 0)
    u, v, z = u[valid], v[valid], z[valid]
    return np.array([((u - camera.cx) * z / camera.fx).mean(), ((v - camera.cy) * z / camera.fy).mean(), z.mean()])


# --- camera and depth units ---------------------------------------------------------------------------

def test_intrinsics_come_from_a_camera_info_k_list_or_a_matrix():
    k = [500.0, 0.0, 159.5, 0.0, 500.0, 119.5, 0.0, 0.0, 1.0]
    assert PinholeCamera.from_k(k, 320, 240) == CAMERA
    assert PinholeCamera.from_k(np.array(k).reshape(3, 3), 320, 240) == CAMERA
    np.testing.assert_array_equal(CAMERA.k, np.array(k).reshape(3, 3))


@pytest.mark.parametrize("k, width, height, message", [
    ([500, 0, 639.5, 0, 500, 359.5, 0, 0, 1], 320, 240, "not those of this image size"),
    ([500, 0, 159.5, 0, 500, 119.5, 0, 0, 1], 0, 240, "must be positive"),
    ([0, 0, 159.5, 0, 500, 119.5, 0, 0, 1], 320, 240, "focal lengths"),
    ([500, 3, 159.5, 0, 500, 119.5, 0, 0, 1], 320, 240, "skew"),
    ([500, 0, 159.5, 0, 500, 119.5, 0, 0, 2], 320, 240, r"\[\[fx, 0, cx\]"),
    ([500, 0, 159.5, 0, 500, 119.5], 320, 240, "9 values"),
])
def test_intrinsics_that_do_not_fit_raise_a_clear_error(k, width, height, message):
    with pytest.raises(ValueError, match=message):
        PinholeCamera.from_k(k, width, height)


def test_an_image_of_another_size_than_its_camera_info_is_refused():
    CAMERA.check_image(np.zeros((240, 320, 3), np.uint8))
    with pytest.raises(ValueError, match="640x480 but its camera info describes 320x240"):
        CAMERA.check_image(np.zeros((480, 640), np.uint16))
    with pytest.raises(ValueError, match="camera info"):
        instances_3d([rectangle(0, 0, 10, 10)], np.ones((120, 160), np.float32), CAMERA, CAMERA)


def test_16uc1_millimetres_become_metres_with_zero_invalid():
    metres = depth_to_metres(np.array([[0, 1500], [65535, 1]], np.uint16), "16UC1")
    assert metres.dtype == np.float32
    np.testing.assert_array_equal(metres, np.array([[np.nan, 1.5], [65.535, 0.001]], np.float32))


def test_32fc1_metres_keep_their_values_and_invalid_values_become_nan_without_warnings():
    raw = np.array([[np.nan, np.inf, -np.inf], [-1.0, 0.0, 2.5]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metres = depth_to_metres(raw, "32FC1")
    np.testing.assert_array_equal(metres, np.array([[np.nan] * 3, [np.nan, np.nan, 2.5]], np.float32))
    assert np.isinf(raw[0, 1])                                         # the input is left alone


@pytest.mark.parametrize("depth, encoding, message", [
    (np.zeros((4, 4), np.uint16), "mono8", "unknown depth encoding"),
    (np.zeros((4, 4), np.float32), "16UC1", "16UC1 depth must be uint16"),
    (np.zeros((4, 4), np.uint16), "32FC1", "32FC1 depth must be float32"),
    (np.zeros((4, 4, 3), np.uint16), "16UC1", "one channel"),
])
def test_depth_of_an_unknown_or_contradictory_encoding_is_refused(depth, encoding, message):
    with pytest.raises(ValueError, match=message):
        depth_to_metres(depth, encoding)


# --- geometry ---------------------------------------------------------------------------------------

def test_a_fronto_parallel_plane_gives_its_centroid_and_box():
    depth = plane_depth(CAMERA, 2.0)
    instance = instance_3d(rectangle(40, 60, 160, 180), depth, CAMERA, CAMERA)
    # Erosion by 2 px keeps columns 42..157 and rows 62..177: 116 x 116 points at z = 2.
    assert instance.num_points == 116 * 116
    np.testing.assert_allclose(instance.centroid, [(99.5 - 159.5) / 500 * 2, 0.0, 2.0], atol=1e-6)
    box = instance.box
    assert box.yaw == pytest.approx(0.0, abs=1e-6)
    width = (157 - 42) / 500 * 2                                      # extent of the kept points in x and y
    np.testing.assert_allclose(box.size, [width, width, 0.0], rtol=0.03, atol=1e-6)   # 1st-99th percentiles
    np.testing.assert_allclose(box.centre, instance.centroid, atol=2e-3)


def test_noise_on_a_plane_averages_out_in_the_centroid():
    rng = np.random.default_rng(0)
    depth = plane_depth(CAMERA, 2.0) + rng.normal(0, 0.01, (240, 320)).astype(np.float32)
    instance = instance_3d(rectangle(40, 60, 160, 180), depth, CAMERA, CAMERA)
    np.testing.assert_allclose(instance.centroid, [-0.24, 0.0, 2.0], atol=1e-3)
    assert instance.box.size[2] < 0.1                                  # 1st-99th percentile of N(0, 1 cm)


@pytest.mark.parametrize("degrees", [30.0, -20.0])
def test_a_slanted_plane_turns_the_box_about_the_vertical_axis(degrees):
    # The plane z = 2 + tan(a) x rises away from the camera towards +x: its footprint runs along
    # (cos a, 0, sin a), the box's x axis (cos yaw, 0, -sin yaw), so yaw = -a.
    slope = math.tan(math.radians(degrees))
    depth = plane_depth(CAMERA, 2.0, slope)
    instance = instance_3d(rectangle(100, 60, 220, 180), depth, CAMERA, CAMERA)
    box = instance.box
    assert math.degrees(box.yaw) == pytest.approx(-degrees, abs=0.5)
    assert box.size[2] < 0.005                                         # a plane: no thickness in the box
    along = box.rotation.T @ (np.array([1.0, 0.0, slope]) / math.hypot(1.0, slope))
    np.testing.assert_allclose(abs(along[0]), 1.0, atol=1e-3)         # the box's x axis lies in the plane


def test_the_box_is_a_rotation_about_y_with_its_quaternion():
    box = OrientedBox(np.zeros(3), np.ones(3), yaw=0.3)
    np.testing.assert_allclose(box.rotation @ [1.0, 0.0, 0.0], [math.cos(0.3), 0.0, -math.sin(0.3)])
    np.testing.assert_allclose(box.rotation @ box.rotation.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(box.quaternion, [0.0, math.sin(0.15), 0.0, math.cos(0.15)])


@pytest.mark.parametrize("encoding", ["32FC1", "16UC1"])
def test_holes_are_ignored(encoding):
    depth = plane_depth(CAMERA, 1.5, slope=0.2)
    depth = np.round(depth * 1000) / 1000                              # representable in millimetres
    holes = np.zeros((240, 320), bool)
    holes[80:110, 50:90] = True                                        # a blob inside the object
    holes[150:152, :] = True                                           # a dropped line
    depth[holes] = np.nan
    raw = (np.nan_to_num(depth) * 1000).astype(np.uint16) if encoding == "16UC1" else depth
    instance = instance_3d(rectangle(40, 60, 160, 180), depth_to_metres(raw, encoding), CAMERA, CAMERA)
    np.testing.assert_allclose(instance.centroid, expected_centroid(CAMERA, depth, slice(42, 158), slice(62, 178)),
                               atol=1e-5)
    assert instance.num_points == 116 * 116 - np.count_nonzero(holes[62:178, 42:158])


def test_flying_pixels_at_the_mask_edge_are_removed_by_the_erosion():
    # An object at 1 m in front of a wall at 3 m; along its outline the sensor reports depths in between.
    depth = plane_depth(CAMERA, 3.0).copy()
    depth[60:180, 40:160] = 1.0
    ring = np.zeros((240, 320), bool)
    ring[60:180, 40:160] = True
    ring[62:178, 42:158] = False                                       # the two outer pixels of the object
    depth[ring] = np.random.default_rng(1).uniform(1.0, 3.0, ring.sum())
    instance = instance_3d(rectangle(40, 60, 160, 180), depth, CAMERA, CAMERA)
    np.testing.assert_allclose(instance.centroid, [-0.12, 0.0, 1.0], atol=1e-6)
    assert instance.num_points == 116 * 116


def test_a_mask_that_spills_onto_the_background_loses_those_pixels_to_the_outlier_test():
    # The mask is 5 px too large all round: erosion takes 2, the 3 left at the wall's depth are outliers.
    depth = plane_depth(CAMERA, 3.0).copy()
    depth[60:180, 40:160] = 1.0
    instance = instance_3d(rectangle(35, 55, 165, 185), depth, CAMERA, CAMERA)
    np.testing.assert_allclose(instance.centroid, [-0.12, 0.0, 1.0], atol=1e-6)
    assert instance.num_points == 120 * 120
    assert instance.box.size[2] == pytest.approx(0.0, abs=1e-6)


def test_16uc1_millimetres_and_32fc1_metres_give_the_same_3d():
    metres = np.round(plane_depth(CAMERA, 2.2, slope=-0.3) * 1000) / 1000
    millimetres = np.round(metres * 1000).astype(np.uint16)
    mask = rectangle(60, 40, 200, 150)
    from_mm = instance_3d(mask, depth_to_metres(millimetres, "16UC1"), CAMERA, CAMERA)
    from_m = instance_3d(mask, depth_to_metres(metres.astype(np.float32), "32FC1"), CAMERA, CAMERA)
    assert from_mm.num_points == from_m.num_points
    np.testing.assert_allclose(from_mm.centroid, from_m.centroid, atol=1e-6)
    np.testing.assert_allclose(from_mm.box.size, from_m.box.size, atol=1e-6)
    assert from_mm.box.yaw == pytest.approx(from_m.box.yaw, abs=1e-6)
    np.testing.assert_allclose(from_mm.points, from_m.points, atol=1e-6)


def test_a_depth_image_of_half_the_colour_resolution_is_read_through_its_own_intrinsics():
    mask = rectangle(40, 60, 160, 180)                                 # colour pixels
    full = instance_3d(mask, plane_depth(CAMERA, 2.0), CAMERA, CAMERA)
    half = instance_3d(mask, plane_depth(HALF, 2.0), HALF, CAMERA)
    # Depth pixel (u, v) sees colour pixel (2u + 0.5, 2v + 0.5): columns 20..79 and rows 30..89 fall in the
    # mask, 56 x 56 after erosion, with the same 3D centroid as at full resolution.
    assert half.num_points == 56 * 56
    np.testing.assert_allclose(half.centroid, [-0.24, 0.0, 2.0], atol=1e-6)
    np.testing.assert_allclose(half.centroid, full.centroid, atol=1e-6)
    # Reading the half-size image at colour coordinates would see another part of the scene entirely.
    naive = instance_3d(mask, plane_depth(HALF, 2.0), HALF, HALF)
    assert abs(naive.centroid[0] - half.centroid[0]) > 0.1


def test_a_depth_image_larger_than_the_colour_image_works_the_same_way():
    double = PinholeCamera(fx=1000.0, fy=1000.0, cx=319.5, cy=239.5, width=640, height=480)
    mask = rectangle(40, 60, 160, 180)
    instance = instance_3d(mask, plane_depth(double, 2.0), double, CAMERA)
    np.testing.assert_allclose(instance.centroid, [-0.24, 0.0, 2.0], atol=2e-3)
    assert instance.num_points == 236 * 236                            # 240 x 240 depth pixels, eroded by 2


def test_a_thin_object_keeps_its_middle():
    depth = plane_depth(CAMERA, 1.0)
    instance = instance_3d(rectangle(100, 40, 103, 200), depth, CAMERA, CAMERA)   # 3 px wide
    assert instance is not None
    assert instance.num_points == 158                                  # the middle column, less its ends
    np.testing.assert_allclose(instance.centroid[:2], [(101 - 159.5) / 500, 0.0], atol=1e-6)


def test_too_few_valid_points_give_no_3d_and_are_counted():
    depth = plane_depth(CAMERA, 2.0).copy()
    depth[100:200, 200:300] = np.nan
    masks = [rectangle(40, 60, 160, 180), rectangle(10, 10, 14, 14), rectangle(210, 110, 290, 190)]
    geometry = instances_3d(masks, depth, CAMERA, CAMERA, GeometryOptions(min_points=30))
    assert geometry.instances[0] is not None and geometry.instances[1:] == [None, None]
    assert geometry.num_without_3d == 2


def test_all_zero_depth_gives_no_3d_and_no_error():
    zero = depth_to_metres(np.zeros((240, 320), np.uint16), "16UC1")
    geometry = instances_3d([rectangle(40, 60, 160, 180), InstanceMask(np.zeros((0, 0), bool))], zero, CAMERA, CAMERA)
    assert geometry.instances == [None, None] and geometry.num_without_3d == 2


def test_point_samples_are_bounded_spread_and_deterministic():
    depth = plane_depth(CAMERA, 2.0)
    mask = rectangle(40, 60, 160, 180)
    first = instance_3d(mask, depth, CAMERA, CAMERA, GeometryOptions(max_points_per_instance=500))
    second = instance_3d(mask, depth, CAMERA, CAMERA, GeometryOptions(max_points_per_instance=500))
    assert 400 < len(first.points) <= 500 and first.points.shape[1] == 3 and first.points.dtype == np.float32
    np.testing.assert_array_equal(first.points, second.points)
    # Evenly spread in raster order: the sample reaches the first and last rows of the object (one row 4 mm).
    np.testing.assert_allclose(first.points[:, 1].min(), (62 - 119.5) / 250, atol=1e-6)
    np.testing.assert_allclose(first.points[:, 1].max(), (177 - 119.5) / 250, atol=0.0041)
    small = instance_3d(rectangle(40, 60, 60, 80), depth, CAMERA, CAMERA)
    assert len(small.points) == small.num_points == 16 * 16


def test_a_mask_cut_by_the_image_border_is_clipped():
    depth = plane_depth(CAMERA, 2.0)
    instance = instance_3d(InstanceMask(np.ones((50, 50), bool), 300, 220), depth, CAMERA, CAMERA)
    assert instance.num_points == (20 - 4) * (20 - 4)                  # 20 x 20 inside, eroded on all sides
