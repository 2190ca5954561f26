"""`benchmark_node_3d` end to end on a tiny sequence: the node's pipeline with the demo model, both modes scored."""
import json

import pytest

from sparseinst_ros.tools import benchmark_node_3d

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]


def test_the_node_benchmark_scores_tracking_and_3d_in_both_modes(ros, tmp_path, capsys):
    assert benchmark_node_3d.main(["--sequences", "1", "--frames", "8", "--colour-size", "320", "240",
                                   "--json", str(tmp_path / "numbers.json")]) == 0
    printed = capsys.readouterr().out
    numbers = json.loads((tmp_path / "numbers.json").read_text())
    for mode in benchmark_node_3d.MODES:
        assert f"{mode}:" in printed and f"idf1: {numbers[mode]['idf1']:.4g}" in printed
        assert numbers[mode]["frames_offered"] == 8
        assert numbers[mode]["frames"] == numbers[mode]["frames_processed"]      # every processed frame scored
        assert numbers[mode]["centroid_errors"] > 0 and numbers[mode]["centroid_error_median"] < 0.05
    every_frame = numbers["every_frame"]
    assert every_frame["frames_processed"] == 8
    assert every_frame["recall"] > 0.9 and every_frame["idf1"] > 0.6 and every_frame["id_switches"] == 0
    assert 1 <= numbers["own_rate"]["frames_processed"] <= 8           # its own rate: no speed asserted
