"""Pasting 1/4-resolution mask probabilities into crops of the original image.

The single resize of `postprocess.resize_masks_to_original` samples the 1/4 map of the resized image at
src = max((y + 0.5) s - 0.5, 0), s = h / (4 H), per axis. Here that same coordinate map is applied only
inside boxes, as Mask R-CNN pastes its masks (torchvision's paste_masks_in_image), with boxes that
provably hold every pixel the resize can set: a bilinear value is a weighted mean of its four samples,
so it exceeds the threshold only in a cell (the pixels between two sample rows and two sample columns)
with a corner sample above it. An instance gets a crop around its cells that can hold set pixels; where
those are sparse in it, one crop per part (connected blocks of cells), or one around all of them when
that is cheaper.

Inside a box the resize is two products with the pixels' bilinear weights (two non-zeros per row):
crops up to BATCHED_CROP_SIZE pixels a side are resized together, padded to powers of two; larger ones
in batches of one box: on the CPU separably (the sample rows resized along x, then each pixel row a blend
of two of them, thresholded), on a GPU as products. The resizing runs on the probabilities' device; the
search for the boxes on the host (one byte per cell).
"""
from __future__ import annotations

import functools
import math

import cv2
import numpy as np
import torch

# Parts are searched on blocks of BLOCK x BLOCK cells: parts less than a block apart share a crop, and the
# search handles BLOCK**2 times fewer elements.
BLOCK = 4
# Index of the lowest set bit of each 4-bit pattern, and one past the highest (a block's first and end cells).
FIRST_BIT = np.array([BLOCK if b == 0 else (b & -b).bit_length() - 1 for b in range(16)], dtype=np.int64)
END_BIT = np.array([b.bit_length() for b in range(16)], dtype=np.int64)
# The fixed cost of one crop, in pixels of resizing: an instance gets one crop per part only when that
# saves more than this per extra crop over one crop around all its parts.
CROP_COST_PIXELS = 4096
# An instance whose support cells fill at least this fraction of their bounding box gets that box as its
# crop; sparser ones are split into parts.
DENSE_FRACTION = 0.25
# Crops up to this many pixels a side are resized in batches; padded sizes are powers of two from 16.
BATCHED_CROP_SIZE = 128
MIN_BATCHED_SIZE = 16
# Products with the weights (on a GPU; on the CPU with `paste_by_products`) go in bands of BAND_PIXELS pixels
# (a band reads only its own samples).
BAND_PIXELS = 128
# OpenCV cuts a resize into stripes of 2^16 output elements for its worker threads; a call of at most that many
# runs in the calling thread. For the x pass of large crops its threads cost more than they save: a whole frame
# of masks (r18_giam, 640, 100 instances) 51 ms in the calling thread, 57 ms wall and 93 ms CPU with 2 threads.
SERIAL_RESIZE_ELEMENTS = 1 << 16
# Large crops on the CPU: instances per batch such that their sample rows resized along x hold about this
# many floats (they stay in cache until blended); pixel rows are blended phase by phase when the row map
# repeats within this many rows, else by index.
SEPARABLE_CHUNK_ELEMENTS = 1 << 18
MAX_ROW_PHASES = 64


