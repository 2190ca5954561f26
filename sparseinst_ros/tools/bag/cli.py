"""The command line of `sparseinst_bag` (also `python -m sparseinst_ros.bag`): info, run and export.

    sparseinst_bag info BAG
    sparseinst_bag run BAG --image-topic T [--depth-topic D --depth-info-topic I] [--output OUT]
        [--params-file YAML] [--weights W] [--device D] [--storage mcap|sqlite3] [--copy-input] [--overwrite]
    sparseinst_bag export BAG --image-topic T --output DIR [--every N] [--max-frames K] [--prelabel]
        [--params-file YAML] [--weights W] [--device D] [--overwrite]

BAG is a rosbag2 folder (sqlite3 or mcap) or one .mcap/.db3 file. The model and its settings come from the
node's parameters file (default: the node's defaults, i.e. the shipped demo model), --weights and --device
overriding it. Exit status: 0 done, 2 usage error (arguments, parameters, topics, an existing output),
1 failure (a damaged bag, no decodable frame, a model that cannot load), 128 + N stopped by signal N
(Ctrl-C: 130); on any of these but 0 no output is left behind.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import FAILURE_STATUS, USAGE_ERROR_STATUS, Failure, UsageError
from .output import Interrupted, SafeOutput, signals_interrupt

PROGRAM = "sparseinst_bag"
BAG_SUFFIXES = (".mcap", ".db3")


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{info,run,export}")
    info = commands.add_parser("info", help="topics, types, counts, image sizes and encodings, duration")
    info.add_argument("bag", type=Path, metavar="BAG")

    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("bag", type=Path, metavar="BAG")
    model.add_argument("--image-topic", required=True, metavar="T",
                       help="sensor_msgs/Image or CompressedImage topic")
    model.add_argument("--params-file", type=Path, metavar="YAML",
                       help="the node's parameters file (e.g. config/sparseinst.yaml): model, thresholds, classes")
    model.add_argument("--weights", metavar="W",
                       help="checkpoint; overrides the parameters file ('demo': the shipped model)")
    model.add_argument("--device", metavar="D", help="auto, cuda or cpu; overrides the parameters file")
    model.add_argument("--overwrite", action="store_true",
                       help="replace an existing output (once the new one is complete)")

    run = commands.add_parser("run", parents=[model], help="the node's pipeline on every frame, outputs into a new bag")
    run.add_argument("--output", type=Path, metavar="OUT", help="output bag (default: BAG_sparseinst beside BAG)")
    run.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="storage of the output bag")
    run.add_argument("--copy-input", action="store_true", help="also write the input image topic into OUT")
    run.add_argument("--depth-topic", metavar="D", help="depth image registered to the image (16UC1 mm or 32FC1 "
                     "m): also writes detections_3d, points and markers")
    run.add_argument("--depth-info-topic", metavar="I", help="camera_info of the depth image")

    export = commands.add_parser("export", parents=[model], help="frames to a COCO-format folder, optionally "
                                                                  "pre-labelled by the model")
    export.add_argument("--output", type=Path, required=True, metavar="DIR", help="folder to create")
    export.add_argument("--every", type=positive, default=1, metavar="N", help="every N-th frame (default 1)")
    export.add_argument("--max-frames", type=positive, metavar="K", help="at most K frames")
    export.add_argument("--prelabel", action="store_true",
                        help="add the model's instances as annotations (polygons, with their score)")
    return parser


def default_output(bag: Path) -> Path:
    """BAG_sparseinst beside the input bag (its file's stem for a single .mcap/.db3 file)."""
    bag = bag.absolute()
    name = bag.stem if bag.suffix in BAG_SUFFIXES else bag.name
    return bag.with_name(f"{name}_sparseinst")


def command_info(args) -> int:
    from .info import describe_bag
    from .reading import open_bag
    with open_bag(args.bag) as reader:
        print(describe_bag(reader, args.bag))
    return 0


def command_run(args) -> int:
    from .reading import find_image_topic, open_bag
    from .run import run_recording
    if bool(args.depth_topic) != bool(args.depth_info_topic):
        raise UsageError("--depth-topic and --depth-info-topic go together")
    output_path = args.output or default_output(args.bag)
    if output_path.absolute() == args.bag.absolute():
        raise UsageError("--output names the input bag")
    output = SafeOutput(output_path, args.overwrite)
    values = _parameter_values(args)
    with open_bag(args.bag) as reader:
        topic = find_image_topic(reader, args.image_topic, args.bag)
        depth = None
        if args.depth_topic:
            depth = (find_image_topic(reader, args.depth_topic, args.bag, option="--depth-topic"),
                     args.depth_info_topic)
            if args.depth_info_topic not in reader.topics:
                raise UsageError(f"--depth-info-topic {args.depth_info_topic}: no such topic in {args.bag}")
        summary = run_recording(reader, args.bag, topic, output, _load_model(values), values,
                                storage=args.storage, copy_input=args.copy_input, depth=depth)
    print(summary.format())
    return 0


def command_export(args) -> int:
    from .export import export_recording
    from .reading import find_image_topic, open_bag
    output = SafeOutput(args.output, args.overwrite)
    values = _parameter_values(args)
    with open_bag(args.bag) as reader:
        topic = find_image_topic(reader, args.image_topic, args.bag)
        summary = export_recording(reader, args.bag, topic, output, _load_model(values), values, every=args.every,
                                   max_frames=args.max_frames or 0, prelabel=args.prelabel)
    print(summary.format())
    return 0


def _parameter_values(args) -> dict[str, object]:
    from .node_parameters import node_parameter_values
    values, ignored = node_parameter_values(args.params_file, weights=args.weights, device=args.device)
    if ignored:
        print(f"{PROGRAM}: note: not parameters of the node, ignored: {', '.join(sorted(ignored))}", file=sys.stderr)
    return values


def _load_model(values: dict[str, object]):
    from .node_parameters import load_model
    model = load_model(values)
    print(f"{PROGRAM}: {model.description} on {model.predictor.device} ({model.predictor.precision})", file=sys.stderr)
    return model


COMMANDS = {"info": command_info, "run": command_run, "export": command_export}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    name = f"{PROGRAM} {args.command}"
    try:
        with signals_interrupt():
            return COMMANDS[args.command](args)
    except UsageError as error:
        print(f"{name}: error: {error}", file=sys.stderr)
        return USAGE_ERROR_STATUS
    except (Failure, OSError) as error:          # OSError: writing failed (a full disk, permissions)
        print(f"{name}: failed: {error}", file=sys.stderr)
        return FAILURE_STATUS
    except Interrupted as interruption:
        left = f"{interruption.discarded} was not written" if interruption.discarded else "nothing was written"
        print(f"{name}: {interruption}; {left}", file=sys.stderr)
        return 128 + interruption.signum


if __name__ == "__main__":
    sys.exit(main())
