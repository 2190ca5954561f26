"""Shared set-up of the ROS tests: an isolated DDS domain, the product's Fast DDS profile, rclpy, test weights."""
import hashlib
import os

import pytest
from ros_harness import CLASS_NAMES, MIN_SIZE

from sparseinst_ros.tools.processes import FASTDDS_PROFILE, product_environment

# Before rclpy creates any participant: a domain of our own (other test runs may share the machine), discovery
# on this host only, and the Fast DDS profile the product ships for camera-size images (whatever the shell says).
# The nodes under test inherit this environment.
os.environ.pop("FASTDDS_BUILTIN_TRANSPORTS", None)
os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(FASTDDS_PROFILE)
os.environ.update(product_environment(own_domain=True))


def worker_domain() -> str | None:
    """Under pytest-xdist, a domain for this worker alone: workers inherit the controller's environment (and with
    it a domain the controller may have picked), and two workers' nodes on one domain see each other's topics
    (a test that no node subscribes to its topic then fails). Workers of one run (one PYTEST_XDIST_TESTRUNUID)
    get consecutive domains from a base that differs between runs."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")                       # gw0, gw1, ...
    if worker is None:
        return None
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID", "")
    return str(1 + int(hashlib.sha256(run.encode()).hexdigest(), 16) % 80 + int(worker.removeprefix("gw")) % 20)


if worker_domain() is not None:
    os.environ["ROS_DOMAIN_ID"] = worker_domain()


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
