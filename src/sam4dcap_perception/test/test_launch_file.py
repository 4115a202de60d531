"""Execute launch/sam4dcap.launch.py without a ROS install and check it starts exactly the
nodes and parameters `sam4dcap graph` would.

launch/launch_ros are not installable here, so minimal stand-ins record what the launch file
asks of them (Node kwargs, declared arguments). The launch file is the thing under test; the
stand-ins only replace ROS's launch machinery. It runs in a subprocess in which
`sam4dcap_perception` cannot be imported, as under a system ROS Python outside the project
venv: graph.py must then come from the package's share folder.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from sam4dcap_biomech.config import default_config_path
from sam4dcap_perception import graph

ROOT = Path(__file__).resolve().parents[3]
LAUNCH = ROOT / "launch" / "sam4dcap.launch.py"

STUBS = {
    "launch/__init__.py": """
        class LaunchDescription:
            def __init__(self, entities):
                self.entities = entities
        """,
    "launch/actions.py": """
        class DeclareLaunchArgument:
            def __init__(self, name, default_value="", description=""):
                self.name, self.default_value, self.description = name, default_value, description
        class OpaqueFunction:
            def __init__(self, function):
                self.function = function
        """,
    "launch/substitutions.py": """
        class LaunchConfiguration:
            def __init__(self, name):
                self.name = name
            def perform(self, context):
                return context[self.name]
        """,
    "launch_ros/__init__.py": "",
    "launch_ros/actions.py": """
        class Node:
            def __init__(self, **kwargs):
                self.kwargs = kwargs
        """,
}

DRIVER = """
import importlib.abc, importlib.util, json, sys
class Block(importlib.abc.MetaPathFinder):  # as if the project venv were not on the path
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("sam4dcap_perception", "sam4dcap_biomech"):
            raise ImportError(name)
sys.meta_path.insert(0, Block())
spec = importlib.util.spec_from_file_location("launch_file", sys.argv[1])
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
desc = mod.generate_launch_description()
args = {e.name: e.default_value for e in desc.entities if hasattr(e, "default_value")}
args.update(json.loads(sys.argv[2]))
fn = [e for e in desc.entities if hasattr(e, "function")][0].function
print(json.dumps([n.kwargs for n in fn(args)]))
"""


def _run_launch(tmp_path, args):
    for rel, text in STUBS.items():
        path = tmp_path / "stubs" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "stubs"))
    out = subprocess.run([sys.executable, "-c", DRIVER, str(LAUNCH), json.dumps(args)],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_launch_starts_the_graph_nodes_with_the_graph_parameters(tmp_path):
    nodes = _run_launch(tmp_path, {"video": "walk.mp4", "height": "1.8", "mass": "75", "record": "bag"})
    options = graph.GraphOptions(video="walk.mp4", height_m=1.8, mass_kg=75.0, record="bag")
    selected = graph.selected_nodes(options)
    overrides = graph.node_overrides(options, selected)
    assert [n["name"] for n in nodes] == [n.name for n in selected]
    for launched, spec in zip(nodes, selected):
        assert launched["package"] == spec.package and launched["executable"] == spec.executable
        config, params = launched["parameters"]
        assert Path(config).resolve() == default_config_path().resolve()
        assert params == overrides[spec.name]
    assert overrides["ik_node"]["subject_height_m"] == 1.8


def test_launch_without_record_or_rviz_and_with_a_camera(tmp_path):
    nodes = _run_launch(tmp_path, {"camera": "0", "rviz": "true"})
    names = [n["name"] for n in nodes]
    assert "recorder_node" not in names and names[-1] == "rviz2"
    source = next(n for n in nodes if n["name"] == "video_source_node")["parameters"][1]
    assert source["source"] == "camera:0" and source["realtime"] is True
