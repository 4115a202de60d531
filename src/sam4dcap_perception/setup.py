import os
from glob import glob

from setuptools import find_packages, setup

package_name = "sam4dcap_perception"
# The workspace-level launch/, config/ and rviz/ folders are installed with this package so
# `ros2 launch sam4dcap_perception sam4dcap.launch.py` finds them (colcon builds from here).
_top = os.path.join("..", "..")


def _top_files(folder, pattern):
    return sorted(glob(os.path.join(_top, folder, pattern)))


setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        # graph.py and the topic names it imports (both stdlib only) beside launch/: a system
        # ROS Python can load them (launch file).
        ("share/" + package_name, ["package.xml", package_name + "/graph.py",
                                   "../sam4dcap_biomech/sam4dcap_biomech/ros/topics.py"]),
        ("share/" + package_name + "/launch", _top_files("launch", "*.launch.py")),
        ("share/" + package_name + "/config", _top_files("config", "*.yaml") + _top_files("config", "*.xml")),
        ("share/" + package_name + "/rviz", _top_files("rviz", "*.rviz")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="sam4dcap developers",
    maintainer_email="dev@sam4dcap.invalid",
    description="sam4dcap perception core, nodes, graph runner and CLI",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "sam4dcap = sam4dcap_perception.cli:main",
            "video_source_node = sam4dcap_perception.nodes.video_source_node:main",
            "body_estimator_node = sam4dcap_perception.nodes.body_estimator_node:main",
            "perception_process = sam4dcap_perception.nodes.perception_process:main",
            "markers_node = sam4dcap_perception.nodes.markers_node:main",
            "visualization_node = sam4dcap_perception.nodes.visualization_node:main",
            "recorder_node = sam4dcap_perception.nodes.recorder_node:main",
        ],
    },
)
