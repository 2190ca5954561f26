"""The end-to-end demo without `ros2 launch`: image source -> sparseinst_node -> demo client.

    python -m sparseinst_ros.run_demo --output outputs/ros_demo

Starts the three executables as separate processes (as a launch file would, see launch/demo.launch.py),
with the product's Fast DDS profile for camera-size images and discovery kept on this host, waits until
the client has printed and saved its frames, then stops the others.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

PROFILE = Path(__file__).resolve().parents[1] / "config" / "fastdds_large_data.xml"


def _start(module: str, ros_args: list[str], env: dict, log: Path | None) -> subprocess.Popen:
    out = open(log, "w") if log else None
    return subprocess.Popen([sys.executable, "-m", module, "--ros-args", *ros_args], env=env,
                            stdout=out, stderr=subprocess.STDOUT if out else None)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="outputs/ros_demo", help="folder for overlay PNGs and process logs")
    parser.add_argument("--frames", type=int, default=30, help="results the client waits for")
    parser.add_argument("--rate", type=float, default=10.0, help="camera rate of the image source (Hz)")
    parser.add_argument("--weights", default="demo", help="node weights ('demo': the shipped model)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds the client waits for a result")
    args = parser.parse_args(argv)

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if "FASTDDS_DEFAULT_PROFILES_FILE" not in env and PROFILE.is_file():
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
    env["PYTHONUNBUFFERED"] = "1"

    topic = ["-r", "image:=/camera/image_raw", "-r", "camera_info:=/camera/camera_info"]
    source = _start("sparseinst_ros.image_source",
                    [*topic, "-p", f"rate:={args.rate}", "-p", "source:=generated"], env, output / "image_source.log")
    node = _start("sparseinst_ros.node",
                  [*topic, "-p", f"weights:={args.weights}", "-p", f"device:={args.device}"], env, output / "node.log")
    processes = [source, node]
    try:
        client = _start("sparseinst_ros.demo_client",
                        ["-p", f"max_frames:={args.frames}", "-p", f"output_dir:={output}",
                         "-p", f"timeout:={args.timeout}"], env, None)
        processes.append(client)
        status = client.wait()
        if node.poll() is not None:
            print(f"sparseinst_node exited with status {node.returncode}; see {output / 'node.log'}:")
            print((output / "node.log").read_text()[-2000:])
            status = status or 1
    except KeyboardInterrupt:
        status = 130
    finally:
        for process in reversed(processes):
            _stop(process)
    print(f"logs of the image source and the node: {output}/image_source.log, {output}/node.log")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
