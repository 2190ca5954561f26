"""The launch files parse, and name only executables, parameters and files that exist.

`launch` and `launch_ros` are not installable here, so minimal stand-ins of their classes (recording their
constructor arguments) are put into sys.modules while a launch file is imported. `LaunchRun` then plays the
returned description the way `ros2 launch` would, without starting anything: launch arguments and their
choices, substitutions, conditions, included launch files and the environment each process would get.
Files under the installed share directory are mapped back to the repository through setup.py's data_files.
"""
from __future__ import annotations

import ast
import importlib.util
import os
import runpy
import sys
import types
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "sparseinst_ros"
SHARE = f"/opt/prefix/share/{PACKAGE}"   # where FindPackageShare('sparseinst_ros') resolves in the stand-ins
TRANSPORT_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"
NODE_NAME = "sparseinst_node"
# Executables of other packages that the launch files may start: (package, executable) as those packages name them.
EXTERNAL_EXECUTABLES = {("rviz2", "rviz2"), ("usb_cam", "usb_cam_node_exe"), ("v4l2_camera", "v4l2_camera_node")}

# Module -> class names the stand-ins provide; a launch file importing anything else fails to import.
STAND_IN_CLASSES = {
    "launch": ["LaunchDescription"],
    "launch.actions": ["DeclareLaunchArgument", "SetEnvironmentVariable", "IncludeLaunchDescription", "GroupAction"],
    "launch.conditions": ["IfCondition", "UnlessCondition", "LaunchConfigurationEquals",
                          "LaunchConfigurationNotEquals"],
    "launch.substitutions": ["LaunchConfiguration", "PathJoinSubstitution", "TextSubstitution"],
    "launch.launch_description_sources": ["PythonLaunchDescriptionSource"],
    "launch_ros": [],
    "launch_ros.actions": ["Node"],
    "launch_ros.substitutions": ["FindPackageShare"],
}


class Recorded:
    """Base of every stand-in class: keeps the constructor arguments."""

    def __init__(self, *args, **kwargs):
        self.args = args
        self.kwargs = kwargs

    def arg(self, index: int, keyword: str):
        return self.args[index] if len(self.args) > index else self.kwargs[keyword]


def stand_in_modules() -> dict[str, types.ModuleType]:
    modules = {}
    for module_name, class_names in STAND_IN_CLASSES.items():
        module = types.ModuleType(module_name)
        for class_name in class_names:
            setattr(module, class_name, type(class_name, (Recorded,), {}))
        modules[module_name] = module
    return modules


@pytest.fixture(scope="module")
def setup_kwargs():
    """The keyword arguments setup.py passes to setuptools.setup (data_files globs evaluated in the repo)."""
    import setuptools
    captured = {}
    original_setup, original_cwd = setuptools.setup, os.getcwd()
    setuptools.setup = lambda **kwargs: captured.update(kwargs)
    try:
        os.chdir(REPO)
        runpy.run_path(str(REPO / "setup.py"), run_name="__main__")
    finally:
        setuptools.setup = original_setup
        os.chdir(original_cwd)
    assert captured, "setup.py did not call setuptools.setup"
    return captured


@pytest.fixture(scope="module")
def console_scripts(setup_kwargs) -> set[str]:
    return {entry.split("=")[0].strip() for entry in setup_kwargs["entry_points"]["console_scripts"]}


@pytest.fixture(scope="module")
def installed_files(setup_kwargs) -> dict[str, Path]:
    """Installed path under SHARE -> source file in the repository, from setup.py's data_files."""
    files = {}
    for destination, sources in setup_kwargs["data_files"]:
        for source in sources:
            files[f"/opt/prefix/{destination}/{Path(source).name}"] = REPO / source
    return files


