"""`sparseinst_bag` on bad input: damaged bags, missing topics, undecodable frames, existing outputs, invalid
parameters, and signals. Each gets a clear message and exit status 2 (usage) or 1 (failure), and leaves no
output, complete or partial, behind; frames that fail to decode are skipped, counted and named."""
import dataclasses
import signal
import struct
import subprocess
import sys
import time

import pytest
import yaml
from bag_fixtures import FRAME_PERIOD_NS, IMAGE_TOPIC, START_NS, write_bag, write_params_file
from rosbags.highlevel import AnyReader

from sparseinst_ros.tools.bag.cli import main
from sparseinst_ros.tools.processes import product_environment

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def params_file(weights_file, tmp_path_factory):
    return write_params_file(tmp_path_factory.mktemp("params") / "params.yaml", weights_file)


@pytest.fixture
def bag(tmp_path):
    write_bag(tmp_path / "in", "rgb8", count=3)
    return tmp_path / "in"


def run(bag, params_file, *extra, topic=IMAGE_TOPIC):
    return main(["run", str(bag), "--image-topic", topic, "--params-file", str(params_file), *extra])


def leftovers(folder, *keep):
    """Everything in `folder` but `keep`: outputs and partial outputs the command should not have left."""
    return sorted(path.name for path in folder.iterdir() if path.name not in keep)


def storage_file(bag):
    return next(path for path in bag.iterdir() if path.name != "metadata.yaml")


def truncate(bag):
    data = storage_file(bag).read_bytes()
    storage_file(bag).write_bytes(data[:len(data) // 2])


def break_third_frame_record(bag):
    """Give the MCAP record of the third frame an impossible length: the bag opens, reading it fails."""
    path = storage_file(bag)
    data = bytearray(path.read_bytes())
    timestamp = START_NS + 2 * FRAME_PERIOD_NS
    log_time = data.find(struct.pack("<QQ", timestamp, timestamp))      # log and publish time of the message
    record = log_time - 15                    # opcode, u64 length, u16 channel, u32 sequence, then log time
    assert data[record] == 0x05               # a Message record
    data[record + 1:record + 9] = struct.pack("<Q", 2**40)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage,storage,message", [
    (truncate, "mcap", "cannot read the bag"),
    (truncate, "sqlite3", "cannot read the bag"),
    (break_third_frame_record, "mcap", "is damaged: cannot read past message"),
])
def test_a_damaged_bag_fails_with_status_1_and_writes_nothing(tmp_path, params_file, capsys, damage, storage,
                                                              message):
    write_bag(tmp_path / "in", "rgb8", count=3, storage=storage, camera_info=False)   # damage met while writing
    damage(tmp_path / "in")
    assert run(tmp_path / "in", params_file, "--output", str(tmp_path / "out")) == 1
    assert message in capsys.readouterr().err
    assert leftovers(tmp_path, "in") == []


def test_not_a_bag_fails_and_a_missing_path_is_a_usage_error(tmp_path, params_file, capsys):
    (tmp_path / "notes.mcap").write_text("not a recording")
    assert run(tmp_path / "notes.mcap", params_file, "--output", str(tmp_path / "out")) == 1
    assert "cannot read the bag" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "nowhere")]) == 2
    assert f"no bag at {tmp_path / 'nowhere'}" in capsys.readouterr().err


def test_a_missing_topic_names_the_image_topics_that_exist(bag, params_file, capsys):
    assert run(bag, params_file, topic="/camera/color/image_raw") == 2
    error = capsys.readouterr().err
    assert "--image-topic /camera/color/image_raw: no such topic" in error
    assert "its image topics: /camera/image_raw (sensor_msgs/msg/Image)" in error
    assert run(bag, params_file, topic="/camera/camera_info") == 2
    assert "holds sensor_msgs/msg/CameraInfo, not sensor_msgs/msg/Image" in capsys.readouterr().err
    assert leftovers(bag.parent, "in") == []


