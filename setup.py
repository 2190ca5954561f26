"""One distribution, two Python packages: sparseinst_core (the library) and sparseinst_ros (the node).

Installed as the ROS 2 ament_python package `sparseinst_ros` by colcon, or into a venv by pip
(`make install`), where the console scripts land in `.venv/bin`.
"""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "sparseinst_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="SparseInst real-time instance segmentation: PyTorch library and ROS 2 node",
    license="MIT",
    maintainer="SparseInst ROS maintainers",
    maintainer_email="sparseinst-ros@example.com",
    python_requires=">=3.10",
    packages=find_packages(include=["sparseinst_core", "sparseinst_core.*", "sparseinst_ros", "sparseinst_ros.*"]),
    package_data={"sparseinst_core": ["assets/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz") + glob("config/*.xml")),
    ],
    install_requires=[
        "torch", "torchvision", "numpy", "pillow", "opencv-python-headless", "scipy", "pycocotools",
        "safetensors", "tqdm", "pyyaml", "rosbags",
    ],
    extras_require={
        "export": ["onnx", "onnxruntime"],
        "openvino": ["onnx", "openvino"],
        "train": ["tensorboard", "matplotlib"],
        "test": ["pytest", "pytest-timeout", "pytest-xdist", "psutil"],
    },
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "sparseinst_node = sparseinst_ros.node:main",
            "sparseinst_lifecycle_node = sparseinst_ros.lifecycle_node:main",
            "image_source = sparseinst_ros.tools.image_source:main",
            "sparseinst_demo_client = sparseinst_ros.tools.demo_client:main",
            "sparseinst_bag = sparseinst_ros.tools.bag.cli:main",
            "sparseinst-export = sparseinst_core.tools.export:main",
            "sparseinst-demo = sparseinst_core.tools.demo:main",
        ],
    },
)
