"""Write the synthetic shapes dataset in COCO format.

    python training/make_synthetic_dataset.py --output data/shapes --num-train 2000 --num-val 200 --seed 0

Layout: OUTPUT/train/*.jpg, OUTPUT/val/*.jpg, OUTPUT/annotations/train.json, OUTPUT/annotations/val.json.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sparseinst_core.data.synthetic import SHAPE_SIZES, SYNTHETIC_CLASSES, generate_synthetic_dataset


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, type=Path, help="dataset directory to create")
    parser.add_argument("--num-train", required=True, type=int, help="number of training images")
    parser.add_argument("--num-val", required=True, type=int, help="number of validation images")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same dataset")
    parser.add_argument("--image-size", type=int, default=320, help="longer image side in pixels")
    parser.add_argument("--classes", nargs="+", default=list(SYNTHETIC_CLASSES), choices=SYNTHETIC_CLASSES,
                        metavar="NAME", help=f"shape classes to draw, from {', '.join(SYNTHETIC_CLASSES)}")
    parser.add_argument("--image-format", choices=("jpg", "png"), default="jpg")
    parser.add_argument("--empty-fraction", type=float, default=0.05, help="fraction of images without shapes")
    parser.add_argument("--crowd-fraction", type=float, default=0.1,
                        help="fraction of images with one iscrowd=1 region of tiny shapes")
    parser.add_argument("--rle-fraction", type=float, default=0.25,
                        help="fraction of instances stored as RLE instead of polygons")
    parser.add_argument("--shape-sizes", type=float, nargs=2, default=SHAPE_SIZES,
                        metavar=("MIN", "MAX"), help="range of shape diameters, as fractions of the shorter image side")
    parser.add_argument("--class-colours", action="store_true",
                        help="give each class its own hue band, so colour tells classes apart as well as shape")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    paths = generate_synthetic_dataset(
        args.output, args.num_train, args.num_val, seed=args.seed, image_size=args.image_size,
        class_names=args.classes, image_format=args.image_format, empty_fraction=args.empty_fraction,
        crowd_fraction=args.crowd_fraction, rle_fraction=args.rle_fraction,
        shape_sizes=tuple(args.shape_sizes), class_colours=args.class_colours)
    for name, path in paths.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
