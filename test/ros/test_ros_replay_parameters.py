"""The replay parameters of the node (drop_frames, queue_size) and the checks the offline tools share with it:
values are refused for their type and range as rclpy refuses them, the input QoS keeps as many frames as the
queue, and the node's parameters file is read as rclpy reads it."""
import pytest
import yaml
from rclpy.parameter import Parameter
from rclpy.qos import ReliabilityPolicy

from sparseinst_ros.parameters import PARAMETERS, input_qos, value_error
from sparseinst_ros.tools.bag.errors import UsageError
from sparseinst_ros.tools.bag.node_parameters import node_parameter_values

pytestmark = pytest.mark.ros


def test_replay_parameters_default_to_the_live_behaviour():
    assert (PARAMETERS["drop_frames"].default, PARAMETERS["queue_size"].default) == (True, 30)
    assert not PARAMETERS["drop_frames"].runtime and not PARAMETERS["queue_size"].runtime


@pytest.mark.parametrize("name,value,error", [
    ("queue_size", 0, "parameter 'queue_size' is 0; expected 1..10000"),
    ("queue_size", 2.5, "parameter 'queue_size' must be of type integer, got double 2.5"),
    ("drop_frames", "no", "parameter 'drop_frames' must be of type bool, got string 'no'"),
    ("mask_threshold", 1, "parameter 'mask_threshold' must be of type double, got integer 1"),
    ("classes", 3, "must be a list of class names or of integer ids"),
])
def test_values_rclpy_would_refuse_are_named(name, value, error):
    assert error in value_error(Parameter(name, value=value))


def test_good_values_pass():
    assert value_error(Parameter("queue_size", value=100)) is None
    assert value_error(Parameter("classes", value=["person"])) is None


def test_the_subscription_keeps_as_many_frames_as_the_queue_when_every_frame_counts():
    live = input_qos("sensor_data", drop_frames=True, queue_size=30)
    assert live.reliability == ReliabilityPolicy.BEST_EFFORT and live.depth == 5
    replay = input_qos("reliable", drop_frames=False, queue_size=30)
    assert replay.reliability == ReliabilityPolicy.RELIABLE and replay.depth == 30


def test_parameters_file_sections_apply_as_in_rclpy(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({
        "/**": {"ros__parameters": {"score_threshold": 0.5, "classes": [], "use_sim_time": True, "queue_size": 10}},
        "sparseinst_node": {"ros__parameters": {"score_threshold": 0.6}},
        "other_node": {"ros__parameters": {"max_instances": 3}},
    }))
    values, ignored = node_parameter_values(path, weights="/models/w.pth", device=None)
    assert values["score_threshold"] == 0.6                 # the node's own section after the wildcard
    assert values["classes"] is None                        # [] is unset
    assert values["max_instances"] == PARAMETERS["max_instances"].default
    assert (values["queue_size"], values["weights"], values["device"]) == (10, "/models/w.pth", "auto")
    assert ignored == ["use_sim_time"]


@pytest.mark.parametrize("content", ["just text", "/**:\n  parameters: {weights: x}\n", "a: [unclosed\n"])
def test_a_file_that_is_no_parameters_file_is_a_usage_error(tmp_path, content):
    path = tmp_path / "params.yaml"
    path.write_text(content)
    with pytest.raises(UsageError, match="is not a ROS 2 parameters file"):
        node_parameter_values(path)
