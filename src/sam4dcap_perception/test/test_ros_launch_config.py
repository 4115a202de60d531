"""Launch file, RViz config and console scripts agree with graph.py (the one node/topic list).

launch_ros is not installed here: the launch file is compiled and checked to build its nodes
from graph.py; when launch_ros is importable its description is generated for real.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest
import yaml

from sam4dcap_biomech.config import load_config
from sam4dcap_perception import graph

ROOT = Path(__file__).resolve().parents[3]
LAUNCH = ROOT / "launch" / "sam4dcap.launch.py"
RVIZ = ROOT / "rviz" / "sam4dcap.rviz"
RVIZ_DISPLAY_TYPES = {"rviz_default_plugins/Image": "sensor_msgs/msg/Image",
                      "rviz_default_plugins/MarkerArray": "visualization_msgs/msg/MarkerArray",
                      "rviz_default_plugins/Marker": "visualization_msgs/msg/Marker"}


def console_scripts() -> dict[str, str]:
    scripts = {}
    for pkg in ("sam4dcap_perception", "sam4dcap_biomech"):
        text = (ROOT / "src" / pkg / "setup.py").read_text()
        for name, target in re.findall(r'"(\w+) = ([\w.]+):main"', text):
            scripts[name] = target
    return scripts


def test_every_graph_node_is_a_console_script_of_its_package():
    scripts = console_scripts()
    for n in graph.NODES:
        assert n.executable in scripts, f"{n.name} has no console script"
        assert scripts[n.executable] == f"{n.package}.nodes.{n.name}", n.name
    node_scripts = {s for s in scripts if s.endswith("_node")}
    assert node_scripts == {n.executable for n in graph.NODES}, "console scripts without a graph entry"


def test_every_graph_node_has_a_config_section():
    config = load_config()
    for n in graph.NODES:
        assert config.specs(n.name), n.name


def test_topics_are_published_by_their_declared_nodes():
    for t in graph.TOPICS:
        if t.name == graph.PROGRESS_TOPIC:
            assert all(t.name in n.publishes for n in graph.NODES if n.acks)
            continue
        if t.name == graph.READY_TOPIC:  # published by the nodes with announces_ready
            assert any(n.announces_ready for n in graph.NODES)
            continue
        if t.publisher == graph.EXTERNAL_PUBLISHER:  # a user or a GUI: some node must listen
            assert any(t.name in n.subscribes for n in graph.NODES), t.name
            continue
        if t.name == graph.DIAGNOSTICS_TOPIC:  # every node's health (node_plumbing.NodeDiagnostics)
            assert t.publisher == ""
            continue
        assert t.name in graph.node(t.publisher).publishes, f"{t.name} not in {t.publisher}.publishes"
        for n in graph.NODES:
            for s in n.subscribes:
                graph.topic(s)  # every subscription names a known topic


# What each node really publishes and subscribes is compared with graph.py on the running graph:
# test_ros_graph.test_running_nodes_publish_and_subscribe_what_graph_py_lists.


def test_launch_file_compiles_and_builds_nodes_from_graph_py():
    source = LAUNCH.read_text()
    tree = ast.parse(source)
    compile(tree, str(LAUNCH), "exec")
    funcs = {f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}
    assert "generate_launch_description" in funcs
    assert "graph.selected_nodes" in source and "graph.node_overrides" in source
    args = re.findall(r'\("(\w+)", "[^"]*", "', source)
    assert set(args) >= {"video", "camera", "height", "mass", "backend", "record", "rviz", "realtime", "person_id",
                         "params_file", "namespace"}


def test_launch_description_when_launch_ros_is_available():
    pytest.importorskip("launch_ros", reason="launch_ros is not installed in this venv (no ROS install)")
    spec = importlib.util.spec_from_file_location("sam4dcap_launch", LAUNCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.generate_launch_description().entities


def test_rviz_config_shows_topics_that_nodes_publish():
    doc = yaml.safe_load(RVIZ.read_text())
    displays = doc["Visualization Manager"]["Displays"]
    assert doc["Visualization Manager"]["Global Options"]["Fixed Frame"] == "world"
    shown = set()
    for d in displays:
        topic = (d.get("Topic") or {}).get("Value")
        if topic is None:
            continue
        assert not topic.startswith("/"), f"{topic}: relative, so RViz in a namespace shows that graph"
        topic = "/" + topic
        t = graph.topic(topic)  # KeyError: RViz shows a topic no node publishes
        assert t.msgtype == RVIZ_DISPLAY_TYPES[d["Class"]], f"{d['Name']}: {d['Class']} cannot show {t.msgtype}"
        assert topic in graph.node(t.publisher).publishes
        shown.add(topic)
    assert {"/camera/image_raw", "/sam4dcap/mask", "/sam4dcap/visualization"} <= shown
    assert any(d["Class"] == "rviz_default_plugins/TF" for d in displays), "frames display"
    ns = next(d for d in displays if d["Class"] == "rviz_default_plugins/MarkerArray")["Namespaces"]
    assert set(ns) == {"markers", "skeleton", "twin", "mesh"}


def test_frames_held_by_the_markers_node_are_not_awaited_from_ik_but_from_the_recorder():
    """Offline flow control: while markers_node holds its ground-plane window, the source may not
    wait for acks of those frames from ik_node (it never got them), but still from the recorder
    (it acks the images it wrote, which it reads from the source directly)."""
    assert graph.waits_on_held_frames("markers_node", "ik_node")
    assert not graph.waits_on_held_frames("markers_node", "recorder_node")
    assert not graph.waits_on_held_frames("markers_node", "body_estimator_node")
    assert graph.END_OF_STREAM_TOPIC in graph.node("video_source_node").publishes
    assert graph.END_OF_STREAM_TOPIC in graph.node("markers_node").subscribes