class AxisMap:
    """The single-resize coordinate map along one axis: original pixels -> samples of the 1/4 map.

    size: pixels of the original image along the axis; resized_size: of the resized network input;
    samples_size: samples of the 1/4 map that cover it. Pixel y lies between samples `lower[y]` =
    floor(src) and `upper[y]` = lower + 1 (clamped to the last sample), at `fraction[y]` from the lower
    one, in cell `lower[y]`.
    """

    def __init__(self, size: int, resized_size: int, samples_size: int):
        src = np.maximum((np.arange(size) + 0.5) * resized_size / (4 * size) - 0.5, 0.0)
        self.size, self.samples_size = size, samples_size
        self.scale = 4 * size / resized_size          # pixels per sample: pixel y reads src (y + 0.5) / scale - 0.5
        self.lower = np.minimum(np.floor(src).astype(np.int64), samples_size - 1)
        self.upper = np.minimum(self.lower + 1, samples_size - 1)
        self.fraction = (src - self.lower).astype(np.float32)
        # The map repeats: pixel y + period reads the samples period_samples after pixel y's, with the same
        # fraction (away from the clamped ends).
        common = math.gcd(resized_size, 4 * size)
        self.period, self.period_samples = 4 * size // common, resized_size // common

    def weights(self, pixels: np.ndarray, samples: np.ndarray) -> np.ndarray:
        """(n, p) pixels (clamped into the image), (n, r) samples -> (n, p, r) float32 bilinear weights
        (zero for samples a pixel does not read, so also for samples past the map's end)."""
        pixels = np.minimum(pixels, self.size - 1)[:, :, None]
        samples = samples[:, None, :]
        fraction = self.fraction[pixels]
        return (np.where(samples == self.lower[pixels], 1 - fraction, 0)
                + np.where(samples == self.upper[pixels], fraction, 0)).astype(np.float32)

    def pixels(self, first_cells: np.ndarray, end_cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The pixel ranges [y0, y1) lying in the cell ranges [first, end)."""
        return np.searchsorted(self.lower, first_cells), np.searchsorted(self.lower, end_cells)

    def samples(self, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The sample ranges [a, b) that the pixel ranges [y0, y1) (non-empty; arrays or ints) read."""
        return self.lower[starts], self.upper[ends - 1] + 1


@functools.lru_cache(maxsize=8)
def axis_maps(original_size: tuple[int, int], image_size: tuple[int, int],
              samples_size: tuple[int, int]) -> tuple[AxisMap, AxisMap]:
    """Row and column maps of one geometry (kept for the next frames of a camera stream)."""
    return (AxisMap(original_size[0], image_size[0], samples_size[0]),
            AxisMap(original_size[1], image_size[1], samples_size[1]))


def binarise(values: torch.Tensor, mask_threshold: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """values > mask_threshold, bool, into `out` when given. On the CPU by numpy: there torch compares
    into bool in a scalar loop, numpy in SIMD, several times faster (the same float32 comparison)."""
    if values.device.type != "cpu" or values.dtype not in (torch.float32, torch.float64):
        return values > mask_threshold if out is None else torch.gt(values, mask_threshold, out=out)
    if out is None:
        out = torch.empty(values.shape, dtype=torch.bool)
    array = values.numpy()
    np.greater(array, array.dtype.type(mask_threshold), out=out.numpy())
    return out


def mask_supports(above: np.ndarray) -> np.ndarray:
    """(K, rows, cols) samples above the threshold -> (K, rows, cols) cells with a corner sample above it:
    the only cells where the resize can set pixels."""
    support = above.copy()
    support[:, :-1] |= above[:, 1:]
    support[:, :, :-1] |= support[:, :, 1:]                                 # numpy buffers overlapping operands
    return support


def crop_boxes(above: np.ndarray, rows: AxisMap, cols: AxisMap) -> tuple[np.ndarray, np.ndarray]:
    """(K, rows, cols) samples above the threshold -> the crops to compute: instances (P,) and pixel
    boxes (P, 4) x0, y0, x1, y1 (exclusive) that together hold every pixel the resize can set.

    An instance whose support fills at least DENSE_FRACTION of its bounding box gets that box; the
    others are split into parts (`sparse_parts`). Runs on the host, one byte per cell.
    """
    support = mask_supports(above)
    row_hits, col_hits = support.any(axis=2), support.any(axis=1)          # (K, rows), (K, cols)
    present = np.flatnonzero(row_hits.any(axis=1))
    row_hits, col_hits = row_hits[present], col_hits[present]
    bounds = np.stack([row_hits.argmax(axis=1), col_hits.argmax(axis=1),    # top, left, bottom, right cells
                       row_hits.shape[1] - row_hits[:, ::-1].argmax(axis=1),
                       col_hits.shape[1] - col_hits[:, ::-1].argmax(axis=1)], axis=1)
    filled = np.count_nonzero(support[present], axis=(1, 2))
    dense = filled >= DENSE_FRACTION * (bounds[:, 2] - bounds[:, 0]) * (bounds[:, 3] - bounds[:, 1])
    part_instances, part_cells = sparse_parts(support[present[~dense]])
    instances = np.concatenate([present[dense], present[~dense][part_instances]])
    cells = np.concatenate([bounds[dense], part_cells])
    y0, y1 = rows.pixels(cells[:, 0], cells[:, 2])
    x0, x1 = cols.pixels(cells[:, 1], cells[:, 3])
    boxes = np.stack([x0, y0, x1, y1], axis=1)
    keep = (x1 > x0) & (y1 > y0)                                            # cells that hold no pixel
    return merge_parts(instances[keep], boxes[keep], len(support))


def sparse_parts(support: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, rows, cols) support cells -> parts: connected groups of BLOCK x BLOCK blocks of cells, as
    (parts,) instance indices and (parts, 4) top, left, bottom, right (exclusive) cells.

    One connected-components pass labels the parts of all instances at once (their block maps side by
    side, a column of empty blocks apart); each part's cells are the union of its blocks' own cells.
    """
    occupied, extents = block_extents(support)
    count, by, bx = occupied.shape
    if not occupied.any():
        return np.zeros(0, dtype=np.int64), np.zeros((0, 4), dtype=np.int64)
    canvas = np.zeros((by, count, bx + 1), dtype=np.uint8)
    canvas[:, :, :bx] = occupied.transpose(1, 0, 2)
    num_labels, labels = cv2.connectedComponents(canvas.reshape(by, count * (bx + 1)), connectivity=8)
    labels = labels.reshape(by, count, bx + 1)[:, :, :bx].transpose(1, 0, 2)   # (n, by, bx)
    part_of_block = labels[occupied]                                        # (blocks,) labels from 1
    # labels fit 16 bits in practice, where numpy's stable sort is a radix sort
    order = np.argsort(part_of_block.astype(np.min_scalar_type(num_labels)), kind="stable")
    part_of_block, instance = part_of_block[order], np.nonzero(occupied)[0][order]
    block_cells = extents[order]                                            # (blocks, 4)
    starts = np.flatnonzero(np.diff(part_of_block, prepend=0))              # first block of each part
    return instance[starts], np.concatenate([np.minimum.reduceat(block_cells[:, :2], starts),
                                             np.maximum.reduceat(block_cells[:, 2:], starts)], axis=1)


def block_extents(support: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, rows, cols) cells -> blocks holding support (n, by, bx) bool and the cells each of those
    holds: (blocks, 4) top, left, bottom, right (exclusive).

    A block's four cells of a row are the four bytes of one uint32, so the summaries are element-wise
    ORs and comparisons; bytes are read back one by one, so the machine's byte order does not matter.
    """
    count, height, width = support.shape
    by, bx = -(-height // BLOCK), -(-width // BLOCK)
    padded = np.zeros((count, by * BLOCK, bx * BLOCK), dtype=bool)
    padded[:, :height, :width] = support
    words = padded.view(np.uint32).reshape(count, by, BLOCK, bx)           # a block's row per uint32
    columns = words[:, :, 0] | words[:, :, 1] | words[:, :, 2] | words[:, :, 3]   # (n, by, bx): byte j: column j
    row_hits = (words != 0).view(np.uint8)                                 # (n, by, BLOCK, bx): row i
    column_hits = columns.view(np.uint8).reshape(count, by, bx, BLOCK)
    row_bits = row_hits[:, :, 0] | row_hits[:, :, 1] << 1 | row_hits[:, :, 2] << 2 | row_hits[:, :, 3] << 3
    column_bits = (column_hits[..., 0] | column_hits[..., 1] << 1 | column_hits[..., 2] << 2
                   | column_hits[..., 3] << 3)                             # (n, by, bx): bit i for row/column i
    occupied = row_bits != 0
    _, block_y, block_x = np.nonzero(occupied)
    row_bits, column_bits = row_bits[occupied], column_bits[occupied]
    top, left = block_y * BLOCK, block_x * BLOCK
    extents = np.stack([top + FIRST_BIT[row_bits], left + FIRST_BIT[column_bits],
                        top + END_BIT[row_bits], left + END_BIT[column_bits]], axis=1)
    return occupied, extents


def merge_parts(instances: np.ndarray, boxes: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Parts (P,) instances, (P, 4) boxes -> one box around an instance's parts where separate crops
    would not save their cost; instances in ascending order."""
    order = np.argsort(instances, kind="stable")
    instances, boxes = instances[order], boxes[order]
    starts = np.flatnonzero(np.diff(instances, prepend=-1))                 # first part of each instance
    present = np.zeros(count, dtype=bool)
    present[instances[starts]] = True
    union = np.zeros((count, 4), dtype=np.int64)
    union[instances[starts]] = np.concatenate([np.minimum.reduceat(boxes[:, :2], starts),
                                               np.maximum.reduceat(boxes[:, 2:], starts)], axis=1)
    separate = np.bincount(instances, box_areas(boxes) + CROP_COST_PIXELS, minlength=count)
    merged = np.flatnonzero(present & (separate >= box_areas(union) + CROP_COST_PIXELS))   # also single parts
    kept = ~np.isin(instances, merged)
    instances = np.concatenate([instances[kept], merged])
    boxes = np.concatenate([boxes[kept], union[merged]])
    order = np.argsort(instances, kind="stable")
    return instances[order], boxes[order]


def box_areas(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def paste_crops(probs: torch.Tensor, sources: np.ndarray, boxes: np.ndarray, rows: AxisMap, cols: AxisMap,
                mask_threshold: float) -> tuple[np.ndarray, torch.Tensor]:
    """Resize rows `sources` (P,) of probs (K, rows, cols) into the crops `boxes` (P, 4), and binarise.

    Small crops go in batches of one padded size, large ones in batches of one box. Returns the order
    (P,) in which the crops' values come, and the values: (sum of areas,) bool on the probabilities'
    device, each crop row-major in turn.
    """
    heights, widths = boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]
    small = (heights <= BATCHED_CROP_SIZE) & (widths <= BATCHED_CROP_SIZE)
    padded_heights, padded_widths = padded_size(heights), padded_size(widths)
    size_key = np.where(small, padded_heights * (BATCHED_CROP_SIZE + 1) + padded_widths, -1)
    group_key = np.column_stack([size_key, np.where(small[:, None], 0, boxes)])   # (P, 5)
    order = np.lexsort(group_key.T[::-1])
    sources, boxes, group_key = sources[order], boxes[order], group_key[order]
    values = torch.empty(int(box_areas(boxes).sum()), dtype=torch.bool, device=probs.device)
    start = 0
    for first, last in runs(group_key):
        group_sources, group_boxes = sources[first:last], boxes[first:last]
        area = int(box_areas(group_boxes).sum())
        out = values[start:start + area]
        if group_key[first, 0] < 0:
            x0, y0, x1, y1 = group_boxes[0].tolist()
            paste_large_crops(probs, group_sources, rows, cols, (x0, y0, x1, y1), mask_threshold,
                              out.view(last - first, y1 - y0, x1 - x0))
        else:
            size = (int(padded_heights[order[first]]), int(padded_widths[order[first]]))
            paste_small_crops(probs, group_sources, group_boxes, size, rows, cols, mask_threshold, out)
        start += area
    return order, values


def padded_size(sizes: np.ndarray) -> np.ndarray:
    """The power of two from MIN_BATCHED_SIZE that holds each size."""
    powers = np.ceil(np.log2(np.maximum(sizes, MIN_BATCHED_SIZE))).astype(np.int64)
    return np.left_shift(1, powers)


def runs(keys: np.ndarray) -> list[tuple[int, int]]:
    """[first, last) index ranges of equal consecutive rows of keys (P, k)."""
    if len(keys) == 0:
        return []
    edges = np.flatnonzero((np.diff(keys, axis=0) != 0).any(axis=1)) + 1
    bounds = np.concatenate([[0], edges, [len(keys)]]).tolist()
    return list(zip(bounds[:-1], bounds[1:]))


def paste_small_crops(probs: torch.Tensor, sources: np.ndarray, boxes: np.ndarray, size: tuple[int, int],
                      rows: AxisMap, cols: AxisMap, mask_threshold: float, out: torch.Tensor) -> None:
    """Crops of rows `sources` of probs that fit `size` (h, w), resized as one batch: each crop's weights
    and samples are gathered into padded (n, h, r), (n, r, c), (n, w, c) tensors (zero weights in the
    padding), and the crops' own pixels of the binarised (n, h, w) result are written to `out`, one crop
    after the other."""
    device = probs.device
    x0, y0, x1, y1 = boxes.T
    first_row, end_row = rows.samples(y0, y1)
    first_col, end_col = cols.samples(x0, x1)
    sample_rows = first_row[:, None] + np.arange((end_row - first_row).max())          # (n, r)
    sample_cols = first_col[:, None] + np.arange((end_col - first_col).max())          # (n, c)
    row_weights = rows.weights(y0[:, None] + np.arange(size[0]), sample_rows)          # (n, h, r)
    col_weights = cols.weights(x0[:, None] + np.arange(size[1]), sample_cols)          # (n, w, c)
    sample_rows, sample_cols = (torch.from_numpy(np.minimum(samples, limit - 1)).to(device)
                                for samples, limit in ((sample_rows, rows.samples_size), (sample_cols, cols.samples_size)))
    source = torch.from_numpy(sources).to(device)
    windows = probs[source[:, None, None], sample_rows[:, :, None], sample_cols[:, None, :]]  # (n, r, c)
    resized = (torch.from_numpy(row_weights).to(device)
               @ (windows @ torch.from_numpy(col_weights).to(device).transpose(1, 2)))   # (n, h, w)
    binary = binarise(resized, mask_threshold)
    in_crop = ((np.arange(size[0]) < (y1 - y0)[:, None])[:, :, None]
               & (np.arange(size[1]) < (x1 - x0)[:, None])[:, None, :])   # (n, h, w)
    if device.type == "cpu":        # numpy's boolean indexing is several times faster than torch's here
        out.numpy()[:] = binary.numpy()[in_crop]
    else:
        torch.masked_select(binary, torch.from_numpy(in_crop).to(device), out=out)


def paste_large_crops(probs: torch.Tensor, sources: np.ndarray, rows: AxisMap, cols: AxisMap, box,
                      mask_threshold: float, out: torch.Tensor) -> None:
    """Crops of rows `sources` (n,) of probs, all of one `box` (x0, y0, x1, y1) -> out (n, y1 - y0, x1 - x0)
    bool: separably on the CPU (`paste_separable`), as products with the weights on a GPU."""
    if probs.device.type == "cpu":
        paste_separable(probs, sources, rows, cols, box, mask_threshold, out)
    else:
        paste_by_products(probs[torch.from_numpy(sources).to(probs.device)], rows, cols, box, mask_threshold, out)


def paste_separable(probs: torch.Tensor, sources: np.ndarray, rows: AxisMap, cols: AxisMap, box,
                    mask_threshold: float, out: torch.Tensor) -> None:
    """`paste_large_crops` on the CPU, a few instances at a time (their floats stay in cache): the columns
    first, at the sample rows only (`sample_rows_resized`), then each pixel row the blend of its two sample
    rows (`RowBlends`), thresholded. Per pixel that is one blend and one comparison, where a 2D resize reads
    four samples."""
    x0, y0, x1, y1 = box
    a, b = (int(i) for i in rows.samples(y0, y1))
    blends = row_blends(rows, y0, y1)
    chunk = max(1, SEPARABLE_CHUNK_ELEMENTS // ((b - a) * cols.size))       # x is resized over the whole width
    samples = probs.numpy()                                                 # (K, rows, cols), a view
    for start in range(0, len(sources), chunk):
        resized = sample_rows_resized(samples, sources[start:start + chunk], a, b, cols)   # (n, r, W)
        blends.apply(resized[:, :, x0:x1], mask_threshold, out[start:start + chunk])


def sample_rows_resized(samples: np.ndarray, sources: np.ndarray, a: int, b: int, cols: AxisMap) -> torch.Tensor:
    """Sample rows [a, b) of the instances `sources` (n,) of `samples` (K, rows, cols) float32, each resized
    to every pixel column: (n, b - a, W') float32, W' >= W (a crop takes its own columns).

    OpenCV's resize along x alone (y scale 1: rows unchanged) with the map's own scale, as
    `resize_masks_to_original` does: the same coordinate map, clamped at both ends, two float weights per
    pixel (agrees with products by the bilinear weights to 1e-7). It reads the rows where they are (a row
    stride is no copy), in calls of at most SERIAL_RESIZE_ELEMENTS outputs.
    """
    width = resized_width(samples.shape[-1], cols.scale)
    resized = np.empty((len(sources), b - a, width), dtype=samples.dtype)
    step = max(1, SERIAL_RESIZE_ELEMENTS // width)
    for target, source in zip(resized, sources.tolist()):
        for start in range(a, b, step):
            cv2.resize(samples[source, start:min(start + step, b)], None, dst=target[start - a:start - a + step],
                       fx=cols.scale, fy=1.0, interpolation=cv2.INTER_LINEAR)
    return torch.from_numpy(resized)


@functools.lru_cache(maxsize=64)
def resized_width(samples: int, scale: float) -> int:
    """The width OpenCV gives `samples` columns resized by `scale` (its own rounding)."""
    return cv2.resize(np.zeros((1, samples), dtype=np.float32), None, fx=scale, fy=1.0).shape[1]


class RowBlends:
    """Pixel rows [y0, y1) of a crop as blends of sample rows: row y = lerp(lower, upper, fraction).

    The map repeats every `period` pixel rows, `period_samples` sample rows further on: rows of one
    phase with the same fraction and neighbouring samples are one blend of two strided views (no copy),
    where a row's fraction is 0 just a comparison; the rest (clamped rows at the edges, or every row
    when the period is long) take their sample rows by index.
    """

    def __init__(self, rows: AxisMap, y0: int, y1: int):
        first_sample = int(rows.lower[y0])
        lower, upper = rows.lower[y0:y1] - first_sample, rows.upper[y0:y1] - first_sample
        fraction = rows.fraction[y0:y1]
        self.runs = []                          # (first row, count, row step, first sample, sample step, fraction)
        covered = np.zeros(y1 - y0, dtype=bool)
        if rows.period <= MAX_ROW_PHASES:
            for phase in range(min(rows.period, y1 - y0)):
                run = self.regular_run(lower[phase::rows.period], upper[phase::rows.period],
                                       fraction[phase::rows.period], rows.period_samples)
                if run is not None:
                    first, count = run
                    row = phase + first * rows.period
                    self.runs.append((row, count, rows.period, int(lower[row]), rows.period_samples,
                                      float(fraction[row])))
                    covered[row:row + (count - 1) * rows.period + 1:rows.period] = True
        rest = np.flatnonzero(~covered)
        self.rest = (torch.from_numpy(rest), torch.from_numpy(lower[rest]), torch.from_numpy(upper[rest]),
                     torch.from_numpy(fraction[rest])[None, :, None])

    @staticmethod
    def regular_run(lower: np.ndarray, upper: np.ndarray, fraction: np.ndarray, step: int):
        """The longest stretch (first, count) of one phase's rows with one fraction, upper = lower + 1 and
        lower growing by `step`; None when it is shorter than 2 rows."""
        regular = (upper == lower + 1) & (fraction == fraction[len(fraction) // 2])
        regular &= lower - step * np.arange(len(lower)) == (lower - step * np.arange(len(lower)))[len(lower) // 2]
        bounds = np.flatnonzero(np.diff(np.concatenate([[False], regular, [False]]).astype(np.int8)))
        if len(bounds) == 0:
            return None
        starts, ends = bounds[0::2], bounds[1::2]
        longest = int(np.argmax(ends - starts))
        count = int(ends[longest] - starts[longest])
        return (int(starts[longest]), count) if count >= 2 else None

    def apply(self, samples: torch.Tensor, mask_threshold: float, out: torch.Tensor) -> None:
        """samples (n, r, w) sample rows resized along x -> out (n, y1 - y0, w) bool."""
        for row, count, row_step, sample, sample_step, fraction in self.runs:
            target = out[:, row:row + (count - 1) * row_step + 1:row_step]
            lower = samples[:, sample:sample + (count - 1) * sample_step + 1:sample_step]
            if fraction == 0.0:
                binarise(lower, mask_threshold, target)
            else:
                upper = samples[:, sample + 1:sample + (count - 1) * sample_step + 2:sample_step]
                binarise(torch.lerp(lower, upper, fraction), mask_threshold, target)
        rows, lower, upper, fraction = self.rest
        if len(rows):
            out[:, rows] = binarise(torch.lerp(samples[:, lower], samples[:, upper], fraction), mask_threshold)


@functools.lru_cache(maxsize=64)
def row_blends(rows: AxisMap, y0: int, y1: int) -> RowBlends:
    """The row blends of a crop's rows (kept: a camera stream meets the same boxes again)."""
    return RowBlends(rows, y0, y1)


def paste_by_products(probs: torch.Tensor, rows: AxisMap, cols: AxisMap, box, mask_threshold: float,
                      out: torch.Tensor) -> None:
    """`paste_large_crops` as products with the bilinear weights: on the CPU by bands of BAND_PIXELS
    columns, then rows, each with only the samples its band reads (a product over the whole window would
    mostly multiply zeros); on a GPU, one product per axis."""
    x0, y0, x1, y1 = box
    a, b = (int(i) for i in rows.samples(y0, y1))
    band = BAND_PIXELS if probs.device.type == "cpu" else max(y1 - y0, x1 - x0)
    columns = torch.empty((len(probs), x1 - x0, b - a), dtype=probs.dtype, device=probs.device)   # (n, w, r)
    for start in range(x0, x1, band):
        end = min(start + band, x1)
        first, last = (int(i) for i in cols.samples(start, end))
        weights = band_weights(cols, start, end, first, last, probs.device)             # (band, c)
        torch.matmul(weights, probs[:, a:b, first:last].transpose(1, 2), out=columns[:, start - x0:end - x0])
    for start in range(y0, y1, band):
        end = min(start + band, y1)
        first, last = (int(i) for i in rows.samples(start, end))
        weights = band_weights(rows, start, end, first, last, probs.device)             # (band, r)
        binarise(weights @ columns[:, :, first - a:last - a].transpose(1, 2), mask_threshold,
                 out[:, start - y0:end - y0])


def band_weights(axis: AxisMap, start: int, end: int, first: int, last: int, device: torch.device) -> torch.Tensor:
    """(end - start, last - first) weights of the pixels [start, end) on the samples [first, last)."""
    weights = axis.weights(np.arange(start, end)[None], np.arange(first, last)[None])[0]
    return torch.from_numpy(weights).to(device)
