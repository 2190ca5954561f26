"""The node's parameters for an offline command: the node's YAML file read as rclpy reads it, checked as the
node checks it, and the model the values name, loaded as the node loads it.

The file's `/**` section and then the node's own (`sparseinst_node` or `/sparseinst_node`) apply, later
values winning (rclpy's `parameter_dict_from_yaml_file`); an empty list is unset, as rcl reads it. Values
are checked against the node's parameter table (type, range, choices, class filter), and `--weights` /
`--device` on the command line override the file as the launch file's arguments do.
"""
from __future__ import annotations

from pathlib import Path

import yaml
from rclpy.parameter import Parameter, parameter_dict_from_yaml_file

from sparseinst_core.inference import LoadedPredictor, load_predictor

from ...detections import resolve_class_filter
from ...parameters import NODE_NAME, PARAMETERS, loader_arguments, start_up_error, value_error
from .errors import Failure, UsageError


def read_parameters_file(path: Path) -> tuple[dict[str, object], list[str]]:
    """The node's values set in a parameters file, and the names in it that are no parameter of the node."""
    if not path.is_file():
        raise UsageError(f"--params-file {path}: no such file")
    try:
        messages = parameter_dict_from_yaml_file(str(path), use_wildcard=True, target_nodes=[f"/{NODE_NAME}"])
    except (yaml.YAMLError, RuntimeError, AttributeError, TypeError, KeyError) as error:
        raise UsageError(f"--params-file {path} is not a ROS 2 parameters file for {NODE_NAME} (a '/**' or "
                         f"'{NODE_NAME}' section with ros__parameters): {error}") from None
    values, ignored = {}, []
    for name, message in messages.items():
        parameter = Parameter.from_parameter_msg(message)
        if name not in PARAMETERS:
            ignored.append(name)
            continue
        if isinstance(parameter.value, list) and not parameter.value:
            parameter = Parameter(name)                  # `[]` has no type: unset
        error = value_error(parameter)
        if error:
            raise UsageError(f"--params-file {path}: {error}")
        values[name] = parameter.value
    return values, ignored


def node_parameter_values(params_file: Path | None = None, **overrides) -> tuple[dict[str, object], list[str]]:
    """Every node parameter's value: the node's defaults, the file's values, then `overrides` (None: not given);
    and the ignored names of the file. A usage error says which value the node would refuse."""
    values = {name: spec.default for name, spec in PARAMETERS.items()}
    ignored = []
    if params_file is not None:
        from_file, ignored = read_parameters_file(params_file)
        values.update(from_file)
    values.update({name: value for name, value in overrides.items() if value is not None})
    error = start_up_error(Parameter(name, value=value) for name, value in values.items())
    if error:
        raise UsageError(error)
    return values, ignored


def load_model(values: dict[str, object]) -> LoadedPredictor:
    """The predictor the values name (load_predictor, as the node loads it); a `Failure` says why it cannot load."""
    arguments = loader_arguments(values)
    try:
        return load_predictor(**arguments)
    except FileNotFoundError as error:
        raise Failure(f"{error} (parameter 'weights' = {arguments['weights']!r})") from None
    except (ValueError, RuntimeError, OSError) as error:
        raise Failure(f"cannot load the model {arguments['weights']!r}: {error}") from None


def class_filter(values: dict[str, object], model: LoadedPredictor) -> frozenset[int] | None:
    """The allowed class ids of the `classes` parameter (None: all); an unknown class is a usage error."""
    try:
        return resolve_class_filter(values["classes"] or [], model.class_names)
    except ValueError as error:
        raise UsageError(f"parameter 'classes': {error}") from None
