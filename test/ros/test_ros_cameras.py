"""The node's cameras from the parameter `image_topics`: output namespaces, the refusal of colliding lists, and
each camera's figures for /diagnostics."""
import pytest
from rclpy.parameter import Parameter

from sparseinst_ros.cameras import cameras_of, diagnostic_values, image_topics_error
from sparseinst_ros.parameters import change_error, start_up_error

pytestmark = pytest.mark.ros


def test_no_topics_is_the_one_camera_on_image_with_the_outputs_of_the_node_itself():
    for topics in (None, []):
        (camera,) = cameras_of(topics)
        assert (camera.image_topic, camera.output_topic("detections")) == ("image", "~/detections")


@pytest.mark.parametrize("topic, outputs", [
    ("/front/image_raw", "~/front/detections"), ("rear/image_rect", "~/rear/detections"),
    ("/rig/left/image_raw", "~/rig/left/detections"), ("/image", "~/detections")])
def test_a_cameras_outputs_live_under_the_namespace_of_its_image_topic(topic, outputs):
    (camera,) = cameras_of([topic])
    assert camera.output_topic("detections") == outputs
    assert camera.output_topic("overlay") == outputs.replace("detections", "overlay")


def test_topics_of_one_namespace_are_refused_in_one_line_naming_both():
    error = image_topics_error(["/front/image_raw", "/rear/image_raw", "/front/image_rect"])
    assert error == ("parameter 'image_topics': '/front/image_raw' and '/front/image_rect' have the same namespace "
                     "'/front', so both cameras would publish to ~/front/detections, ...; give each camera a "
                     "namespace of its own")
    assert "\n" not in error
    with pytest.raises(ValueError, match="same namespace"):
        cameras_of(["/a/image", "a/image"])
    assert image_topics_error(["/front/image_raw", "/rear/image_raw", "/rig/front/image_raw"]) is None


@pytest.mark.parametrize("topic", ["", "/front/", "~/image", "/front//image", "/{node}/image", "/0cam/image"])
def test_names_that_are_no_plain_topic_are_refused(topic):
    assert "no plain topic name" in image_topics_error(["/ok/image", topic])


def test_the_parameter_is_checked_at_start_up_and_before_a_reconfiguration():
    assert start_up_error([Parameter("image_topics", value=["/a/image", "/b/image"])]) is None
    assert start_up_error([Parameter("image_topics")]) is None                       # unset: `image`
    assert "same namespace" in start_up_error([Parameter("image_topics", value=["/a/image", "/a/image2"])])
    assert "must be a list of topic names" in start_up_error([Parameter("image_topics", value=3)])
    assert "same namespace" in change_error([Parameter("image_topics", value=["/a/x", "/a/y"])], model_loaded=False)
    assert "cannot change while the model is loaded" in change_error(
        [Parameter("image_topics", value=["/a/x"])], model_loaded=True)


def test_each_camera_has_its_rates_and_counts_in_the_diagnostics_of_several_cameras():
    front, rear = cameras = cameras_of(["/front/image_raw", "/rear/image_raw"])
    front.received, front.processed, rear.received, rear.processed = 20, 10, 4, 4
    values = diagnostic_values(cameras, period_s=2.0)
    assert values["camera /front/image_raw: input rate (Hz)"] == "10.00"
    assert values["camera /front/image_raw: output rate (Hz)"] == "5.00"
    assert values["camera /rear/image_raw: frames processed"] == "4"
    rear.received, rear.processed = 6, 5
    values = diagnostic_values(cameras, period_s=1.0)                    # the rates of the new period only
    assert (values["camera /rear/image_raw: input rate (Hz)"], values["camera /front/image_raw: output rate (Hz)"]) \
        == ("2.00", "0.00")
    assert diagnostic_values(cameras_of(None), period_s=1.0) == {}


def test_each_camera_counts_its_dropped_and_bad_frames():
    front, rear = cameras = cameras_of(["/front/image_raw", "/rear/image_raw"])
    front.arrived()
    front.arrived()
    assert front.received == 2 and front.last_received is not None and rear.last_received is None
    front.dropped, rear.bad_inputs = 1, 3
    values = diagnostic_values(cameras, period_s=1.0)
    assert (values["camera /front/image_raw: frames dropped"], values["camera /front/image_raw: bad input frames"],
            values["camera /rear/image_raw: frames dropped"], values["camera /rear/image_raw: bad input frames"]) \
        == ("1", "0", "0", "3")


def test_the_pipeline_opens_each_cameras_topics(ros):
    from rclpy.node import Node

    from sparseinst_ros.node import SparseInstPipeline
    node = Node("cameras_pipeline_test", parameter_overrides=[
        Parameter("device", value="cpu"), Parameter("image_topics", value=["/front/image_raw", "rear/image_rect"])])
    pipeline = SparseInstPipeline(node, node.create_publisher, node.destroy_publisher)
    try:
        pipeline.open_outputs()
        pipeline.open_inputs()
        assert {name: publisher.topic_name for name, publisher in pipeline.cameras[1].publishers.items()} == {
            name: f"/cameras_pipeline_test/rear/{name}" for name in ("detections", "instance_mask", "camera_info",
                                                                      "overlay")}
        assert [s.topic_name for s in pipeline.subscriptions] == [
            "/front/image_raw", "/rear/image_rect", "/front/camera_info", "/rear/camera_info"]
    finally:
        pipeline.close_inputs()
        pipeline.close_outputs()
        node.destroy_node()


def test_with_depth_each_camera_reads_the_depth_beside_its_image_and_publishes_its_3d_outputs(ros):
    from rclpy.node import Node

    from sparseinst_ros.node import SparseInstPipeline
    node = Node("cameras_depth_test", parameter_overrides=[
        Parameter("device", value="cpu"), Parameter("depth", value=True),
        Parameter("image_topics", value=["/front/image_raw", "rear/image_rect"])])
    pipeline = SparseInstPipeline(node, node.create_publisher, node.destroy_publisher)
    try:
        pipeline.open_outputs()
        pipeline.open_inputs()
        assert [s.topic_name for s in pipeline.subscriptions][4:] == [
            "/front/depth/image", "/front/depth/camera_info", "/rear/depth/image", "/rear/depth/camera_info"]
        assert all(camera.depth is not None for camera in pipeline.cameras)
        assert {name: publisher.topic_name for name, publisher in pipeline.cameras[0].publishers.items()
                if name in ("detections_3d", "points", "markers")} == {
            name: f"/cameras_depth_test/front/{name}" for name in ("detections_3d", "points", "markers")}
    finally:
        pipeline.close_inputs()
        pipeline.close_outputs()
        node.destroy_node()