def load_launch_description(path: Path):
    """Import a launch file with the stand-ins of launch/launch_ros and call generate_launch_description()."""
    saved = {name: sys.modules.get(name) for name in STAND_IN_CLASSES}
    sys.modules.update(stand_in_modules())
    try:
        spec = importlib.util.spec_from_file_location(f"launch_file_{path.stem.replace('.', '_')}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.generate_launch_description()
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


class LaunchRun:
    """Plays a stand-in launch description: which processes would start, with what, in which environment."""

    def __init__(self, installed_files: dict[str, Path], arguments: dict[str, str] | None = None):
        self.installed_files = installed_files
        self.config = dict(arguments or {})
        self.environment: dict[str, str] = {}
        self.processes: list[dict] = []
        self.share_files: set[str] = set()   # every resolved path under SHARE

    def source_of(self, installed_path: str) -> Path:
        assert installed_path in self.installed_files, (
            f"{installed_path} is not installed by setup.py's data_files")
        return self.installed_files[installed_path]

    def resolve(self, value) -> str:
        if isinstance(value, str):
            text = value
        elif isinstance(value, (list, tuple)):
            text = "".join(self.resolve(part) for part in value)
        else:
            kind = type(value).__name__
            if kind == "LaunchConfiguration":
                name = value.arg(0, "variable_name")
                assert name in self.config, f"launch configuration {name!r} is used but not declared"
                text = self.config[name]
            elif kind == "PathJoinSubstitution":
                text = os.path.join(*(self.resolve(part) for part in value.arg(0, "substitutions")))
            elif kind == "FindPackageShare":
                package = value.arg(0, "package")
                text = SHARE if package == PACKAGE else f"/opt/prefix/share/{package}"
            elif kind == "TextSubstitution":
                text = value.kwargs["text"]
            else:
                raise AssertionError(f"no stand-in evaluation for substitution {kind}")
        if text.startswith(SHARE + "/"):
            self.share_files.add(text)
        return text

    def holds(self, condition) -> bool:
        kind = type(condition).__name__
        if kind in ("IfCondition", "UnlessCondition"):
            text = self.resolve(condition.arg(0, "predicate_expression")).strip().lower()
            assert text in ("true", "false", "1", "0"), f"condition value {text!r} is not a boolean"
            return (text in ("true", "1")) == (kind == "IfCondition")
        if kind in ("LaunchConfigurationEquals", "LaunchConfigurationNotEquals"):
            name = condition.arg(0, "launch_configuration_name")
            assert name in self.config, f"condition on undeclared launch configuration {name!r}"
            equal = self.config[name] == self.resolve(condition.arg(1, "expected_value"))
            return equal == (kind == "LaunchConfigurationEquals")
        raise AssertionError(f"no stand-in evaluation for condition {kind}")

    def play(self, description) -> "LaunchRun":
        assert type(description).__name__ == "LaunchDescription", "generate_launch_description() must return one"
        self.play_entities(description.arg(0, "initial_entities"))
        return self

    def play_entities(self, entities) -> None:
        for entity in entities:
            condition = entity.kwargs.get("condition")
            if condition is not None and not self.holds(condition):
                continue
            getattr(self, "play_" + type(entity).__name__)(entity)

    def play_DeclareLaunchArgument(self, action) -> None:
        name = action.arg(0, "name")
        if name not in self.config:
            default = action.kwargs.get("default_value")
            assert default is not None, f"launch argument {name!r} has no default and was not given"
            self.config[name] = self.resolve(default)
        choices = action.kwargs.get("choices")
        if choices is not None:
            assert self.config[name] in choices, f"{name}:={self.config[name]} is not one of {choices}"

    def play_SetEnvironmentVariable(self, action) -> None:
        self.environment[self.resolve(action.arg(0, "name"))] = self.resolve(action.arg(1, "value"))

    def play_GroupAction(self, action) -> None:
        self.play_entities(action.arg(0, "actions"))

    def play_Node(self, action) -> None:
        kwargs = action.kwargs
        parameters = []
        for entry in kwargs.get("parameters", []):
            if isinstance(entry, dict):
                parameters.append({name: self.resolve(value) for name, value in entry.items()})
            else:
                parameters.append(self.resolve(entry))
        self.processes.append({
            "package": kwargs["package"], "executable": self.resolve(kwargs["executable"]), "name": kwargs.get("name"),
            "parameters": parameters,
            "remappings": [(self.resolve(a), self.resolve(b)) for a, b in kwargs.get("remappings", [])],
            "arguments": [self.resolve(argument) for argument in kwargs.get("arguments", [])],
            "environment": dict(self.environment),
        })

    def play_IncludeLaunchDescription(self, action) -> None:
        source = action.arg(0, "launch_description_source")
        path = self.source_of(self.resolve(source.arg(0, "launch_file_path")))
        arguments = {self.resolve(k): self.resolve(v) for k, v in action.kwargs.get("launch_arguments", [])}
        description = load_launch_description(path)
        declared = {entity.arg(0, "name") for entity in description.arg(0, "initial_entities")
                    if type(entity).__name__ == "DeclareLaunchArgument"}
        unknown = set(arguments) - declared
        assert not unknown, f"{path.name} is given launch arguments it does not declare: {sorted(unknown)}"
        # An included description shares the launch context: same environment, given arguments set.
        child = LaunchRun(self.installed_files, {**self.config, **arguments})
        child.environment = self.environment
        child.play(description)
        self.processes += child.processes
        self.share_files |= child.share_files


LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))
SCENARIOS = [
    # (launch file, launch arguments, expected processes as (package, executable))
    ("sparseinst.launch.py", {}, [(PACKAGE, "sparseinst_node")]),
    ("sparseinst.launch.py", {"camera": "usb_cam", "rviz": "true", "image_topic": "/cam/image_raw"},
     [(PACKAGE, "sparseinst_node"), ("usb_cam", "usb_cam_node_exe"), ("rviz2", "rviz2")]),
    ("sparseinst.launch.py", {"camera": "v4l2_camera", "weights": "/models/w.pth", "device": "cpu"},
     [(PACKAGE, "sparseinst_node"), ("v4l2_camera", "v4l2_camera_node")]),
    ("sparseinst.launch.py", {"node_executable": "sparseinst_lifecycle_node"},
     [(PACKAGE, "sparseinst_lifecycle_node")]),
    ("demo.launch.py", {}, [(PACKAGE, "image_source"), (PACKAGE, "sparseinst_node"), ("rviz2", "rviz2")]),
    ("demo.launch.py", {"rviz": "false"}, [(PACKAGE, "image_source"), (PACKAGE, "sparseinst_node")]),
]


