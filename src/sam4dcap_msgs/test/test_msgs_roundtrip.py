"""Every sam4dcap message and service crosses real process boundaries intact.

A separate process (msgs_echo_peer.py, its own rclpy context and DDS participant) echoes each
message type back and serves each service; this test publishes fully populated samples
(msg_samples.sample: every field non-default) and compares what comes back field by field.
The type list is read from the package's msg/ and srv/ folders, so a new message is covered
without editing this file.
"""

from __future__ import annotations

import importlib
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from msg_samples import sample  # noqa: E402

PKG_DIR = Path(__file__).resolve().parents[1]
MSG_TYPES = sorted(f"sam4dcap_msgs/msg/{p.stem}" for p in (PKG_DIR / "msg").glob("*.msg"))
SRV_TYPES = sorted(f"sam4dcap_msgs/srv/{p.stem}" for p in (PKG_DIR / "srv").glob("*.srv"))
# The TFMessage shim (scripts/ros_shims) is what the markers node publishes on /tf_static.
EXTRA_MSG_TYPES = ["tf2_msgs/msg/TFMessage"]
QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
TIMEOUT_S = 20.0


def load_type(name: str):
    pkg, kind, cls = name.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), cls)


@pytest.fixture(scope="module")
def peer():
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("msgs_echo_peer.py")),
                             *MSG_TYPES, *EXTRA_MSG_TYPES, *SRV_TYPES],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    line = proc.stdout.readline()
    assert line.strip() == "ready", f"echo peer failed to start: {line!r}"
    yield proc
    proc.stdin.close()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def ros():
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("msgs_roundtrip_test", context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    yield node, executor
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=ctx)


def echo(ros, type_name: str, msg):
    """Publish `msg` to the peer until its echo arrives; return the echoed message."""
    node, executor = ros
    cls = load_type(type_name)
    short = type_name.split("/")[-1]
    received = []
    sub = node.create_subscription(cls, f"/roundtrip/out/{short}", received.append, QOS)
    pub = node.create_publisher(cls, f"/roundtrip/in/{short}", QOS)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        next_send = 0.0
        while not received and time.monotonic() < deadline:
            if time.monotonic() >= next_send:
                pub.publish(msg)
                next_send = time.monotonic() + 0.5
            executor.spin_once(timeout_sec=0.05)
    finally:
        node.destroy_publisher(pub)
        node.destroy_subscription(sub)
    assert received, f"{type_name}: no echo within {TIMEOUT_S} s"
    return received[0]


def test_type_lists_are_complete():
    assert len(MSG_TYPES) == 9 and len(SRV_TYPES) == 3, (MSG_TYPES, SRV_TYPES)


@pytest.mark.parametrize("type_name", MSG_TYPES + EXTRA_MSG_TYPES)
def test_message_round_trips_across_processes(peer, ros, type_name):
    cls = load_type(type_name)
    sent = sample(cls, seed=3)
    assert sent != cls(), "sample must differ from the default message"
    back = echo(ros, type_name, sent)
    assert type(back) is cls
    for field in cls.get_fields_and_field_types():
        assert getattr(back, field) == getattr(sent, field), f"{type_name}.{field} changed in transit"
    assert back == sent


def test_nan_marks_missing_markers_across_processes(peer, ros):
    """Missing markers/keypoints are NaN on the wire (never zeros): NaN must survive transport."""
    from geometry_msgs.msg import Point
    from sam4dcap_msgs.msg import VirtualMarkers

    sent = sample(VirtualMarkers, seed=5)
    sent.positions = [Point(x=0.1, y=1.2, z=-0.3), Point(x=math.nan, y=math.nan, z=math.nan)]
    back = echo(ros, "sam4dcap_msgs/msg/VirtualMarkers", sent)
    assert (back.positions[0].x, back.positions[0].y, back.positions[0].z) == (0.1, 1.2, -0.3)
    assert all(math.isnan(v) for v in (back.positions[1].x, back.positions[1].y, back.positions[1].z))


@pytest.mark.parametrize("type_name", SRV_TYPES)
def test_service_call_round_trips_across_processes(peer, ros, type_name):
    node, executor = ros
    cls = load_type(type_name)
    client = node.create_client(cls, f"/roundtrip/srv/{type_name.split('/')[-1]}")
    try:
        assert client.wait_for_service(timeout_sec=TIMEOUT_S), f"{type_name}: service not found"
        future = client.call_async(sample(cls.Request, seed=1))
        executor.spin_until_future_complete(future, timeout_sec=TIMEOUT_S)
        assert future.done(), f"{type_name}: no response within {TIMEOUT_S} s"
        response = future.result()
    finally:
        node.destroy_client(client)
    # The peer answers seed=1 only when the request arrived equal to what was sent.
    assert response == sample(cls.Response, seed=1)
    assert response != sample(cls.Response, seed=2) or cls.Response.get_fields_and_field_types() == {}