def test_frames_that_fail_to_decode_are_skipped_counted_and_named(tmp_path, params_file, capsys):
    frames = write_bag(tmp_path / "in", "rgb8", count=4, corrupt={
        1: lambda m: dataclasses.replace(m, encoding="32FC1"),
        2: lambda m: dataclasses.replace(m, step=m.step - 1)})
    assert run(tmp_path / "in", params_file, "--output", str(tmp_path / "out")) == 0
    summary = capsys.readouterr().out
    assert "2 of 4 frames of /camera/image_raw processed" in summary
    assert "failed to decode: 2 frame(s), skipped (1 bad_step, 1 unknown_encoding)" in summary
    assert f"frame 1 (stamp {frames[1].sec}.{frames[1].nanosec:09d}): [unknown_encoding] unsupported image " \
           f"encoding '32FC1'" in summary
    assert f"frame 2 (stamp {frames[2].sec}.{frames[2].nanosec:09d}): [bad_step]" in summary
    with AnyReader([tmp_path / "out"]) as reader:
        timestamps = [t for c, t, _ in reader.messages() if c.topic == "/sparseinst_node/detections"]
    assert timestamps == [frames[0].timestamp, frames[3].timestamp]


def test_an_unknown_encoding_on_every_frame_fails_and_writes_nothing(tmp_path, params_file, capsys):
    write_bag(tmp_path / "in", "rgb8", count=2, corrupt={i: lambda m: dataclasses.replace(m, encoding="bayer_rggb8")
                                                         for i in range(2)})
    assert run(tmp_path / "in", params_file, "--output", str(tmp_path / "out")) == 1
    error = capsys.readouterr().err
    assert "none of the 2 frames of /camera/image_raw could be decoded (2 unknown_encoding)" in error
    assert "unsupported image encoding 'bayer_rggb8'; supported: rgb8, bgr8" in error
    assert leftovers(tmp_path, "in") == []


def test_an_existing_output_is_refused_unless_overwrite(bag, params_file, capsys):
    out = bag.parent / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert run(bag, params_file, "--output", str(out)) == 2
    assert f"{out} exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
    assert run(bag, params_file, "--output", str(out), "--overwrite") == 0
    assert sorted(p.name for p in out.iterdir()) == ["metadata.yaml", "out.mcap"]
    assert leftovers(bag.parent, "in", "out") == []


@pytest.mark.parametrize("parameters,message", [
    ({"score_threshold": 1.5}, "parameter 'score_threshold' is 1.5; expected 0.0..1.0"),
    ({"score_threshold": 1}, "parameter 'score_threshold' must be of type double, got integer 1"),
    ({"device": "gpu"}, "parameter 'device' is 'gpu'; expected one of auto, cuda, cpu"),
    ({"classes": ["hexagon"]}, "unknown class 'hexagon'"),
])
def test_parameter_values_the_node_would_refuse_are_usage_errors(bag, params_file, tmp_path, capsys, parameters,
                                                                 message):
    values = yaml.safe_load(params_file.read_text())
    values["/**"]["ros__parameters"].update(parameters)
    custom = tmp_path / "custom.yaml"
    custom.write_text(yaml.safe_dump(values))
    assert run(bag, custom, "--output", str(tmp_path / "out")) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_depth_flags_are_checked(bag, params_file, capsys):
    assert run(bag, params_file, "--depth-topic", IMAGE_TOPIC) == 2
    assert "--depth-topic and --depth-info-topic go together" in capsys.readouterr().err
    assert run(bag, params_file, "--depth-topic", "/camera/depth", "--depth-info-topic", "/camera/camera_info") == 2
    assert "--depth-topic /camera/depth: no such topic" in capsys.readouterr().err
    assert run(bag, params_file, "--depth-topic", IMAGE_TOPIC, "--depth-info-topic", "/camera/depth_info") == 2
    assert "--depth-info-topic /camera/depth_info: no such topic" in capsys.readouterr().err
    assert leftovers(bag.parent, "in") == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_run_and_leaves_nothing(tmp_path, params_file, signum):
    write_bag(tmp_path / "in", "rgb8", count=300)
    command = [sys.executable, "-m", "sparseinst_ros.bag", "run", str(tmp_path / "in"), "--image-topic", IMAGE_TOPIC,
               "--params-file", str(params_file), "--output", str(tmp_path / "out")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=product_environment())
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".out.partial-") for p in tmp_path.iterdir()) and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    time.sleep(0.2)                                     # the frames are being processed (300 take seconds)
    process.send_signal(signum)
    _, error = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, error
    assert f"interrupted by {signal.Signals(signum).name}; {tmp_path / 'out'} was not written" in error
    assert leftovers(tmp_path, "in") == []
