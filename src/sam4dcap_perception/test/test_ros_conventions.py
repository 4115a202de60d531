"""ROS 2 as a ROS engineer expects it (issue 12), with real processes: the package's share/
folder as ros2launch searches it, capture stamps per stamp_mode, a readiness announcement that
survives a lost message, and namespaces (two graphs in one ROS domain that do not see each
other)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from sam4dcap_perception import bag_io, graph
from sam4dcap_perception.graph_runner import start_node, stop_node

ROOT = Path(__file__).resolve().parents[3]


# --- item 1: share/ as ros2launch walks it -------------------------------------------------

def find_in_share(share: str, file_name: str) -> list[str]:
    """ros2launch.api.get_share_file_path_from_package: os.walk (which does not follow symlinked
    folders) over the package's share directory, matching file names."""
    found = []
    for root, _dirs, files in os.walk(share):
        found += [os.path.join(root, f) for f in files if f == file_name]
    return found


def test_launch_files_are_found_the_way_ros2launch_finds_them():
    from ament_index_python.packages import get_package_share_directory

    share = get_package_share_directory("sam4dcap_perception")
    for name in ("sam4dcap.launch.py", "rviz.launch.py", "sam4dcap.yaml", "sam4dcap.rviz"):
        found = find_in_share(share, name)
        assert len(found) == 1, f"{name}: found {found} in {share} (ros2launch needs exactly one)"
        assert Path(found[0]).resolve().read_bytes() == next(ROOT.glob(f"*/{name}")).read_bytes()
    assert (Path(share) / "graph.py").is_file()


# --- item 6: stamps ------------------------------------------------------------------------

def stream_stamps(video: Path, tmp: Path, n: int, **params) -> tuple[list[float], float]:
    """Start the source with `params`, return the first n CameraInfo stamps and the ROS time
    (wall clock) when the first one arrived."""
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo

    from sam4dcap_biomech.ros.probe import BackgroundNode

    probe = BackgroundNode(f"probe_stamps_{os.getpid()}")
    got: list[tuple[float, float]] = []
    probe.node.create_subscription(CameraInfo, graph.CAMERA_INFO_TOPIC,
                                   lambda m: got.append((m.header.stamp.sec + m.header.stamp.nanosec * 1e-9,
                                                         time.time())), qos_profile_sensor_data)
    proc = start_node("video_source_node", {"source": str(video), **params}, log_dir=tmp)
    try:
        deadline = time.monotonic() + 60
        while len(got) < n and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop_node(proc)
        probe.close()
    assert len(got) >= n, proc.tail(20)
    return [s for s, _ in got[:n]], got[0][1]


def test_realtime_file_stamps_are_ros_time_at_capture(demo_video, tmp_path):
    """Realtime replay (default stamp_mode auto): stamp = ROS time of the first frame + the
    container offset, so `now - stamp` is the latency, not 56 years."""
    stamps, first_arrival = stream_stamps(demo_video, tmp_path, 20, realtime=True)
    assert abs(first_arrival - stamps[0]) < 5.0, f"first stamp {stamps[0]:.3f} vs arrival {first_arrival:.3f}"
    np.testing.assert_allclose(np.diff(stamps), 1 / 60, atol=2e-3)   # the container's 60 fps offsets


def test_container_stamps_when_asked(demo_video, tmp_path):
    stamps, _ = stream_stamps(demo_video, tmp_path, 10, realtime=True, stamp_mode="container")
    assert stamps[0] < 1.0, "container time from the start of the file"
    np.testing.assert_allclose(np.diff(stamps), 1 / 60, atol=2e-3)


def test_offline_runs_keep_container_time(demo_video, tmp_path):
    """Offline (the default for files) the results line up with the file's own times."""
    from sensor_msgs.msg import Image

    from sam4dcap_biomech.ros.probe import BackgroundNode

    probe = BackgroundNode(f"probe_offline_{os.getpid()}")
    got = []
    probe.node.create_subscription(Image, graph.IMAGE_TOPIC, lambda m: got.append(m.header.stamp), 30)
    proc = start_node("video_source_node", {"source": str(demo_video), "end_s": 0.1}, log_dir=tmp_path)
    try:
        assert proc.proc.wait(60) == 0, proc.tail(20)
        deadline = time.monotonic() + 10   # (frames delivered, maybe not yet taken by the probe's thread)
        while len(got) < 7 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop_node(proc)
        probe.close()
    assert len(got) == 7 and got[0].sec == 0 and got[0].nanosec == 0


