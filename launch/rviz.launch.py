"""ros2 launch sam4dcap_perception rviz.launch.py [namespace:=cam2]

RViz alone with rviz/sam4dcap.rviz (fixed frame `world`, z up): start it beside a running
graph (`sam4dcap.launch.py` or `sam4dcap graph`), on any machine of the ROS domain that has
rviz2. Kept apart from the graph's launch so a machine without rviz2 runs the graph.
"""

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def _rviz(context):
    from ament_index_python.packages import get_package_share_directory

    namespace = LaunchConfiguration("namespace").perform(context).strip("/")
    config = os.path.join(get_package_share_directory("sam4dcap_perception"), "rviz", "sam4dcap.rviz")
    # Nodes in a namespace publish relative names, TF included (as Nav2 does): remap RViz's.
    remaps = [("/tf", "tf"), ("/tf_static", "tf_static")] if namespace else []
    return [Node(package="rviz2", executable="rviz2", name="rviz2", namespace=namespace or None,
                 arguments=["-d", config], remappings=remaps)]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the graph to show"),
        OpaqueFunction(function=_rviz)])
