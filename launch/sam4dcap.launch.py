"""ros2 launch sam4dcap_perception sam4dcap.launch.py video:=walk.mp4 height:=1.75 [mass:=70]
   [camera:=0] [backend:=blazepose] [record:=out/bag] [realtime:=true] [person_id:=1]
   [params_file:=my_params.yaml] [namespace:=cam2] [rviz:=true] [without:=visualization_node]
   [one_process_perception:=true]

The nodes, their parameters and the frame-ack wiring come from sam4dcap_perception.graph (the
same definitions `sam4dcap graph` runs) on top of config/sam4dcap.yaml, so a launch and a
`sam4dcap graph` run start identical nodes with identical parameters.

* Each node gets its parameters as one dict (config file section, then the section of
  `params_file` if given, then the values of these arguments), which launch_ros writes under
  the `/**` key: the values apply in any namespace.
* `namespace:=cam2` starts every node in /cam2: its topics are /cam2/camera/image_raw, ...
  (nodes use relative names), so graphs in different namespaces share a ROS domain.
* The launch ends when the video source exits (a file or bag is finished) or when any node
  dies; then launch stops the others with SIGINT (each flushes: bag closed, trial written).
* Unknown arguments (a misspelt `hieght:=1.8`) are refused, not ignored.
* `rviz:=true` checks that rviz2 is installed before anything starts; RViz alone:
  `ros2 launch sam4dcap_perception rviz.launch.py`.
"""

import importlib.util
import os
import sys

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

ARGUMENTS = (
    ("video", "", "video file, image folder or rosbag2 (mcap) folder"),
    ("camera", "", "camera device index (instead of video)"),
    ("height", "", "subject height [m]"),
    ("mass", "", "subject mass [kg]"),
    ("backend", "", "body estimator backend: blazepose | sam3d"),
    ("record", "", "record every topic to this new rosbag2 (mcap) folder"),
    ("realtime", "", "true: pace a file at its capture times (frames may be skipped); "
                     "default: true for cameras, false for files"),
    ("person_id", "", "body id of the tracked person: /humans/bodies/body<ID>/joint_states"),
    ("params_file", "", "ROS 2 params file applied on top of config/sam4dcap.yaml (sections by node name)"),
    ("namespace", "", "ROS namespace of every node and topic (e.g. cam2)"),
    ("without", "", "optional nodes to leave out, comma-separated: visualization_node, trial_writer_node, id_node"),
    ("one_process_perception", "false", "true: video source and body estimator in one process (perception_process; "
                                        "frames handed over as arrays, not image messages)"),
    ("rviz", "false", "also start RViz with rviz/sam4dcap.rviz (needs rviz2)"),
)
TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no", "")


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


def _flag(name, value):
    if value.lower() in TRUE:
        return True
    if value.lower() in FALSE:
        return False
    raise RuntimeError(f"launch argument {name}:={value!r}: expected true or false")


def _number(name, value, kind):
    try:
        return kind(value) if value != "" else None
    except ValueError:
        raise RuntimeError(f"launch argument {name}:={value!r}: expected a {kind.__name__}") from None


def _sections(path, node_names, namespace):
    """{node: {param: value}} from a ROS 2 params file (keys: node, /node, /ns/node, /**)."""
    import yaml

    with open(path) as f:
        doc = yaml.safe_load(f) or {}
    out = {n: {} for n in node_names}
    for key, section in doc.items():
        params = (section or {}).get("ros__parameters", {}) or {}
        name = str(key).rstrip("/")
        for n in node_names:
            if name in ("/**", n, "/" + n, f"{namespace}/{n}", f"/**/{n}"):
                out[n].update(params)
    return out


