"""The post-processing benchmark runs end to end and reports what it measured (no timing is asserted)."""
import json

from sparseinst_core.tools import benchmark_postprocess


def test_quick_run_reports_agreement_speed_and_the_large_frame(tmp_path, capsys):
    output = tmp_path / "postprocess.json"
    assert benchmark_postprocess.main(["--quick", "--clock", "cpu", "--json", str(output)]) == 0
    results = json.loads(output.read_text())
    demo = results["agreement"]["demo model"][0]
    assert demo["instances"] == 100 and demo["same_scores"] and demo["same_labels"]
    assert demo["set_outside_crops"] == 0 and demo["differing_fraction"] < 1e-4
    speed = results["speed"][0]
    assert {"network", "post before (trained)", "post after (trained)", "e2e after (random)"} <= set(speed)
    probes = {(probe["workload"], probe["when"]): probe for probe in results["large_frame"]}
    assert set(probes) == {(w, when) for w in ("demo", "r18_giam@128") for when in ("before", "after")}
    assert all(probe["instances"] == 100 and probe["post_peak_growth_mib"] >= 0 for probe in probes.values())
    printed = capsys.readouterr().out
    assert "## Agreement" in printed and "| r18_giam 128 torch fp32 |" in printed and "random weights" in printed
