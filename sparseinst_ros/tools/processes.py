"""ROS processes the way the product runs them: its environment, and `python -m module --ros-args ...`.

The demo (`run_demo`), the node benchmark (`benchmark_node`) and the ROS tests start the executables as
separate processes, as a launch file would, with the product's transport: the Fast DDS profile for
camera-size images (config/fastdds_large_data.xml, unless another profile is named), discovery on this host,
and unbuffered output so that a log shows what happened up to the moment it is read.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FASTDDS_PROFILE = REPO / "config" / "fastdds_large_data.xml"


def product_environment(base: Mapping[str, str] | None = None, *, own_domain: bool = False) -> dict[str, str]:
    """`base` (default: this process' environment) with the product's ROS transport.

    `own_domain` picks a random ROS_DOMAIN_ID unless one is set, so that runs sharing a machine do not see
    each other. FASTDDS_BUILTIN_TRANSPORTS is removed: LARGE_DATA with localhost discovery loses large images.
    """
    env = dict(os.environ if base is None else base)
    env.pop("FASTDDS_BUILTIN_TRANSPORTS", None)
    if FASTDDS_PROFILE.is_file():
        env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(FASTDDS_PROFILE))
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if own_domain:
        env.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 100)))
    env["PYTHONUNBUFFERED"] = "1"
    env["RCUTILS_LOGGING_BUFFERED_STREAM"] = "0"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])   # runs from a checkout too
    return env


def ros_arguments(params: Mapping[str, object] | None = None, remaps: Mapping[str, str] | None = None,
                  params_file: str | os.PathLike | None = None) -> list[str]:
    """`--ros-args` with a parameters file, `-p name:=value` and `-r from:=to`."""
    args = ["--ros-args"]
    if params_file is not None:
        args += ["--params-file", str(params_file)]
    for name, value in (params or {}).items():
        args += ["-p", f"{name}:={_yaml(value)}"]
    for source, target in (remaps or {}).items():
        args += ["-r", f"{source}:={target}"]
    return args


def _yaml(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(f"'{v}'" for v in value) + "]"
    return str(value)


class RosProcess:
    """`python -m <module> --ros-args ...` in a process of its own; output to `log` (a file) or inherited.

    `env` defaults to `product_environment()`; a variable set to None in `env_overrides` is removed.
    """

    def __init__(self, module: str, *, params: Mapping[str, object] | None = None,
                 remaps: Mapping[str, str] | None = None, params_file: str | os.PathLike | None = None,
                 env: Mapping[str, str] | None = None, env_overrides: Mapping[str, str | None] | None = None,
                 log: str | os.PathLike | None = None):
        environment = {**(product_environment() if env is None else env), **(env_overrides or {})}
        self.log_path = Path(log) if log is not None else None
        self._log = open(self.log_path, "w") if self.log_path else None
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *ros_arguments(params, remaps, params_file)],
            env={k: v for k, v in environment.items() if v is not None},
            stdout=self._log, stderr=subprocess.STDOUT if self._log else None)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path else ""

    def wait_for_log(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            time.sleep(0.1)
        return False

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (rclpy's signal handler shuts the context down: a clean exit is status 0); killed after
        `timeout` seconds. Returns the exit status."""
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
        return self.process.returncode
