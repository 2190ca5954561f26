"""Where training metrics go: OUT/metrics.jsonl (one JSON record per line), TensorBoard, and a PNG plot.

Only rank 0 creates a `MetricsLog`; records carry the 1-based iteration they describe, so a resumed run
first drops the records written after its checkpoint and then appends, and the file reads as one run.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

METRICS_JSONL = "metrics.jsonl"
CURVES_PNG = "training_curves.png"


def read_metrics(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricsLog:
    """Appends records to OUT/metrics.jsonl and mirrors numeric entries to TensorBoard (OUT/tensorboard)."""

    def __init__(self, output_dir: str | os.PathLike, start_iteration: int = 0, tensorboard: bool = True):
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.output_dir / METRICS_JSONL
        kept = [r for r in read_metrics(self.path) if r.get("iteration", 0) <= start_iteration]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(self.output_dir / "tensorboard"), purge_step=start_iteration + 1)

    def write(self, iteration: int, prefix: str = "", **values) -> None:
        """One record {"iteration": iteration, **values}; TensorBoard gets `prefix + name` scalars."""
        record = {"iteration": iteration, **values}
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for name, value in values.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(prefix + name, value, iteration)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def plot_curves(metrics_path: str | os.PathLike, output_path: str | os.PathLike) -> Path | None:
    """Loss terms (log scale) and mask AP against iterations, from a metrics.jsonl; None if it is empty."""
    import matplotlib
    matplotlib.use("Agg")   # files only, no display
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if r.get("segm/AP") is not None]
    if not train and not evals:
        return None
    figure, (loss_axis, ap_axis) = plt.subplots(1, 2, figsize=(12, 4.5))
    loss_names = ["loss"] + sorted({k for r in train for k in r if k.startswith("loss_")})
    for name in loss_names:
        points = [(r["iteration"], r[name]) for r in train if name in r and r[name] > 0]
        if points:
            loss_axis.plot(*zip(*points), label=name, linewidth=2.0 if name == "loss" else 1.0)
    loss_axis.set(xlabel="iteration", ylabel="loss (weighted total, unweighted terms)", yscale="log",
                  title="training losses")
    loss_axis.grid(alpha=0.3)
    loss_axis.legend()
    for name in ("segm/AP", "segm/AP50", "segm/AP75"):
        points = [(r["iteration"], r[name]) for r in evals if r.get(name) is not None]
        if points:
            ap_axis.plot(*zip(*points), marker="o", label=name)
    ap_axis.set(xlabel="iteration", ylabel="mask AP", ylim=(0, 1), title="validation mask AP")
    ap_axis.grid(alpha=0.3)
    if evals:
        ap_axis.legend()
    figure.tight_layout()
    output_path = Path(output_path)
    figure.savefig(output_path, dpi=100)
    plt.close(figure)
    return output_path
