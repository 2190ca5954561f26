"""FrameProcessor: image messages in, the node's output messages out, without a node (the node and the
recorded-data tools both use it)."""
import numpy as np
import pytest
from ros_harness import CLASS_NAMES, MIN_SIZE, scene_image
from sensor_msgs.msg import CameraInfo

from sparseinst_core.inference import load_predictor
from sparseinst_core.inference.label_image import label_instances
from sparseinst_ros.conversions import ImageConversionError, image_to_numpy, numpy_to_image, rgb_to_compressed
from sparseinst_ros.frame_processor import FrameProcessor

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def processor(weights_file):
    loaded = load_predictor(weights_file, min_size=MIN_SIZE, max_size=2 * MIN_SIZE, device="cpu", score_threshold=0.0)
    return FrameProcessor(loaded, max_instances=10)


def image_msg(seed, sec):
    msg = numpy_to_image(scene_image(seed=seed), "rgb8")
    msg.header.stamp.sec, msg.header.frame_id = sec, "camera"
    return msg


def test_outputs_carry_the_input_header_and_describe_the_predictors_result(processor):
    msgs = [image_msg(0, 1), image_msg(1, 2)]
    outputs = processor(msgs, overlay=True)
    assert [o.messages["detections"].header.stamp.sec for o in outputs] == [1, 2]
    for msg, output in zip(msgs, outputs):
        expected = label_instances(processor.model.predictor(scene_image(seed=msg.header.stamp.sec - 1)),
                                   max_instances=10)
        labels = image_to_numpy(output.messages["instance_mask"])
        np.testing.assert_array_equal(labels, expected.label_image)
        detections = output.messages["detections"].detections
        assert [int(d.id) for d in detections] == list(range(1, len(expected) + 1)) and 0 < len(expected) <= 10
        assert [int(d.results[0].hypothesis.class_id) for d in detections] == expected.class_ids.tolist()
        assert output.messages["overlay"].encoding == "rgb8"
        assert output.messages["overlay"].header.frame_id == "camera"
        assert output.image_size == labels.shape
    assert set(outputs[0].timings_ms) == {"decode", "inference", "outputs"}


def test_overlay_is_drawn_only_for_the_frames_that_ask_for_it(processor):
    watched, unwatched = processor([image_msg(0, 1), image_msg(1, 2)], overlay=[True, False])
    assert watched.messages["overlay"].encoding == "rgb8" and "overlay" not in unwatched.messages


def test_class_filter_camera_info_and_compressed_input(processor):
    msg = image_msg(0, 3)
    compressed = rgb_to_compressed(scene_image(seed=0), "png", msg.header)
    info = CameraInfo(header=msg.header, width=128, height=96)
    processor.allowed_classes = frozenset({1})
    try:
        raw, packed = processor([msg, compressed], [info, None])
    finally:
        processor.allowed_classes = None
    assert {d.results[0].hypothesis.class_id for d in raw.messages["detections"].detections} <= {"1"}
    assert raw.messages["camera_info"] is info and "camera_info" not in packed.messages
    assert "overlay" not in raw.messages                          # drawn only when asked for
    np.testing.assert_array_equal(image_to_numpy(raw.messages["instance_mask"]),
                                  image_to_numpy(packed.messages["instance_mask"]))   # PNG is lossless


def test_a_malformed_message_raises_the_conversion_error_naming_its_cause(processor):
    bad = image_msg(0, 4)
    bad.encoding = "32FC1"
    with pytest.raises(ImageConversionError) as error:
        processor([bad])
    assert error.value.cause == "unknown_encoding"
    assert CLASS_NAMES == processor.model.class_names
