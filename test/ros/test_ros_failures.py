"""The one line a failure at the node's boundary becomes: the cause of any exception, and the file it concerns."""
import pytest
import torch
from rclpy.exceptions import InvalidParameterTypeException
from rclpy.parameter import Parameter

from sparseinst_core.inference import load_predictor
from sparseinst_ros.failures import StartUpError, describe, failure_report, model_load_failure


@pytest.mark.parametrize("error,cause", [
    (KeyError("model"), "KeyError: 'model'"),
    (TypeError("__init__() got an unexpected keyword argument 'future_option'"),
     "TypeError: __init__() got an unexpected keyword argument 'future_option'"),
    (OSError(5, "Input/output error"), "OSError: [Errno 5] Input/output error"),
    (MemoryError(), "MemoryError"),
    (torch.OutOfMemoryError("CUDA out of memory.\nTried to allocate 2.00 GiB"),
     "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
     "UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"),
    # messages written for users are shown as they are
    (ValueError("fp16 needs a CUDA device;\n on the CPU use bf16"), "fp16 needs a CUDA device; on the CPU use bf16"),
    (FileNotFoundError("weights file not found: /x.pth"), "weights file not found: /x.pth"),
    (StartUpError("parameter 'classes': unknown class 'hexagon'"), "parameter 'classes': unknown class 'hexagon'"),
    (InvalidParameterTypeException(Parameter("min_size", value="abc"), "INTEGER"),
     "Trying to set parameter 'min_size' to 'abc' of type 'STRING', expecting type 'INTEGER': min_size"),
])
def test_the_cause_of_any_exception_is_one_line(error, cause):
    assert describe(error) == cause


def test_the_report_is_one_line_and_the_traceback_apart():
    try:
        {}["model"]
    except KeyError as error:
        line, trace = failure_report("configure failed", error)
    assert line == "configure failed: KeyError: 'model'"
    assert trace.startswith("Traceback (most recent call last):") and trace.endswith("KeyError: 'model'")


def load_failure(**arguments) -> str:
    try:
        load_predictor(device="cpu", **arguments)
    except Exception as error:
        return model_load_failure(error, arguments["weights"], arguments.get("class_names_file"))
    raise AssertionError("loaded")


def test_a_failure_to_read_the_class_names_file_names_that_file(tmp_path, weights_file):
    names = tmp_path / "names.txt"
    names.write_bytes(b"\xff\xfe binary")
    assert load_failure(weights=str(weights_file), class_names_file=str(names)) == (
        f"class_names {str(names)!r}: UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position 0: "
        "invalid start byte")


def test_a_failure_that_names_its_file_already_is_not_prefixed(tmp_path):
    weights = tmp_path / "empty.pth"
    weights.write_bytes(b"")
    assert load_failure(weights=str(weights)) == f"could not read checkpoint {weights}: the file is empty"


def test_any_other_failure_names_the_weights():
    try:
        raise KeyError("model")
    except KeyError as error:
        assert model_load_failure(error, "/w.pth", None) == "weights '/w.pth': KeyError: 'model'"
        assert model_load_failure(error, "/w.pth", "/names.txt") == "weights '/w.pth': KeyError: 'model'"
