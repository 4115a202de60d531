"""The node graph on a real video, each node its own process (real rclpy, real BlazePose + IK).

One recorded live run on the Pose2Sim demo clip (100 frames) is shared by the tests: message
counts per frame, monotonic capture stamps, the bag read back by rosbags AND by the independent
mcap + mcap-ros2-support reader, a replay of that bag through the graph giving the same joint
angles, a node killed and restarted mid-stream, and bad parameters refused by name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from sam4dcap_perception import bag_io, graph
from sam4dcap_perception.graph import GraphOptions
from sam4dcap_perception.graph_runner import GraphRun, start_node, stop_node

# The live run and the replay use the DEFAULT parameters (ground_window_s 1.5 s of a 1.65 s clip:
# the window's frames are published once the world frame is found). The restart test uses a
# short window so the kill falls after it.
SHORT_GROUND_WINDOW_S = 0.25
HEIGHT_M, MASS_KG = 1.70, 70.0
JOINT_STATES = graph.joint_states_topic(1)


def graph_options(video, tmp: Path, *, ground_window_s: float | None = None, **kw) -> GraphOptions:
    extra = {"trial_writer_node": {"output_dir": str(tmp / "trials")}}
    if ground_window_s is not None:
        extra["markers_node"] = {"ground_window_s": ground_window_s}
    return GraphOptions(video=str(video), height_m=HEIGHT_M, mass_kg=MASS_KG, extra=extra, **kw)


class EndpointWatch:
    """A probe in the test process that polls, while the graph runs, every graph node's
    publishers and subscriptions (topic, type) as the ROS graph reports them, and keeps the
    union (lazily made endpoints appear late). It also offers a Prompt publisher, as a GUI
    would, so the recorder subscribes to that topic too."""

    # Endpoints every rclpy node has, not part of the sam4dcap graph.
    STANDARD = {"/rosout", "/parameter_events"}

    def __init__(self, period_s: float = 0.5):
        from sam4dcap_biomech.ros.node_plumbing import RESULTS_QOS
        from sam4dcap_biomech.ros.probe import BackgroundNode
        from sam4dcap_msgs.msg import Prompt

        self.bg = BackgroundNode(f"endpoint_probe_{os.getpid()}")
        self.prompt_pub = self.bg.node.create_publisher(Prompt, graph.PROMPT_TOPIC, RESULTS_QOS)
        self.seen = {n: {"pub": set(), "sub": set()} for n in graph.NODE_NAMES}
        self.qos: dict[tuple[str, str], set] = {}   # (topic, publishing node) -> {(reliability, durability)}
        self._stop = threading.Event()
        self._period_s = period_s
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        node = self.bg.node
        while not self._stop.wait(self._period_s):
            for name, got in self.seen.items():
                for kind, query in (("pub", node.get_publisher_names_and_types_by_node),
                                    ("sub", node.get_subscriber_names_and_types_by_node)):
                    try:
                        endpoints = query(name, "/")
                    except Exception:  # noqa: BLE001 - that node is not (yet / any more) in the graph
                        continue
                    got[kind] |= {(topic, t) for topic, types in endpoints for t in types
                                  if topic not in self.STANDARD}
            for t in graph.TOPICS:
                for info in node.get_publishers_info_by_topic(t.name):
                    if info.node_name in self.seen:
                        self.qos.setdefault((t.name, info.node_name), set()).add(
                            (info.qos_profile.reliability, info.qos_profile.durability))

    def close(self) -> "EndpointWatch":
        self._stop.set()
        self.thread.join(5)
        self.bg.close()
        return self


@pytest.fixture(scope="module")
def live_run(demo_video, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("graph_live")
    options = graph_options(demo_video, tmp, record=str(tmp / "bag"))
    options.extra["id_node"] = {"enabled": True}   # every node with all its endpoints
    run = GraphRun(options, log_dir=tmp / "logs")
    watch = EndpointWatch()
    try:
        run.start()
        rc = run.wait(timeout_s=300)
    finally:
        watch.close()
    assert rc == 0, "graph failed:\n" + "\n".join(f"--- {n}\n{p.tail(8)}" for n, p in run.procs.items())
    return {"bag": tmp / "bag", "tmp": tmp, "run": run, "endpoints": watch.seen, "qos": watch.qos}


def test_running_nodes_publish_and_subscribe_what_graph_py_lists(live_run):
    """Each node process, as the ROS graph saw it while the graph ran, has exactly the publishers
    and subscriptions (topic and message type) graph.py lists for it (plus its health on
    /diagnostics and its readiness announcement), nothing more and nothing less."""
    seen = live_run["endpoints"]
    started = set(live_run["run"].procs)
    assert started == graph.NODE_NAMES

    def typed(topics):
        return {(t, graph.topic(t).msgtype) for t in topics}

    for spec in graph.NODES:
        publishes = set(spec.publishes) | {graph.DIAGNOSTICS_TOPIC}
        if spec.announces_ready:
            publishes.add(graph.READY_TOPIC)
        assert seen[spec.name]["pub"] == typed(publishes), (
            f"{spec.name} publishes: only running {sorted(seen[spec.name]['pub'] - typed(publishes))}, "
            f"only in graph.py {sorted(typed(publishes) - seen[spec.name]['pub'])}")
        assert seen[spec.name]["sub"] == typed(spec.subscribes), (
            f"{spec.name} subscribes: only running {sorted(seen[spec.name]['sub'] - typed(spec.subscribes))}, "
            f"only in graph.py {sorted(typed(spec.subscribes) - seen[spec.name]['sub'])}")


def test_publishers_offer_the_qos_of_their_topics_kind(live_run):
    """Each graph node's publisher offers the reliability and durability of its topic's QoS kind
    in graph.py (an offline run: images reliable too); depth is not visible in discovery."""
    from sam4dcap_biomech.ros.node_plumbing import qos_profile

    seen = live_run["qos"]
    assert {topic for topic, _ in seen} >= {t.name for t in graph.TOPICS if t.publisher != graph.EXTERNAL_PUBLISHER}
    for (topic, node_name), offered in seen.items():
        want = qos_profile(graph.topic(topic).qos, offline=True)
        assert offered == {(want.reliability, want.durability)}, (topic, node_name, offered)


def read_bag(bag: Path, topic: str):
    return [msg for _, _, _, msg in bag_io.read_messages(bag, [topic])]


def stamps_s(msgs) -> np.ndarray:
    return np.array([m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in msgs])


def test_every_frame_flows_through_the_graph(live_run, demo_video):
    bag = live_run["bag"]
    images = read_bag(bag, "/camera/image_raw")
    assert len(images) == 100, "offline mode must not drop frames"
    frame_stamps = stamps_s(images)
    assert np.all(np.diff(frame_stamps) > 0), "capture stamps must increase"
    np.testing.assert_allclose(np.diff(frame_stamps), 1 / 60, atol=2e-3)  # 60 fps container times
    for topic in ("/camera/camera_info", "/sam4dcap/segmentation", "/sam4dcap/keypoints", "/sam4dcap/markers"):
        msgs = read_bag(bag, topic)
        assert len(msgs) == 100, f"{topic}: {len(msgs)} messages for 100 frames"
        np.testing.assert_array_equal(stamps_s(msgs), frame_stamps, err_msg=topic)
    segs = read_bag(bag, "/sam4dcap/segmentation")
    assert sum(s.tracked for s in segs) >= 95
    assert segs[50].mask.height == 1920 and segs[50].mask.width == 1080 and segs[50].mask.encoding == "mono8"
    assert int(np.count_nonzero(segs[50].mask.data)) > 1000, "tracked person has a mask"


def test_joint_states_for_95_percent_of_frames_with_default_parameters(live_run):
    """Default parameters (the ground-plane window covers most of the clip): the window's frames
    still get markers and joint angles, published in capture-time order."""
    bag = live_run["bag"]
    frame_stamps = stamps_s(read_bag(bag, "/camera/image_raw"))
    markers = read_bag(bag, "/sam4dcap/markers")
    valid = [m for m in markers if np.isfinite(np.array([[p.x, p.y, p.z] for p in m.positions])).all(axis=1).sum() >= 8]
    assert len(valid) >= 95, f"{len(valid)} of 100 frames with markers"
    js = read_bag(bag, JOINT_STATES)
    kin = read_bag(bag, "/sam4dcap/joint_kinematics")
    assert len(js) >= 0.95 * len(frame_stamps), f"JointState for {len(js)} of {len(frame_stamps)} frames"
    # Frames without a usable pose: JointKinematics says so (state), and no JointState goes out.
    assert len([k for k in kin if k.state == k.STATE_VALID]) == len(js)
    assert all(np.isnan(k.position).all() for k in kin if k.state != k.STATE_VALID)
    t = stamps_s(js)
    assert np.all(np.diff(t) > 0), "JointState capture stamps must increase"
    assert set(t) <= set(stamps_s(valid)), "JointState stamps are capture stamps of marker frames"
    names = list(js[0].name)
    assert "knee_angle_r" in names and "hip_flexion_r" in names
    q = np.array([j.position for j in js])
    assert np.all(np.isfinite(q))
    knee = q[:, names.index("knee_angle_r")]
    assert np.all(np.abs(knee) < np.radians(160)), "radians, within the joint's anatomical range"


def test_every_node_reports_health_on_diagnostics(live_run):
    """/diagnostics (recorded): one status per node, levels OK/WARN/ERROR, processing times; the
    ik_node's carries its tracking state and fit residual."""
    arrays = read_bag(live_run["bag"], graph.DIAGNOSTICS_TOPIC)
    statuses = [s for a in arrays for s in a.status]
    # (the recorder's own status does not reach its own bag)
    others = {name for name in live_run["run"].procs if name != "recorder_node"}
    assert {f"sam4dcap/{name}" for name in others} <= {s.name for s in statuses}
    assert all(s.level in (0, 1, 2) and s.hardware_id == "sam4dcap" for s in statuses)
    ik = [{kv.key: kv.value for kv in s.values} for s in statuses if s.name == "sam4dcap/ik_node" and s.level == 0]
    assert ik and all(v["tracking"] == "valid" and float(v["marker_rms_m"]) < 0.1 for v in ik)
    assert any(float(v["processing_time_ms_mean"]) > 0 for v in ik)
    body = [s for s in statuses if s.name == "sam4dcap/body_estimator_node" and s.level == 0]
    assert body and {kv.key: kv.value for kv in body[-1].values}["tracking"] == "tracked"


