"""The node's parameter table and the checks of its values, without a node."""
import pytest
from rclpy.parameter import Parameter

from sparseinst_core.inference.defaults import BACKENDS, DEVICES, MASK_THRESHOLD, PRECISIONS, SCORE_THRESHOLD
from sparseinst_ros.parameters import (PARAMETERS, RUNTIME_PARAMETERS, change_error, class_filter_error,
                                       loader_arguments, start_up_error)

pytestmark = pytest.mark.ros


def test_choices_and_thresholds_are_the_libraries():
    assert (PARAMETERS["device"].choices, PARAMETERS["precision"].choices, PARAMETERS["backend"].choices) == \
        (DEVICES, PRECISIONS, BACKENDS)
    assert (PARAMETERS["score_threshold"].default, PARAMETERS["mask_threshold"].default) == \
        (SCORE_THRESHOLD, MASK_THRESHOLD)
    assert PARAMETERS["device"].descriptor().additional_constraints == "one of: auto, cuda, cpu"
    assert RUNTIME_PARAMETERS == ("score_threshold", "mask_threshold", "classes")


@pytest.mark.parametrize("value", [None, ["person", "car"], [0, 2]])
def test_a_class_filter_is_a_list_of_names_or_of_ids(value):
    parameter = Parameter("classes", value=value) if value is not None else Parameter("classes")
    assert class_filter_error(parameter) is None


@pytest.mark.parametrize("array_type", ["BOOL_ARRAY", "INTEGER_ARRAY", "DOUBLE_ARRAY", "STRING_ARRAY", "BYTE_ARRAY"])
def test_an_empty_array_of_any_type_clears_the_class_filter(array_type):
    # the ros2 CLI sends `[]` as an empty bool array
    parameter = Parameter("classes", getattr(Parameter.Type, array_type), [])
    assert class_filter_error(parameter) is None
    assert change_error([parameter], model_loaded=True) is None


@pytest.mark.parametrize("value", [[True], [b"\x01"]])
def test_a_non_empty_array_of_other_types_is_no_class_filter(value):
    assert "list of class names or of integer ids" in class_filter_error(Parameter("classes", value=value))


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_deleting_any_parameter_is_refused_with_a_reason(name):
    deleted = Parameter(name)                   # `ros2 param delete` sends the parameter without a value (NOT_SET)
    for model_loaded in (False, True):
        reason = change_error([deleted], model_loaded)
        assert reason.startswith(f"{name} cannot be deleted: the node needs a value for each of its parameters")
    assert change_error([deleted], False).endswith("set classes to []") == (name == "classes")


def test_max_input_pixels_defaults_to_4096_squared():
    spec = PARAMETERS["max_input_pixels"]
    assert spec.default == 4096 * 4096 and not spec.runtime
    assert spec.descriptor().integer_range[0].from_value == 1


@pytest.mark.parametrize("value", [2.5, "person", [1.5, 2.5]])
def test_other_values_are_no_class_filter(value):
    assert "list of class names or of integer ids" in class_filter_error(Parameter("classes", value=value))


def test_start_up_values_outside_the_choices_are_refused_with_the_choices():
    assert start_up_error([Parameter("device", value="cpu"), Parameter("weights", value="demo")]) is None
    assert start_up_error([Parameter("device", value="gpu")]) == \
        "parameter 'device' is 'gpu'; expected one of auto, cuda, cpu"
    assert "must be a list" in start_up_error([Parameter("classes", value=3)])


def test_run_time_changes_are_limited_to_thresholds_and_the_class_filter():
    assert change_error([Parameter("score_threshold", value=0.5), Parameter("classes", value=[1])], True) is None
    reason = change_error([Parameter("weights", value="/x.pth"), Parameter("device", value="cpu")], True)
    assert reason.startswith("device, weights cannot change while the model is loaded; only score_threshold, "
                             "mask_threshold, classes change at run time")
    assert change_error([Parameter("weights", value="/x.pth")], False) is None    # unconfigured lifecycle node
    assert change_error([Parameter("precision", value="int8")], False) == \
        "precision must be one of fp32, fp16, bf16, got 'int8'"
    assert "list of class names" in change_error([Parameter("classes", value=2.5)], False)


def test_loader_arguments_from_the_defaults():
    values = {name: spec.default for name, spec in PARAMETERS.items()}
    assert loader_arguments(values) == dict(
        weights="demo", preset=None, class_names_file=None, min_size=0, max_size=0, score_threshold=SCORE_THRESHOLD,
        mask_threshold=MASK_THRESHOLD, device="auto", precision="fp32", backend="torch", fallback=None)
    named = loader_arguments({**values, "preset": "r50_giam", "class_names": "/names.txt", "backend": "onnxruntime"})
    assert (named["preset"], named["class_names_file"]) == ("r50_giam", "/names.txt")
    assert named["fallback"] == "torch"               # onnxruntime missing: the node still runs, on torch
