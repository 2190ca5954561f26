"""Export a SparseInst checkpoint to ONNX for one fixed input size.

    python -m sparseinst_core.export --preset r50_giam --weights model.pth --height 640 --width 864 \\
        -o r50_giam_640x864.onnx        (or the `sparseinst-export` command)

The graph takes the raw float32 image batch (B, 3, H, W), RGB 0..255, and returns the model's three
output tensors; the file records the preset, config and input size (`Predictor.from_onnx` runs it).
"""
from __future__ import annotations

import argparse
import sys

import torch

from ..inference.backends import OnnxRuntimeBackend
from ..inference.export import DEFORM_CONV_OPSET, MIN_OPSET, export_onnx
from ..io import load_model
from ..io.onnx_format import INPUT_NAME, OUTPUT_NAMES
from ..model import build_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sparseinst-export", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=None, help="model preset (default: the checkpoint's, else r50_giam)")
    parser.add_argument("--weights", help="checkpoint (official .pth or this project's); random weights if omitted")
    parser.add_argument("--num-classes", type=int, default=None, help="class count (default: the preset's / checkpoint's)")
    parser.add_argument("--height", type=int, default=640, help="input height, a multiple of 32 (default 640)")
    parser.add_argument("--width", type=int, default=864, help="input width, a multiple of 32 (default 864)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--dynamic-batch", action="store_true", help="leave the batch dimension free")
    parser.add_argument("--opset", type=int, default=None, help=f"ONNX opset (default {MIN_OPSET}, "
                        f"{DEFORM_CONV_OPSET} for deformable presets)")
    parser.add_argument("--check", action="store_true", help="compare ONNX Runtime with PyTorch on a random image")
    parser.add_argument("-o", "--output", help="output .onnx file (default: <preset>_<H>x<W>.onnx)")
    args = parser.parse_args(argv)

    if args.weights:
        model, report = load_model(args.weights, preset=args.preset, num_classes=args.num_classes)
    else:
        print("no --weights given: exporting random weights (for testing the export only)", file=sys.stderr)
        model = build_model(args.preset or "r50_giam", num_classes=args.num_classes)
    model.eval()
    output = args.output or f"{model.preset or 'sparseinst'}_{args.height}x{args.width}.onnx"
    try:
        path = export_onnx(model, output, (args.height, args.width), batch_size=args.batch_size,
                           dynamic_batch=args.dynamic_batch, opset=args.opset)
    except ValueError as error:
        parser.error(str(error))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB), input {INPUT_NAME} "
          f"({args.batch_size}, 3, {args.height}, {args.width}) float32 RGB 0..255")
    if args.check:
        images = torch.rand(args.batch_size, 3, args.height, args.width) * 255
        with torch.inference_mode():
            expected = model(images)
        actual = OnnxRuntimeBackend(path, device="cpu")(images)
        for name in OUTPUT_NAMES:
            scale = expected[name].abs().max().clamp(min=1e-12)
            print(f"{name}: max |onnxruntime - torch| / max |torch| = "
                  f"{((actual[name] - expected[name]).abs().max() / scale).item():.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