def test_static_transform_and_types(live_run):
    bag = live_run["bag"]
    tfs = read_bag(bag, "/tf_static")
    assert len(tfs) == 1
    # REP-103: a z-up `world` for ROS users, OpenSim's y-up frame (the markers') a named child.
    zup, tf = tfs[0].transforms
    assert (zup.header.frame_id, zup.child_frame_id) == ("world", "opensim_world")
    q = zup.transform.rotation
    rot = quaternion_matrix(q)
    np.testing.assert_allclose(rot @ [0, 1, 0], [0, 0, 1], atol=1e-9, err_msg="OpenSim's y is the world's z")
    np.testing.assert_allclose(rot @ [1, 0, 0], [1, 0, 0], atol=1e-9, err_msg="x forward in both")
    assert (tf.header.frame_id, tf.child_frame_id) == ("opensim_world", "camera_optical_frame")
    q = tf.transform.rotation
    assert abs(q.x ** 2 + q.y ** 2 + q.z ** 2 + q.w ** 2 - 1) < 1e-6
    assert 0.2 < tf.transform.translation.y < 3.0, "camera height above the ground, y up"
    camera_height_in_world = (rot @ [tf.transform.translation.x, tf.transform.translation.y,
                                     tf.transform.translation.z])[2]
    assert 0.2 < camera_height_in_world < 3.0, "the same height along the z-up world's z"
    images = read_bag(bag, "/camera/image_raw")
    assert {m.header.frame_id for m in images} == {"camera_optical_frame"}
    assert {m.header.frame_id for m in read_bag(bag, "/sam4dcap/markers")} == {"opensim_world"}
    topics = bag_io.bag_topics(bag)
    for t in graph.TOPICS:
        if t.name in topics:
            assert topics[t.name].msgtype == t.msgtype