def test_realtime_bag_replay_is_restamped_in_ros_time(tmp_path):
    """A bag recorded offline (container stamps from 0) replayed in realtime: images and their
    CameraInfos get ROS time, their offsets and pairing kept."""
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import CameraInfo

    from sam4dcap_biomech.ros.msg_conversion import sec_to_stamp
    from sam4dcap_perception.nodes.image_conversion import numpy_to_image

    bag = tmp_path / "bag"
    with bag_io.BagWriter(bag) as w:
        w.add_topic(graph.IMAGE_TOPIC, "sensor_msgs/msg/Image")
        w.add_topic(graph.CAMERA_INFO_TOPIC, "sensor_msgs/msg/CameraInfo")
        for i in range(12):
            stamp = sec_to_stamp(i / 30)
            img = numpy_to_image(np.full((48, 64, 3), i, np.uint8), "rgb8", stamp=stamp, frame_id="camera_optical_frame")
            info = CameraInfo()
            info.header.stamp, info.header.frame_id, info.width, info.height = stamp, "camera_optical_frame", 64, 48
            w.write(graph.IMAGE_TOPIC, i, serialize_message(img))
            w.write(graph.CAMERA_INFO_TOPIC, i, serialize_message(info))
    stamps, first_arrival = stream_stamps(bag, tmp_path / "logs", 8, realtime=True)
    assert abs(first_arrival - stamps[0]) < 5.0, f"first stamp {stamps[0]:.3f} vs arrival {first_arrival:.3f}"
    np.testing.assert_allclose(np.diff(stamps), 1 / 30, atol=1e-6)


# --- item 9: readiness survives a lost announcement ------------------------------------------

def test_ready_announcement_is_repeated(tmp_path):
    """A reader that missed the first announcement (volatile, joins late) still gets one."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo
    from std_msgs.msg import String

    from sam4dcap_biomech.ros.node_plumbing import READY_REPEAT_S
    from sam4dcap_biomech.ros.probe import BackgroundNode

    probe = BackgroundNode(f"probe_ready_{os.getpid()}")
    info_pub = probe.node.create_publisher(CameraInfo, graph.CAMERA_INFO_TOPIC, 10)
    proc = start_node("markers_node", {}, log_dir=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while "ready: all input subscriptions exist" not in proc.log_path.read_text():
            assert time.monotonic() < deadline and proc.proc.poll() is None, proc.tail(20)
            info_pub.publish(CameraInfo())
            time.sleep(0.1)
        late: list[str] = []
        # volatile: only announcements sent after this reader exists
        probe.node.create_subscription(String, graph.READY_TOPIC, lambda m: late.append(m.data),
                                       QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        deadline = time.monotonic() + 10 * READY_REPEAT_S + 10
        while not late and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop_node(proc)
        probe.close()
    assert late and late[0].split()[0] == "markers_node", late


# --- item 10: namespaces ---------------------------------------------------------------------

def test_two_graphs_in_one_domain_do_not_see_each_other(demo_video, tmp_path):
    """`sam4dcap graph --namespace` twice at once on the same clip: each bag holds its own 13
    frames (not 26), each graph's acks gate only its own source, JointState on its own topic."""
    runs = {}
    for ns in ("left", "right"):
        cmd = [sys.executable, "-m", "sam4dcap_perception.cli", "graph", "--video", str(demo_video),
               "--namespace", ns, "--height", "1.7", "--mass", "70", "--record", str(tmp_path / ns / "bag"),
               "--log-dir", str(tmp_path / ns / "logs"), "--set", "video_source_node.end_s=0.2",
               "--set", f"trial_writer_node.output_dir={tmp_path / ns / 'trials'}"]
        runs[ns] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env=os.environ.copy())
    outs = {}
    for ns, proc in runs.items():
        try:
            outs[ns] = proc.communicate(timeout=400)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, outs[ns][1][-3000:]
    for ns in runs:
        topics = bag_io.bag_topics(tmp_path / ns / "bag")
        assert topics[graph.IMAGE_TOPIC].count == 13, f"{ns}: {topics[graph.IMAGE_TOPIC].count} images"
        assert topics[graph.MARKERS_TOPIC].count == 13
        assert topics[graph.joint_states_topic(1)].count >= 12
        log = (tmp_path / ns / "logs" / "video_source_node.log").read_text()
        assert f"/{ns}/video_source_node" in log or f"[{ns}.video_source_node]" in log, log[:500]
