"""ros2 launch sam4dcap_perception sam4dcap.launch.py video:=walk.mp4 height:=1.75 [mass:=70]
   [camera:=0] [backend:=blazepose] [record:=out/bag] [rviz:=true]

The nodes, their parameters and the frame-ack wiring come from sam4dcap_perception.graph (the
same definitions `sam4dcap graph` runs) on top of config/sam4dcap.yaml, so a launch and a
`sam4dcap graph` run start identical nodes with identical parameters.
"""

import importlib.util
import os
import sys

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

ARGUMENTS = (
    ("video", "", "video file, image folder or rosbag2 (mcap) folder"),
    ("camera", "", "camera device index (instead of video)"),
    ("height", "", "subject height [m]"),
    ("mass", "", "subject mass [kg]"),
    ("backend", "", "body estimator backend: blazepose | sam3d"),
    ("record", "", "record every topic to this new rosbag2 (mcap) folder"),
    ("rviz", "false", "start RViz with rviz/sam4dcap.rviz"),
)


def _share(*parts):
    from ament_index_python.packages import get_package_share_directory

    return os.path.join(get_package_share_directory("sam4dcap_perception"), *parts)


def _graph_module():
    try:
        from sam4dcap_perception import graph
        return graph
    except ImportError:
        # ros2 launch runs in a system ROS Python (numpy-1 builds) while our packages live in
        # the project venv (numpy 2, for opensim): graph.py is stdlib-only and is installed
        # beside launch/ in the package's share folder, so load it from there.
        spec = importlib.util.spec_from_file_location("sam4dcap_graph", _share("graph.py"))
        graph = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = graph
        spec.loader.exec_module(graph)
        return graph


def _nodes(context):
    graph = _graph_module()
    arg = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    options = graph.GraphOptions(
        video=arg["video"], camera=int(arg["camera"]) if arg["camera"] else None,
        height_m=float(arg["height"]) if arg["height"] else None,
        mass_kg=float(arg["mass"]) if arg["mass"] else None,
        backend=arg["backend"] or None, record=arg["record"])
    config = os.environ.get("SAM4DCAP_CONFIG") or _share("config", "sam4dcap.yaml")
    selected = graph.selected_nodes(options)
    overrides = graph.node_overrides(options, selected)
    actions = [Node(package=n.package, executable=n.executable, name=n.name, output="screen",
                    parameters=[config, overrides[n.name]])
               for n in selected]
    if arg["rviz"].lower() in ("true", "1", "yes"):
        actions.append(Node(package="rviz2", executable="rviz2", name="rviz2",
                            arguments=["-d", _share("rviz", "sam4dcap.rviz")]))
    return actions


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=doc) for name, default, doc in ARGUMENTS]
        + [OpaqueFunction(function=_nodes)])
