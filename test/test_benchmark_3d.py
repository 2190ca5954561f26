"""The 3D and tracking benchmark's scoring (reused for the node's outputs) and a short run of the command."""
import json

import numpy as np
import pytest

from sparseinst_core.data.rgbd_sequences import GroundTruthObject
from sparseinst_core.scene import InstanceMask
from sparseinst_core.tools import benchmark_3d
from sparseinst_core.tools.benchmark_3d import (
    FrameOutput, OutputInstance, output_from_label_image, score_sequence, summarise,
)


class Frame:
    def __init__(self, stamp, objects):
        self.stamp, self.objects = stamp, objects


def truth(track_id: int, x: int, visible: float = 1.0, z: float = 2.0) -> GroundTruthObject:
    return GroundTruthObject(track_id, 0, np.ones((20, 20), bool), (x, 10), visible, np.array([0.0, 0.0, z]),
                             np.array([0.0, 0.0, z]))


def output(track_id: int, x: int, z: float | None = 2.0) -> OutputInstance:
    return OutputInstance(track_id, 0, InstanceMask(np.ones((20, 20), bool), x, 10),
                          None if z is None else np.array([0.0, 0.0, z]))


GROUND_TRUTH = [Frame(0.1 * i, [truth(1, 10 + 5 * i), truth(2, 100 - 5 * i)]) for i in range(6)]


def test_perfect_outputs_score_one():
    outputs = [FrameOutput(f.stamp, [output(7, 10 + 5 * i), output(9, 100 - 5 * i)])
               for i, f in enumerate(GROUND_TRUTH)]
    summary = summarise([score_sequence(GROUND_TRUTH, outputs)])
    assert summary["idf1"] == 1.0 and summary["mota"] == 1.0 and summary["id_switches"] == 0
    assert summary["gt_tracks"] == 2 and summary["frames"] == 6
    assert summary["centroid_error_median"] == 0.0


def test_swapped_ids_count_as_switches_and_lower_idf1():
    outputs = [FrameOutput(f.stamp, [output(7 if i < 3 else 9, 10 + 5 * i), output(9 if i < 3 else 7, 100 - 5 * i)])
               for i, f in enumerate(GROUND_TRUTH)]
    summary = summarise([score_sequence(GROUND_TRUTH, outputs)])
    assert summary["id_switches"] == 2 and summary["id_switches_per_20_tracks"] == 20.0
    assert summary["idf1"] == pytest.approx(0.5)


def test_misses_false_positives_and_centroid_errors_are_counted():
    outputs = [FrameOutput(f.stamp, [output(7, 10 + 5 * i, z=2.1), output(8, 300, z=None)])
               for i, f in enumerate(GROUND_TRUTH)]
    summary = summarise([score_sequence(GROUND_TRUTH, outputs)])
    assert summary["recall"] == 0.5 and summary["precision"] == 0.5
    assert summary["centroid_error_median"] == pytest.approx(0.1)


def test_barely_visible_objects_are_dont_care():
    frames = [Frame(0.0, [truth(1, 10), truth(2, 100, visible=0.1)])]
    with_hypothesis = summarise([score_sequence(frames, [FrameOutput(0.0, [output(5, 10), output(6, 100)])])])
    without = summarise([score_sequence(frames, [FrameOutput(0.0, [output(5, 10)])])])
    assert with_hypothesis["precision"] == without["recall"] == 1.0


def test_frames_without_an_output_are_not_scored():
    outputs = [FrameOutput(GROUND_TRUTH[i].stamp, [output(7, 10 + 5 * i), output(9, 100 - 5 * i)]) for i in (0, 2, 5)]
    summary = summarise([score_sequence(GROUND_TRUTH, outputs)])
    assert summary["frames"] == 3 and summary["idf1"] == 1.0


def test_the_node_outputs_read_from_a_label_image():
    labels = np.zeros((60, 200), np.uint16)
    labels[10:30, 10:30] = 41
    labels[10:30, 100:120] = 42
    frame_output = output_from_label_image(0.0, labels, {41: 0, 42: 0}, {41: np.array([0.0, 0.0, 2.0])})
    assert sorted(i.track_id for i in frame_output.instances) == [41, 42]
    summary = summarise([score_sequence(GROUND_TRUTH[:1], [frame_output])])
    assert summary["idf1"] == 1.0 and summary["matched_without_3d"] == 1


@pytest.mark.slow
def test_the_command_prints_and_writes_the_numbers(tmp_path, capsys):
    path = tmp_path / "numbers.json"
    assert benchmark_3d.main(["--sequences", "1", "--frames", "12", "--skip-model", "--cost-frames", "4",
                              "--json", str(path)]) == 0
    numbers = json.loads(path.read_text())
    assert {"a_tracker_on_ground_truth_masks_only", "a_tracker_on_ground_truth_with_3d",
            "b_geometry_on_ground_truth_masks", "d_cost_3d_and_tracking_640x480"} <= set(numbers)
    assert 0 <= numbers["a_tracker_on_ground_truth_with_3d"]["idf1"] <= 1
    assert numbers["b_geometry_on_ground_truth_masks"]["centroid_error_median_m"] < 0.05
    assert "(d) cost of 3D + tracking" in capsys.readouterr().out
