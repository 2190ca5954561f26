"""Files shipped inside the package: the demo model (r18_giam trained on generated shapes)."""
from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEMO_WEIGHTS_NAME = "demo_r18_synthetic"


def demo_weights_path() -> Path:
    """Path of the shipped demo checkpoint (safetensors preferred, .pth accepted)."""
    for suffix in (".safetensors", ".pth"):
        path = ASSETS / f"{DEMO_WEIGHTS_NAME}{suffix}"
        if path.is_file():
            return path
    raise FileNotFoundError(f"the demo model {ASSETS / DEMO_WEIGHTS_NAME}.safetensors is missing from this "
                            "installation; reinstall the package or pass your own weights")
