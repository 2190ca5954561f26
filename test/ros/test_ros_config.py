"""config/sparseinst.yaml lists every node parameter with the node's own default."""
from pathlib import Path

import pytest
import yaml

from sparseinst_ros.parameters import PARAMETERS

pytestmark = pytest.mark.ros

CONFIG = Path(__file__).resolve().parents[2] / "config" / "sparseinst.yaml"


def test_config_lists_every_parameter_with_its_default():
    values = yaml.safe_load(CONFIG.read_text())["/**"]["ros__parameters"]
    assert set(values) == set(PARAMETERS)
    for name, spec in PARAMETERS.items():
        assert values[name] == (spec.default if spec.default is not None else []), name
