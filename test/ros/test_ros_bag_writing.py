"""The writer thread of `sparseinst_bag run` hands its errors to the command, and the speed benchmark runs and
reports its comparison (on a tiny recording: the numbers themselves are measured by `make bench-bag`)."""
import re

import pytest
from bag_fixtures import write_params_file
from rosbags.highlevel import AnyReader
from sensor_msgs.msg import CameraInfo
from std_srvs.srv import SetBool

from sparseinst_ros.tools.bag import benchmark
from sparseinst_ros.tools.bag.writing import WriterThread

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]


def test_batches_are_written_in_order_and_completed_by_finish(tmp_path):
    writer = WriterThread(tmp_path / "out", "sqlite3")
    for timestamp in (10, 20, 30):
        writer.put(timestamp, [("/info", CameraInfo(width=timestamp))], [])
    writer.finish()
    with AnyReader([tmp_path / "out"]) as reader:
        assert [(t, reader.deserialize(raw, c.msgtype).width) for c, t, raw in reader.messages()] == \
            [(10, 10), (20, 20), (30, 30)]


def test_an_error_in_the_writer_thread_reaches_the_caller(tmp_path):
    writer = WriterThread(tmp_path / "out")
    writer.put(0, [("/request", SetBool.Request())], [])          # no type rosbags knows
    with pytest.raises(Exception, match="std_srvs/msg/SetBool_Request"):
        writer.finish()
    writer.stop()                                                  # what the command's clean-up does next


def test_the_benchmark_compares_run_with_the_predictor_round_by_round(weights_file, tmp_path, capsys):
    params = write_params_file(tmp_path / "params.yaml", weights_file)
    benchmark.main(["--frames", "2", "--rounds", "2", "--size", "128x96", "--params-file", str(params)])
    out = capsys.readouterr().out
    assert len(re.findall(r"round \d: predictor alone [\d.]+ frames/s, run [\d.]+ frames/s, ratio [\d.]+", out)) == 2
    assert re.search(r"median ratio of the rounds [\d.]+ \(target >= 0.9\)", out)
    assert re.search(r"read [\d.]+ ms, decode [\d.]+ ms, inference [\d.]+ ms, outputs [\d.]+ ms, write [\d.]+ ms", out)