def test_both_launch_files_exist():
    assert {path.name for path in LAUNCH_FILES} >= {"sparseinst.launch.py", "demo.launch.py"}


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda path: path.name)
def test_launch_file_holds_no_logic(path):
    """Declarative only: no branches or loops, no OpaqueFunction."""
    tree = ast.parse(path.read_text())
    logic = [type(node).__name__ for node in ast.walk(tree)
             if isinstance(node, (ast.If, ast.IfExp, ast.For, ast.While, ast.Try, ast.comprehension))]
    assert not logic, f"{path.name} contains {logic}"
    assert "OpaqueFunction" not in path.read_text()


@pytest.mark.parametrize("launch_file, arguments, expected", SCENARIOS,
                         ids=[f"{s[0]}-{','.join(f'{k}={v}' for k, v in s[1].items()) or 'defaults'}"
                              for s in SCENARIOS])
def test_launch_starts_existing_executables_with_the_transport(launch_file, arguments, expected,
                                                               console_scripts, installed_files):
    run = LaunchRun(installed_files, arguments).play(load_launch_description(REPO / "launch" / launch_file))
    assert [(p["package"], p["executable"]) for p in run.processes] == expected
    for process in run.processes:
        if process["package"] == PACKAGE:
            assert process["executable"] in console_scripts, f"{process['executable']} is not a console script"
        else:
            assert (process["package"], process["executable"]) in EXTERNAL_EXECUTABLES
        profile = process["environment"].get(TRANSPORT_VARIABLE)
        assert profile, f"{process['executable']} starts without {TRANSPORT_VARIABLE}"
        assert run.source_of(profile) == REPO / "config" / "fastdds_large_data.xml"
    for installed_path in run.share_files:   # every file referenced under the share directory
        assert run.source_of(installed_path).is_file(), f"{installed_path} has no source in the repository"


