"""Shared set-up of the ROS tests: an isolated DDS domain, the product's Fast DDS profile, rclpy, test weights."""
import os
import random

import pytest
from ros_harness import CLASS_NAMES, FASTDDS_PROFILE, MIN_SIZE

# Before rclpy creates any participant: a domain of our own (other test runs may share the machine), discovery
# on this host only, and the Fast DDS profile the product ships for camera-size images.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 100)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(FASTDDS_PROFILE)
os.environ.pop("FASTDDS_BUILTIN_TRANSPORTS", None)


@pytest.fixture(scope="session")
def ros():
    import rclpy
    rclpy.init()
    yield
    rclpy.try_shutdown()


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory):
    """A randomly initialised r18_giam checkpoint for 3 classes (names recorded in the file).

    A random network gives every query nearly the same class logits; the class bias is shifted by their
    mean on the test scene so that the detections of that scene span all three classes.
    """
    import torch
    from ros_harness import scene_image
    from sparseinst_core import Predictor, build_model, save_checkpoint
    torch.manual_seed(0)
    model = build_model("r18_giam", num_classes=len(CLASS_NAMES)).eval()
    predictor = Predictor(model, min_size=MIN_SIZE, max_size=2 * MIN_SIZE, device="cpu")
    with torch.no_grad():
        logits = model(predictor.batch([predictor.preprocess(scene_image())]))["pred_logits"][0]   # [100,C]
        model.decoder.inst_branch.cls_score.bias -= logits.mean(dim=0)
    return save_checkpoint(model, tmp_path_factory.mktemp("weights") / "random_r18.pth", class_names=CLASS_NAMES)