def quaternion_matrix(q) -> np.ndarray:
    x, y, z, w = q.x, q.y, q.z, q.w
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def test_joint_states_frame_and_velocity_are_always_filled(live_run):
    """Every JointState names its frame and has one velocity per joint: NaN where not yet
    estimable (the first frame), finite after it."""
    states = read_bag(live_run["bag"], JOINT_STATES)
    assert states
    assert {m.header.frame_id for m in states} == {"opensim_world"}
    assert all(len(m.velocity) == len(m.name) == len(m.position) for m in states)
    assert np.isnan(states[0].velocity).all(), "first frame: velocity unknown, NaN (not missing, not 0)"
    assert np.isfinite(states[len(states) // 2].velocity).all()


def test_per_body_tf_frames_follow_the_ik(live_run):
    """/tf carries every body of the IK model as body1_<body>, child of opensim_world, at the
    kinematics' stamps; the pelvis frame sits where IK put the pelvis."""
    bag = live_run["bag"]
    tfs = read_bag(bag, "/tf")
    kin = {(m.header.stamp.sec, m.header.stamp.nanosec): m for m in read_bag(bag, "/sam4dcap/joint_kinematics")}
    assert len(tfs) >= 0.9 * len(kin) > 0
    frames = {t.child_frame_id for m in tfs for t in m.transforms}
    assert {"body1_pelvis", "body1_femur_r", "body1_tibia_l", "body1_torso"} <= frames, sorted(frames)
    assert {t.header.frame_id for m in tfs for t in m.transforms} == {"opensim_world"}
    last = tfs[-1]
    k = kin[(last.transforms[0].header.stamp.sec, last.transforms[0].header.stamp.nanosec)]
    pelvis = next(t for t in last.transforms if t.child_frame_id == "body1_pelvis").transform.translation
    q = dict(zip(k.name, k.position))
    np.testing.assert_allclose([pelvis.x, pelvis.y, pelvis.z], [q["pelvis_tx"], q["pelvis_ty"], q["pelvis_tz"]],
                               atol=1e-6)


def test_bag_reads_back_with_the_independent_mcap_reader(live_run):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    bag = live_run["bag"]
    counts = {t: i.count for t, i in bag_io.bag_topics(bag).items()}
    (mcap_file,) = bag.glob("*.mcap")
    seen: dict[str, int] = {}
    first_image = None
    with mcap_file.open("rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            seen[channel.topic] = seen.get(channel.topic, 0) + 1
            assert schema.encoding == "ros2msg" and channel.message_encoding == "cdr"
            if channel.topic == "/camera/image_raw" and first_image is None:
                first_image = decoded
            if channel.topic == "/sam4dcap/keypoints" and seen[channel.topic] == 50:
                assert len(decoded.names) == 33 and decoded.skeleton == "blazepose33"
    assert seen == {t: n for t, n in counts.items() if n}, "both readers see the same messages"
    assert (first_image.height, first_image.width, first_image.encoding) == (1920, 1080, "rgb8")
    assert len(first_image.data) == 1920 * 1080 * 3
    meta = (bag / "metadata.yaml").read_text()
    assert "storage_identifier: mcap" in meta and "sam4dcap_msgs/msg/VirtualMarkers" in meta


def test_replay_of_the_bag_gives_the_same_joint_angles(live_run, tmp_path):
    bag = live_run["bag"]
    rec = tmp_path / "replay_bag"
    run = GraphRun(graph_options(bag, tmp_path, record=str(rec)), log_dir=tmp_path / "logs")
    run.params["recorder_node"]["topics"] = [JOINT_STATES, "/camera/image_raw"]
    run.start()
    assert run.wait(timeout_s=300) == 0
    live = {m.header.stamp.sec * 10**9 + m.header.stamp.nanosec: m for m in read_bag(bag, JOINT_STATES)}
    replay = {m.header.stamp.sec * 10**9 + m.header.stamp.nanosec: m for m in read_bag(rec, JOINT_STATES)}
    assert len(read_bag(rec, "/camera/image_raw")) == 100
    common = sorted(set(live) & set(replay))
    assert len(common) >= 0.95 * len(live)
    names = list(live[common[0]].name)
    rot = [i for i, n in enumerate(names) if not n.endswith(("_tx", "_ty", "_tz"))]
    diff = np.array([np.asarray(replay[t].position)[rot] - np.asarray(live[t].position)[rot] for t in common])
    rms_deg = float(np.degrees(np.sqrt(np.mean(diff ** 2))))
    assert rms_deg <= 0.5, f"replay differs from live by {rms_deg:.3f} deg RMS"


def test_markers_node_is_causal_on_a_live_stream(live_run, tmp_path):
    """Live source (best-effort CameraInfo, as from a camera): markers_node publishes each frame
    when it arrives, NaN during the ground-plane window (nothing published late), then markers;
    stamps in order. The recorded keypoints of the live run are played to it."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo
    from std_msgs.msg import String

    from sam4dcap_biomech.ros.node_plumbing import DEEP_QOS, LATCHED_QOS, RESULTS_QOS
    from sam4dcap_msgs.msg import BodyKeypoints, VirtualMarkers

    from rclpy.serialization import deserialize_message

    bag = live_run["bag"]
    raw = lambda topic, cls: [deserialize_message(bytes(m), cls)  # noqa: E731 - rclpy messages to publish
                              for _, _, _, m in bag_io.read_messages(bag, [topic], deserialize=False)]
    keypoints = raw("/sam4dcap/keypoints", BodyKeypoints)
    infos = raw("/camera/camera_info", CameraInfo)
    window_s = 0.5
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("test_live_markers", context=ctx)
    received, ready = [], []
    node.create_subscription(VirtualMarkers, "/sam4dcap/markers", received.append, DEEP_QOS)
    node.create_subscription(String, graph.READY_TOPIC, lambda m: ready.append(m.data), LATCHED_QOS)
    info_pub = node.create_publisher(CameraInfo, "/camera/camera_info", qos_profile_sensor_data)
    kp_pub = node.create_publisher(BodyKeypoints, "/sam4dcap/keypoints", RESULTS_QOS)
    proc = start_node("markers_node", {"subject_height_m": HEIGHT_M, "ground_window_s": window_s}, log_dir=tmp_path)

    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)

    def spin_until(cond, timeout_s):
        deadline = time.monotonic() + timeout_s
        while not cond() and time.monotonic() < deadline:
            assert proc.proc.poll() is None, proc.tail(20)
            executor.spin_once(timeout_sec=0.02)
        return cond()

    try:
        info_pub.publish(infos[0])
        assert spin_until(lambda: any(r.startswith("markers_node") for r in ready), 60), proc.tail(20)
        assert spin_until(lambda: kp_pub.get_subscription_count() > 0, 30)
        paced = 70
        for i, (info, kp) in enumerate(zip(infos[:paced], keypoints[:paced])):
            info_pub.publish(info)
            spin_until(lambda: False, 0.005)
            kp_pub.publish(kp)
            # Causal: this frame's markers come out before the next frame is sent.
            assert spin_until(lambda n=i: len(received) > n, 30), f"no markers for frame {i}"
        # A burst faster than the node: live, the newest waiting keypoints win (the others are
        # skipped, never queued), in capture order, and the last frame always gets its markers.
        for info, kp in zip(infos[paced:], keypoints[paced:]):
            info_pub.publish(info)
            kp_pub.publish(kp)
        last = keypoints[-1].header.stamp
        assert spin_until(lambda: received and received[-1].header.stamp == last, 60), \
            f"{len(received)} messages, not the last frame's"
    finally:
        stop_node(proc)
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    sent = np.array([k.header.stamp.sec + k.header.stamp.nanosec * 1e-9 for k in keypoints])
    got = stamps_s(received)
    assert np.array_equal(got[:paced], sent[:paced]), "one message per paced frame, in capture order"
    assert np.all(np.diff(got) > 0) and np.isin(got[paced:], sent[paced:]).all(), "burst: in order, no repeats"
    valid = np.array([np.isfinite([[q.x, q.y, q.z] for q in m.positions]).all(axis=1).sum() >= 8 for m in received])
    t = stamps_s(received) - stamps_s(received)[0]
    assert not valid[t < window_s - 0.02].any(), "live: no markers before the ground-plane window is complete"
    assert "ground-plane window" not in proc.log_path.read_text(), "live: the window's frames are not published late"
    assert valid[t >= window_s + 0.02].mean() >= 0.9, "markers once the world frame is known"


# --- a node killed mid-stream ---------------------------------------------------------------

class TopicWatcher:
    """Receive times of messages on some topics, in this process (own rclpy context)."""

    def __init__(self, topics: dict[str, type]):
        from sam4dcap_biomech.ros.node_plumbing import DEEP_QOS, RESULTS_QOS
        from sam4dcap_biomech.ros.probe import BackgroundNode

        self.bg = BackgroundNode("test_topic_watcher", spin_period_s=0.05)
        self.node = self.bg.node
        self.received: dict[str, list[tuple[float, object]]] = {t: [] for t in topics}
        for t, cls in topics.items():
            qos = DEEP_QOS if t == "/sam4dcap/markers" else RESULTS_QOS
            self.node.create_subscription(cls, t, lambda m, t=t: self.received[t].append((time.monotonic(), m)), qos)

    def close(self):
        self.bg.close()


def test_killed_and_restarted_node_recovers(demo_video, tmp_path):
    from sensor_msgs.msg import JointState

    from sam4dcap_msgs.msg import VirtualMarkers

    watcher = TopicWatcher({"/sam4dcap/markers": VirtualMarkers, JOINT_STATES: JointState})
    run = GraphRun(graph_options(demo_video, tmp_path, ground_window_s=SHORT_GROUND_WINDOW_S), log_dir=tmp_path / "logs")
    try:
        run.start()
        deadline = time.monotonic() + 120
        while len(watcher.received[JOINT_STATES]) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(watcher.received[JOINT_STATES]) >= 10, "graph never produced joint states"
        victim = run.procs["markers_node"]
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)
        t_kill = time.monotonic()
        n_markers_before = len(watcher.received["/sam4dcap/markers"])
        run.procs["markers_node"] = start_node("markers_node", run.params["markers_node"],
                                               log_dir=tmp_path / "logs_restart", env=None)
        rc = run.wait(timeout_s=180)
        assert rc == 0, run.procs["video_source_node"].tail()
        source_log = run.procs["video_source_node"].log_path.read_text()
        assert "no longer waiting" not in source_log, "the graph stalled after the restart:\n" + source_log[-1500:]
    finally:
        watcher.close()
    markers_after = [(t, m) for t, m in watcher.received["/sam4dcap/markers"][n_markers_before:] if t > t_kill]
    valid_after = [(t, m) for t, m in markers_after
                   if np.isfinite([[p.x, p.y, p.z] for p in m.positions]).all(axis=1).sum() >= 8]
    assert valid_after, "restarted markers node published no valid markers"
    t_first_valid = valid_after[0][0]
    js_after = [t for t, _ in watcher.received[JOINT_STATES] if t >= t_first_valid]
    assert js_after, "IK never recovered after the markers node restarted"
    recovery_s = js_after[0] - t_first_valid
    print(f"restart: first valid markers {t_first_valid - t_kill:.2f} s after the kill, "
          f"JointState {recovery_s * 1000:.0f} ms after them")
    assert recovery_s <= 1.0, f"downstream recovered {recovery_s:.2f} s after the restarted node's first markers"
    # The source waited for the restarted node: frames after the restart all got markers.
    assert len(markers_after) >= 20


# --- bad parameters -------------------------------------------------------------------------

@pytest.mark.parametrize("node_name, params, expected", [
    ("markers_node", {"subject_height_m": 9.0}, "markers_node.subject_height_m"),
    ("video_source_node", {"source": "/nonexistent/walk.mp4"}, "/nonexistent/walk.mp4"),
    ("video_source_node", {"source": "x.mp4", "max_queue_frames": 0}, "video_source_node.max_queue_frames"),
    ("recorder_node", {"bag_dir": ""}, "recorder_node.bag_dir"),
    ("recorder_node", {"bag_dir": "/tmp/unused_bag_dir", "topics": ["/no/such/topic"]}, "recorder_node.topics"),
    ("visualization_node", {"marker_diameter_m": -1.0}, "visualization_node.marker_diameter_m"),
    ("body_estimator_node", {"backend": "openpose"}, "body_estimator_node.backend"),
])
def test_bad_parameter_refuses_to_start_naming_it(node_name, params, expected, tmp_path):
    np_ = start_node(node_name, params, log_dir=tmp_path)
    try:
        rc = np_.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        stop_node(np_)
        pytest.fail(f"{node_name} started with bad parameters {params}")
    out = np_.log_path.read_text()
    assert rc == 2, f"{node_name} exit code {rc}:\n{out[-2000:]}"
    assert expected in out, out[-2000:]
    assert "Traceback" not in out


def test_graph_cli_refuses_bad_parameter_before_starting(demo_video, tmp_path):
    out = subprocess.run([sys.executable, "-m", "sam4dcap_perception.cli", "graph", "--video", str(demo_video),
                          "--set", "markers_node.subject_height_m=9", "--log-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert out.returncode == 2, out.stderr
    assert "markers_node.subject_height_m" in out.stderr
    assert not list(tmp_path.glob("*.log")), "no node may start"


def test_visualization_draws_markers_and_the_ik_twin(live_run):
    """One MarkerArray per marker frame, plus the IK model's twin per JointKinematics: one simple
    shape per model body (body_poses.BodyPoser), placed where the markers are (the thigh and
    shank cylinders end near the knee markers)."""
    from visualization_msgs.msg import Marker

    bag = live_run["bag"]
    vis = read_bag(bag, "/sam4dcap/visualization")
    markers = {m.header.stamp.sec * 10**9 + m.header.stamp.nanosec: m for m in read_bag(bag, "/sam4dcap/markers")}
    kin = read_bag(bag, "/sam4dcap/joint_kinematics")
    ns_of = lambda arr: {m.ns for m in arr.markers}  # noqa: E731
    with_markers = [a for a in vis if "markers" in ns_of(a)]
    twins = [a for a in vis if ns_of(a) == {"twin"}]
    assert len(with_markers) == 100 and len(twins) == len([k for k in kin if k.state == k.STATE_VALID]) > 50
    checked = 0
    for arr in twins[10:]:
        stamp = arr.markers[0].header.stamp.sec * 10**9 + arr.markers[0].header.stamp.nanosec
        vm = markers[stamp]
        pos = {n: np.array([p.x, p.y, p.z]) for n, p in zip(vm.names, vm.positions)}
        bodies = {m.text: m for m in arr.markers}
        assert len(bodies) >= 18 and all(m.header.frame_id == "opensim_world" for m in arr.markers)
        assert {m.type for m in arr.markers} <= {Marker.CYLINDER, Marker.CUBE, Marker.SPHERE}
        assert bodies["pelvis"].type == Marker.CUBE and bodies["femur_r"].type == Marker.CYLINDER
        for body, marker in (("femur_r", "right_knee"), ("tibia_r", "right_knee"),
                             ("femur_l", "left_knee"), ("tibia_l", "left_knee")):
            m = bodies[body]
            centre = np.array([m.pose.position.x, m.pose.position.y, m.pose.position.z])
            q = m.pose.orientation
            axis = np.array([2 * (q.x * q.z + q.w * q.y), 2 * (q.y * q.z - q.w * q.x), 1 - 2 * (q.x ** 2 + q.y ** 2)])
            ends = [centre + axis * m.scale.z / 2, centre - axis * m.scale.z / 2]  # cylinder along its z
            if np.all(np.isfinite(pos[marker])):
                gap = min(np.linalg.norm(e - pos[marker]) for e in ends)
                assert gap < 0.15, f"{body} ends {ends} far from {marker} {pos[marker]}"
                checked += 1
    assert checked > 100


@pytest.mark.parametrize("one_process", [False, True], ids=["process_per_node", "one_process_perception"])
def test_graph_cli_processes_a_short_clip_and_exits_0(demo_video, tmp_path, one_process):
    """`sam4dcap graph` end to end on 0.5 s, shorter than the ground-plane window: at the end of
    the stream the world frame is fixed from the frames received; every frame recorded, joint
    angles for >= 95% of them, trial files written. With --one-process-perception the video
    source and the body estimator share one process (frames handed over as arrays) and the
    images are still published for the recorder, the only other node that reads them."""
    bag = tmp_path / "bag"
    out = subprocess.run([sys.executable, "-m", "sam4dcap_perception.cli", "graph", "--video", str(demo_video),
                          "--height", "1.7", "--mass", "70", "--record", str(bag), "--log-dir", str(tmp_path / "logs"),
                          "--set", "video_source_node.end_s=0.5",
                          "--set", f"trial_writer_node.output_dir={tmp_path / 'trials'}"]
                         + (["--one-process-perception"] if one_process else []),
                         capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    logs = {p.name for p in (tmp_path / "logs").glob("*.log")}
    if one_process:
        text = (tmp_path / "logs" / "perception_process.log").read_text()
        assert "video_source_node.log" not in logs and "body_estimator_node.log" not in logs, logs
        assert "[video_source_node]" in text and "frames in-process from the video source" in text, text[-2000:]
    else:
        assert {"video_source_node.log", "body_estimator_node.log"} <= logs and "perception_process.log" not in logs
    recorded = out.stdout.rsplit("recorded ", 1)[-1].strip().split(", ")
    assert "/camera/image_raw 31" in recorded and "/camera/camera_info 31" in recorded, out.stdout
    topics = bag_io.bag_topics(bag)
    assert topics["/camera/image_raw"].count == 31 and topics["/sam4dcap/markers"].count == 31
    assert topics[JOINT_STATES].count >= 0.95 * 31, f"JointState for {topics[JOINT_STATES].count} of 31 frames"
    written = sorted(p.suffix for p in (tmp_path / "trials").rglob("*") if p.is_file())
    assert ".trc" in written and ".mot" in written, written


@pytest.mark.parametrize("one_process", [False, True], ids=["process_per_node", "one_process_perception"])
def test_an_unreadable_image_in_a_bag_is_reported_once_and_the_graph_goes_on(tmp_path, one_process):
    """A bag whose 4th image has an encoding no estimator reads (yuv422): one error line naming
    that frame, the frame is acked (the source does not wait for it), the other frames go
    through, exit code 0: with a process per node and with the image path in one process."""
    from sam4dcap_perception.bag_io import BagWriter, typestore

    store = typestore()
    Image = store.types["sensor_msgs/msg/Image"]
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    bag = tmp_path / "bag"
    with BagWriter(bag) as w:
        w.add_topic("/camera/image_raw", "sensor_msgs/msg/Image")
        for i in range(8):
            bad = i == 3
            data = np.full((96, 128, 2 if bad else 3), 60 + 10 * i, np.uint8)
            msg = Image(header=Header(stamp=Time(sec=1, nanosec=i * 33_333_333), frame_id="cam"), height=96,
                        width=128, encoding="yuv422" if bad else "rgb8", is_bigendian=0, step=128 * (2 if bad else 3),
                        data=data.ravel())
            w.write("/camera/image_raw", 1_000_000_000 + i * 33_333_333,
                    bytes(store.serialize_cdr(msg, "sensor_msgs/msg/Image")))
    out = subprocess.run([sys.executable, "-m", "sam4dcap_perception.cli", "graph", "--video", str(bag),
                          "--height", "1.7", "--log-dir", str(tmp_path / "logs"),
                          "--set", f"trial_writer_node.output_dir={tmp_path / 'trials'}"]
                         + (["--one-process-perception"] if one_process else []),
                         capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "all 8 published frames have their results" in out.stderr, out.stderr[-3000:]
    log = (tmp_path / "logs" / ("perception_process.log" if one_process else "body_estimator_node.log")).read_text()
    errors = [line for line in log.splitlines() if "[ERROR]" in line and "body_estimator_node" in line]
    assert len(errors) == 1 and "1.100 s" in errors[0] and "yuv422" in errors[0], errors or log[-2000:]
