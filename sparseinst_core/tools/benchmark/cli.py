"""Speed of SparseInst on this machine, in one run: `python -m sparseinst_core.benchmark`.

The command's arguments (also `python -m sparseinst_core.tools.benchmark`); the package's docstring says
what is measured.
"""
from __future__ import annotations

import argparse

import torch

from ...inference.device import resolve_device
from ...model import PRESETS
from .report import write_presets_doc, write_reports
from .run import DEFAULT_SIZES, run_benchmark


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparseinst_core.benchmark",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["r50_giam"], choices=list(PRESETS), metavar="PRESET",
                        help="presets to measure (default: r50_giam)")
    parser.add_argument("--sizes", nargs="+", type=int, default=list(DEFAULT_SIZES),
                        help=f"input sizes, shorter side in px (default: {' '.join(map(str, DEFAULT_SIZES))})")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement, best kept (default 3)")
    parser.add_argument("--rounds", type=int, default=7,
                        help="interleaved end-to-end rounds of all variants per size, for the ratios (0: none)")
    parser.add_argument("--output-dir", default="outputs/benchmark", help="where JSON, Markdown and PNG go")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-onnx", action="store_true",
                        help="skip the backends that run an ONNX export (onnxruntime, openvino)")
    parser.add_argument("--no-maskrcnn", action="store_true", help="skip the Mask R-CNN peer")
    parser.add_argument("--no-profile", action="store_true", help="skip the convolution-efficiency profile")
    parser.add_argument("--write-presets-doc", metavar="PATH", help="only write the presets FLOPs/params table")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.write_presets_doc:
        print(f"wrote {write_presets_doc(args.write_presets_doc)}")
        return 0
    if args.repeats < 1 or args.rounds < 0 or any(size < 32 for size in args.sizes):
        parser.error("--repeats must be >= 1, --rounds >= 0 and every size at least 32")
    try:
        device = resolve_device(args.device)
    except (RuntimeError, ValueError) as error:   # e.g. --device cuda without a GPU: exit 2, no traceback
        parser.error(str(error))
    results = run_benchmark(args.presets, args.sizes, args.repeats, device=device,
                            skip_backends=("onnxruntime", "openvino") if args.no_onnx else (),
                            maskrcnn=not args.no_maskrcnn, profile=not args.no_profile, rounds=args.rounds)
    write_reports(results, args.output_dir)
    return 0
