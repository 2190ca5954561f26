"""The end-to-end demo without `ros2 launch`: image source -> sparseinst_node -> demo client.

    python -m sparseinst_ros.tools.run_demo --output outputs/ros_demo

Starts the three executables as separate processes (as a launch file would, see launch/demo.launch.py),
with the product's Fast DDS profile for camera-size images and discovery kept on this host, waits until
the client has printed and saved its frames, then stops the others. With depth (the default) the source is a
generated RGB-D sequence (its ground truth in <output>/ground_truth.jsonl), the node runs with `depth: true`, and
the client prints `id class x y z` per object; `--no-depth`: still scenes, 2D only.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .processes import RosProcess


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="outputs/ros_demo", help="folder for overlay PNGs and process logs")
    parser.add_argument("--frames", type=int, default=30, help="results the client waits for")
    parser.add_argument("--rate", type=float, default=10.0, help="camera rate of the image source (Hz)")
    parser.add_argument("--weights", default="demo", help="node weights ('demo': the shipped model)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds the client waits for a result")
    parser.add_argument("--depth", action=argparse.BooleanOptionalAction, default=True,
                        help="generated RGB-D input and the node's 3D outputs")
    args = parser.parse_args(argv)

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    camera = {"image": "/camera/image_raw", "camera_info": "/camera/camera_info"}
    source_params = {"rate": args.rate, "source": "generated"}
    if args.depth:
        camera |= {"depth/image": "/camera/depth/image_raw", "depth/camera_info": "/camera/depth/camera_info"}
        source_params |= {"source": "generated_rgbd", "scene_count": 30,
                          "ground_truth": str(output / "ground_truth.jsonl")}
    source = RosProcess("sparseinst_ros.tools.image_source", params=source_params, remaps=camera,
                        log=output / "image_source.log")
    node = RosProcess("sparseinst_ros.node", params={"weights": args.weights, "device": args.device,
                                                     "depth": args.depth}, remaps=camera, log=output / "node.log")
    processes = [source, node]
    try:
        client = RosProcess("sparseinst_ros.tools.demo_client",
                            params={"max_frames": args.frames, "output_dir": output, "timeout": args.timeout})
        processes.append(client)
        status = client.wait()
        if not node.alive():
            print(f"sparseinst_node exited with status {node.process.returncode}; see {output / 'node.log'}:")
            print(node.log()[-2000:])
            status = status or 1
    except KeyboardInterrupt:
        status = 130
    finally:
        for process in reversed(processes):
            process.stop(timeout=10)
    print(f"logs of the image source and the node: {output}/image_source.log, {output}/node.log")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
