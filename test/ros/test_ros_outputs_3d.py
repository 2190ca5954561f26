"""The 3D output messages and the class map, built without a node and read back field by field."""
import numpy as np
import pytest
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from sparseinst_core.scene import Instance3D, OrientedBox
from sparseinst_ros.outputs_3d import (detections_3d_message, label_info_message, markers_message,
                                       points_message)

pytestmark = pytest.mark.ros
CLASS_NAMES = ["circle", "square", "star"]


def instance(x, z, points):
    box = OrientedBox(centre=np.array([x, 0.1, z]), size=np.array([0.2, 0.3, 0.1]), yaw=0.5)
    return Instance3D(centroid=np.array([x, 0.05, z - 0.02]), box=box, num_points=len(points),
                      points=np.asarray(points, np.float32))


IDS, CLASSES, SCORES = [7, 3, 12], [2, 0, 1], [0.9, 0.8, 0.4]
INSTANCES = [instance(0.5, 1.0, [[0.5, 0.1, 1.0], [0.6, 0.0, 1.1]]), None, instance(-0.4, 2.0, [[-0.4, 0.2, 2.0]])]


def header():
    h = Header(frame_id="camera_depth")
    h.stamp.sec, h.stamp.nanosec = 12, 345
    return h


def test_detections_3d_carry_ids_class_names_centroids_and_oriented_boxes_of_instances_with_3d():
    msg = detections_3d_message(header(), IDS, CLASSES, SCORES, INSTANCES, CLASS_NAMES)
    assert msg.header == header() and [d.id for d in msg.detections] == ["7", "12"]
    first = msg.detections[0]
    assert first.header == header()
    assert (first.results[0].hypothesis.class_id, first.results[0].hypothesis.score) == ("star", pytest.approx(0.9))
    position = first.results[0].pose.pose.position
    assert (position.x, position.y, position.z) == pytest.approx((0.5, 0.05, 0.98))
    box = first.bbox
    assert (box.center.position.x, box.center.position.y, box.center.position.z) == pytest.approx((0.5, 0.1, 1.0))
    q = box.center.orientation
    assert (q.x, q.y, q.z, q.w) == pytest.approx((0.0, np.sin(0.25), 0.0, np.cos(0.25)))
    assert (box.size.x, box.size.y, box.size.z) == pytest.approx((0.2, 0.3, 0.1))


def test_the_point_cloud_reads_back_as_xyz_and_the_detection_id_of_each_point():
    msg = points_message(header(), IDS, INSTANCES)
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("id", 12, 4, 1)]   # FLOAT32 = 7, UINT16 = 4
    assert (msg.height, msg.width, msg.is_bigendian, msg.header) == (1, 3, False, header())
    assert msg.row_step == msg.point_step * msg.width and len(msg.data) == msg.row_step
    raw = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.width, msg.point_step)
    xyz = raw[:, :12].copy().view("<f4")                                      # (P, 3)
    ids = raw[:, 12:14].copy().view("<u2")[:, 0]
    np.testing.assert_allclose(xyz, [[0.5, 0.1, 1.0], [0.6, 0.0, 1.1], [-0.4, 0.2, 2.0]], atol=1e-6)
    assert ids.tolist() == [7, 7, 12]


def test_markers_clear_the_old_ones_then_draw_a_box_and_a_class_id_text_per_instance_with_3d():
    markers = markers_message(header(), IDS, CLASSES, INSTANCES, CLASS_NAMES).markers
    assert markers[0].action == Marker.DELETEALL
    assert [(m.ns, m.id, m.type) for m in markers[1:]] == [
        ("boxes", 7, Marker.CUBE), ("labels", 7, Marker.TEXT_VIEW_FACING),
        ("boxes", 12, Marker.CUBE), ("labels", 12, Marker.TEXT_VIEW_FACING)]
    assert [m.text for m in markers if m.type == Marker.TEXT_VIEW_FACING] == ["star 7", "square 12"]
    cube = markers[1]
    assert (cube.scale.x, cube.scale.y, cube.scale.z) == pytest.approx((0.2, 0.3, 0.1))
    assert cube.pose.orientation.y == pytest.approx(np.sin(0.25)) and cube.header == header()


def test_label_info_maps_the_published_class_ids_to_names_with_the_threshold():
    everything = label_info_message(header(), CLASS_NAMES, None, 0.3)
    assert [(c.class_id, c.class_name) for c in everything.class_map] == [(0, "circle"), (1, "square"), (2, "star")]
    assert everything.threshold == pytest.approx(0.3)
    filtered = label_info_message(header(), CLASS_NAMES, frozenset({2}), 0.5)
    assert [(c.class_id, c.class_name) for c in filtered.class_map] == [(2, "star")]
