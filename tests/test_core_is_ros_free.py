"""Core modules never import rclpy: only `nodes/` (and the graph runner) may."""

import pkgutil
import subprocess
import sys

import sam4dcap_biomech
import sam4dcap_perception

# Modules that are ROS adapters by design.
ROS_SIDE = ("nodes", "ros", "graph_runner", "commands.graph", "cli")


def _core_modules():
    for pkg in (sam4dcap_biomech, sam4dcap_perception):
        for mod in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            rel = mod.name.split(".", 1)[1]
            if not rel.startswith(ROS_SIDE):
                yield mod.name


def test_core_modules_do_not_import_rclpy():
    mods = sorted(_core_modules())
    assert "sam4dcap_biomech.timeseries" in mods
    code = ("import sys, importlib\n"
            f"bad = []\nfor m in {mods!r}:\n"
            "    importlib.import_module(m)\n"
            "    if 'rclpy' in sys.modules:\n"
            "        bad.append(m); break\n"
            "print(','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core module imports rclpy: {out.stdout.strip()}"