def test_launch_arguments_reach_the_node(installed_files):
    arguments = {"image_topic": "/cam/image_raw", "weights": "/models/w.pth", "device": "cpu", "camera": "usb_cam",
                 "depth": "true", "depth_topic": "/cam/aligned_depth_to_color/image_raw",
                 "depth_info_topic": "/cam/aligned_depth_to_color/camera_info"}
    run = LaunchRun(installed_files, arguments).play(load_launch_description(REPO / "launch" / "sparseinst.launch.py"))
    node, camera = run.processes
    assert node["name"] == NODE_NAME
    assert run.source_of(node["parameters"][0]) == REPO / "config" / "sparseinst.yaml"
    assert node["parameters"][1] == {"weights": "/models/w.pth", "device": "cpu", "depth": "true"}
    # image/compressed and camera_info follow image
    assert node["remappings"] == [("image", "/cam/image_raw"), ("depth/image", "/cam/aligned_depth_to_color/image_raw"),
                                  ("depth/camera_info", "/cam/aligned_depth_to_color/camera_info")]
    assert ("image_raw", "/cam/image_raw") in camera["remappings"]


def test_invalid_choice_is_rejected(installed_files):
    description = load_launch_description(REPO / "launch" / "sparseinst.launch.py")
    with pytest.raises(AssertionError, match="camera:=gopro"):
        LaunchRun(installed_files, {"camera": "gopro"}).play(description)


def test_parameter_overrides_are_node_parameters(installed_files):
    run = LaunchRun(installed_files).play(load_launch_description(REPO / "launch" / "sparseinst.launch.py"))
    node = run.processes[0]
    params_file = run.source_of(node["parameters"][0])
    content = yaml.safe_load(params_file.read_text())
    node_keys = [key for key in content if key.lstrip("/") in (NODE_NAME, "**")]
    assert node_keys, f"{params_file.name} has no section for {NODE_NAME} (or /**): {list(content)}"
    declared = set().union(*(content[key]["ros__parameters"] for key in node_keys))
    overrides = {name for entry in node["parameters"] if isinstance(entry, dict) for name in entry}
    assert overrides and overrides <= declared, f"overrides not in {params_file.name}: {overrides - declared}"


def test_rviz_config_shows_overlay_and_input(installed_files):
    run = LaunchRun(installed_files, {"rviz": "true", "image_topic": "/cam/image_raw"})
    run.play(load_launch_description(REPO / "launch" / "sparseinst.launch.py"))
    rviz = next(p for p in run.processes if p["executable"] == "rviz2")
    config_path = run.source_of(rviz["arguments"][rviz["arguments"].index("-d") + 1])
    config = yaml.safe_load(config_path.read_text())
    images = {display["Topic"]["Value"] for display in config["Visualization Manager"]["Displays"]
              if display["Class"] == "rviz_default_plugins/Image"}
    assert f"/{NODE_NAME}/overlay" in images
    assert "/image" in images and ("/image", "/cam/image_raw") in rviz["remappings"]


def test_fastdds_profile_gives_shared_memory_room_for_camera_images():
    """Default participant profile: shared memory with a segment for several 1920x1080 rgb8 images, plus UDPv4
    so that processes with Fast DDS' defaults still talk to ours."""
    namespace = {"dds": "http://www.eprosima.com"}
    profiles = ElementTree.parse(REPO / "config" / "fastdds_large_data.xml").getroot().find("dds:profiles", namespace)
    default = [p for p in profiles.findall("dds:participant", namespace) if p.get("is_default_profile") == "true"]
    assert len(default) == 1, "the profile must be the default participant profile to apply without code"
    rtps = default[0].find("dds:rtps", namespace)
    assert rtps.findtext("dds:useBuiltinTransports", namespaces=namespace).strip() == "false"
    used = {element.text.strip() for element in rtps.findall("dds:userTransports/dds:transport_id", namespace)}
    descriptors = {d.findtext("dds:transport_id", namespaces=namespace).strip(): d
                   for d in profiles.findall("dds:transport_descriptors/dds:transport_descriptor", namespace)}
    assert used <= set(descriptors), f"undefined transports {used - set(descriptors)}"
    kinds = {descriptors[name].findtext("dds:type", namespaces=namespace).strip(): descriptors[name] for name in used}
    assert set(kinds) == {"SHM", "UDPv4"}
    assert int(kinds["SHM"].findtext("dds:segment_size", namespaces=namespace)) >= 2 * 1920 * 1080 * 3