def _nodes(context):
    graph = _graph_module()
    declared = {name for name, _, _ in ARGUMENTS}
    unknown = sorted(set(context.launch_configurations) - declared)
    if unknown:
        raise RuntimeError(f"unknown launch argument(s) {', '.join(unknown)}; known: {', '.join(sorted(declared))}")
    arg = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    realtime = _flag("realtime", arg["realtime"]) if arg["realtime"] else None
    options = graph.GraphOptions(
        video=arg["video"], camera=_number("camera", arg["camera"], int),
        height_m=_number("height", arg["height"], float), mass_kg=_number("mass", arg["mass"], float),
        backend=arg["backend"] or None, record=arg["record"], realtime=realtime,
        person_id=_number("person_id", arg["person_id"], int), namespace=arg["namespace"],
        without=tuple(arg["without"].split(",")) if arg["without"] else (),
        one_process_perception=_flag("one_process_perception", arg["one_process_perception"]))
    try:
        graph.check_without(options.without)
    except ValueError as exc:
        raise RuntimeError(f"launch argument without: {exc}") from None
    try:
        namespace = graph.normalize_namespace(options.namespace)
    except ValueError as exc:
        raise RuntimeError(f"launch argument namespace: {exc}") from None
    if not options.source:
        raise RuntimeError("no source: give video:=PATH (file, image folder or bag) or camera:=N")
    rviz = _flag("rviz", arg["rviz"])
    if rviz:
        _check_rviz2()
    selected = graph.selected_nodes(options)
    names = [n.name for n in selected]
    config = os.environ.get("SAM4DCAP_CONFIG") or _share("config", "sam4dcap.yaml")
    params = _sections(config, names, namespace)
    if arg["params_file"]:
        if not os.path.isfile(arg["params_file"]):
            raise RuntimeError(f"launch argument params_file:={arg['params_file']}: file not found")
        for n, p in _sections(arg["params_file"], names, namespace).items():
            params[n].update(p)
    overrides = graph.node_overrides(options, selected)
    actions = []
    together = [n for n in selected if options.one_process_perception and n.name in graph.PERCEPTION_PROCESS_NODES]
    if together:
        # One process, several nodes: no name remapping (it would rename both); the parameters
        # as a file with one section per node (a dict would go to every node of the process).
        node = Node(package=together[0].package, executable=graph.PERCEPTION_PROCESS, namespace=namespace or None,
                    output="screen", parameters=[_params_file({n.name: {**params[n.name], **overrides[n.name]}
                                                               for n in together})])
        actions.append(node)
        actions.append(RegisterEventHandler(OnProcessExit(target_action=node, on_exit=[
            EmitEvent(event=Shutdown(reason="video source finished"))])))
    for n in selected:
        if n in together:
            continue
        node = Node(package=n.package, executable=n.executable, name=n.name, namespace=namespace or None,
                    output="screen", parameters=[{**params[n.name], **overrides[n.name]}])
        actions.append(node)
        # The source ends the launch when its file is done; any other node ends it when it dies.
        reason = "video source finished" if n.name == "video_source_node" else f"{n.name} exited"
        actions.append(RegisterEventHandler(OnProcessExit(target_action=node, on_exit=[
            EmitEvent(event=Shutdown(reason=reason))])))
    if rviz:
        remaps = [("/tf", "tf"), ("/tf_static", "tf_static")] if namespace else []  # as rviz.launch.py
        actions.append(Node(package="rviz2", executable="rviz2", name="rviz2", namespace=namespace or None,
                            arguments=["-d", _share("rviz", "sam4dcap.rviz")], remappings=remaps))
    return actions


def _params_file(sections):
    """A params file (temporary, kept for the launch's life) with one `/**/<node>` section per
    node: the wildcard matches the node in any namespace."""
    import tempfile

    import yaml

    f = tempfile.NamedTemporaryFile("w", prefix="sam4dcap_perception_process_", suffix=".yaml", delete=False)
    with f:
        yaml.safe_dump({f"/**/{name}": {"ros__parameters": p} for name, p in sections.items()}, f)
    return f.name


def _check_rviz2():
    """Refuse rviz:=true before any node starts when rviz2 is not installed."""
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    try:
        get_package_prefix("rviz2")
    except PackageNotFoundError:
        raise RuntimeError("rviz:=true but the rviz2 package is not installed (apt install ros-$ROS_DISTRO-rviz2), "
                           "or leave rviz:=false and start RViz elsewhere") from None


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=doc) for name, default, doc in ARGUMENTS]
        + [OpaqueFunction(function=_nodes)])
