"""rosbag2 (mcap) writing and reading without ROS tooling, via `rosbags` (ROS-free core module).

The bags are ordinary rosbag2 bags: a folder with `<name>.mcap` and `metadata.yaml`
(`ros2 bag info/play`, Foxglove and the independent `mcap` + `mcap-ros2-support` readers open
them). Our custom types are registered in the rosbags typestore from the package's .msg files,
so every channel carries its full `ros2msg` schema.

Crash safety: `BagWriter.flush()` (the recorder calls it every `flush_period_s`) closes the
current mcap chunk and flushes it to the OS, so a recorder killed with SIGKILL leaves every
message up to the last flush in the file; `recover_bag()` turns such a truncated bag (no mcap
summary, no metadata.yaml) into a complete one. `open_bag()`/`read_messages()` call it
automatically when metadata.yaml is missing or the mcap is cut short (no end magic).
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import sys
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator

from sam4dcap_biomech.errors import Sam4dcapError

from .observations import CameraIntrinsics, Frame

log = logging.getLogger(__name__)

MSGS_PACKAGE = "sam4dcap_msgs"


def msgs_definition_dir() -> Path:
    """Folder of the installed sam4dcap_msgs .msg files (share/sam4dcap_msgs/msg)."""
    candidates = []
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory(MSGS_PACKAGE)) / "msg")
    except Exception:  # noqa: BLE001 - not on the ament index: try the venv and the checkout
        pass
    candidates.append(Path(sys.prefix) / "share" / MSGS_PACKAGE / "msg")
    candidates.append(Path(__file__).resolve().parents[2] / MSGS_PACKAGE / "msg")
    for c in candidates:
        if c.is_dir() and any(c.glob("*.msg")):
            return c
    raise Sam4dcapError(f"cannot find the {MSGS_PACKAGE} .msg files (looked in {', '.join(map(str, candidates))})")


@lru_cache(maxsize=1)
def typestore():
    """rosbags typestore: ROS 2 Kilted types + every sam4dcap_msgs message."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for path in sorted(msgs_definition_dir().glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"{MSGS_PACKAGE}/msg/{path.stem}"))
    store.register(types)
    return store


@dataclass(frozen=True)
class TopicQos:
    """The QoS a topic was offered with (stored in the bag so `ros2 bag play` re-offers it)."""
    reliable: bool = True
    transient_local: bool = False
    depth: int = 10


def _rosbags_qos(q: TopicQos):
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    never = QosTime(sec=9223372036, nsec=854775807)
    return Qos(history=QosHistory.KEEP_LAST, depth=q.depth,
               reliability=QosReliability.RELIABLE if q.reliable else QosReliability.BEST_EFFORT,
               durability=QosDurability.TRANSIENT_LOCAL if q.transient_local else QosDurability.VOLATILE,
               deadline=never, lifespan=never, liveliness=QosLiveliness.AUTOMATIC,
               liveliness_lease_duration=never, avoid_ros_namespace_conventions=False)


class BagWriter:
    """A rosbag2 mcap bag being written; thread-safe (a signal handler may close it).

    `write()` takes the CDR bytes as received from a raw subscription: no re-serialization.
    """

    def __init__(self, path: str | os.PathLike):
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.path = Path(path)
        if self.path.exists():
            raise Sam4dcapError(f"bag folder {self.path} exists already: choose a new --record folder")
        self._lock = threading.Lock()
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        try:
            self._writer.open()
        except OSError as exc:  # read-only, no permission, full disk, parent is a file
            raise Sam4dcapError(f"cannot create bag folder {self.path}: {exc.strerror or exc}") from None
        self._connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.closed = False

    def add_topic(self, topic: str, msgtype: str, qos: TopicQos = TopicQos()) -> None:
        with self._lock:
            if topic in self._connections:
                return
            self._connections[topic] = self._writer.add_connection(
                topic, msgtype, typestore=typestore(), offered_qos_profiles=[_rosbags_qos(qos)])
            self.counts[topic] = 0

    def write(self, topic: str, time_ns: int, cdr: bytes | memoryview) -> None:
        with self._lock:
            if self.closed:
                return
            self._writer.write(self._connections[topic], int(time_ns), cdr)
            self.counts[topic] += 1

    def flush(self) -> None:
        """Make everything written so far survive a SIGKILL (closes the pending mcap chunk)."""
        with self._lock:
            if self.closed:
                return
            storage: Any = self._writer.storage
            # rosbags has no public flush: its mcap storage writes a chunk when it passes 1 MB.
            # Closing the pending chunk early keeps the file a valid (summary-less) mcap stream.
            if getattr(storage, "chunk", None) is not None and storage.chunk.bio.tell() > 0:
                storage.close_chunk()
            bio = getattr(storage, "bio", None)
            if bio is not None:
                bio.flush()

    def close(self) -> None:
        """Write the mcap summary and metadata.yaml. Idempotent."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self._writer.close()
        log.info("bag %s closed: %s", self.path, ", ".join(f"{t}={n}" for t, n in self.counts.items()))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _mcap_file(bag: Path) -> Path:
    if bag.is_file() and bag.suffix == ".mcap":
        return bag
    files = sorted(bag.glob("*.mcap"))
    if not files:
        raise Sam4dcapError(f"{bag}: not a rosbag2 mcap bag (no .mcap file)")
    return files[0]


_MCAP_MAGIC = b"\x89MCAP0\r\n"


def _mcap_complete(bag: Path) -> bool:
    """A closed bag's mcap ends with the mcap magic; a file cut short (copy, full disk) does not."""
    files = sorted(bag.glob("*.mcap"))
    if not files:
        return True   # not ours to judge: the reader names the problem
    with files[0].open("rb") as f:
        f.seek(max(files[0].stat().st_size - len(_MCAP_MAGIC), 0))
        return f.read() == _MCAP_MAGIC


def recover_bag(path: str | os.PathLike) -> Path:
    """Complete a bag whose recorder was killed: re-write the readable messages of its mcap.

    Reads the mcap as a stream up to the first truncated record, then writes a complete bag
    (summary + metadata.yaml) in place. Returns the bag folder. No-op for complete bags.
    """
    from mcap.exceptions import McapError
    from mcap.records import Channel, Message, Schema
    from mcap.stream_reader import StreamReader
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.rosbag2.storage_mcap import parse_qos

    bag = Path(path)
    if (bag / "metadata.yaml").is_file() and _mcap_complete(bag):
        return bag
    src = _mcap_file(bag)
    schemas: dict[int, Schema] = {}
    channels: dict[int, Channel] = {}
    messages: list[Message] = []
    try:
        with src.open("rb") as f:
            for record in StreamReader(f, emit_chunks=False).records:
                if isinstance(record, Schema):
                    schemas[record.id] = record
                elif isinstance(record, Channel):
                    channels[record.id] = record
                elif isinstance(record, Message):
                    messages.append(record)
    except (McapError, EOFError, ValueError, AssertionError, struct.error) as exc:  # truncated tail: expected
        log.info("%s: stream ends in a truncated record (%s): keeping %d messages", src, exc, len(messages))
    # rosbags names the mcap after its folder: write <tmp>/<bag.name>/<bag.name>.mcap, then move.
    tmp_root = bag.parent / f".{bag.name}.recovering"
    if tmp_root.exists():
        shutil.rmtree(tmp_root)
    tmp = tmp_root / bag.name
    writer = Writer(tmp, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    conns = {}
    for cid, ch in channels.items():
        schema = schemas[ch.schema_id]
        qos_text = ch.metadata.get("offered_qos_profiles", "")
        conns[cid] = writer.add_connection(
            ch.topic, schema.name, msgdef=schema.data.decode(), rihs01=_rihs01(schema.name),
            serialization_format=ch.message_encoding, offered_qos_profiles=parse_qos(qos_text) if qos_text else [])
    for m in messages:
        if m.channel_id in conns:
            writer.write(conns[m.channel_id], m.log_time, m.data)
    writer.close()
    src.unlink()
    for part in tmp.iterdir():
        part.replace(bag / part.name)
    shutil.rmtree(tmp_root)
    log.warning("recovered bag %s: %d messages on %d topics", bag, len(messages), len(conns))
    return bag


def _rihs01(msgtype: str) -> str:
    try:
        return typestore().hash_rihs01(msgtype)
    except Exception:  # noqa: BLE001 - unknown type: the hash is informational only
        return "RIHS01_" + "0" * 64


@dataclass(frozen=True)
class TopicInfo:
    name: str
    msgtype: str
    count: int


def bag_topics(path: str | os.PathLike) -> dict[str, TopicInfo]:
    """Topics of a bag with their types and message counts (from metadata.yaml)."""
    from rosbags.rosbag2 import Reader

    bag = recover_bag(path)
    with Reader(bag) as reader:
        return {c.topic: TopicInfo(c.topic, c.msgtype, c.msgcount) for c in reader.connections}


def read_messages(path: str | os.PathLike, topics: Iterable[str] | None = None, *,
                  deserialize: bool = True) -> Iterator[tuple[str, str, int, Any]]:
    """(topic, msgtype, log_time_ns, message) in log-time order.

    Messages are rosbags dataclasses (numeric arrays as numpy) when `deserialize`, else the
    raw CDR bytes (publishable as-is by an rclpy publisher).
    """
    from rosbags.rosbag2 import Reader

    bag = Path(path)
    if not bag.exists():
        raise Sam4dcapError(f"bag not found: {bag}")
    recover_bag(bag)
    wanted = set(topics) if topics is not None else None
    store = typestore()
    with Reader(bag) as reader:
        conns = [c for c in reader.connections if wanted is None or c.topic in wanted]
        if wanted is not None and not conns:
            have = ", ".join(sorted({c.topic for c in reader.connections}))
            raise Sam4dcapError(f"bag {bag} has none of the topics {', '.join(sorted(wanted))} (has: {have})")
        for conn, t_ns, raw in reader.messages(connections=conns):
            yield conn.topic, conn.msgtype, t_ns, (store.deserialize_cdr(raw, conn.msgtype) if deserialize else raw)


def stamp_ns(msg) -> int:
    """header.stamp of a deserialized (rosbags) message, in ns."""
    s = msg.header.stamp
    return int(s.sec) * 1_000_000_000 + int(s.nanosec)


_RGB_LAYOUT = {"rgb8": (3, (0, 1, 2)), "bgr8": (3, (2, 1, 0)), "rgba8": (4, (0, 1, 2)), "bgra8": (4, (2, 1, 0)),
               "mono8": (1, (0, 0, 0)), "8UC1": (1, (0, 0, 0)), "8UC3": (3, (0, 1, 2))}


def image_msg_to_rgb8(msg):
    """(H, W, 3) uint8 RGB of a deserialized (rosbags) sensor_msgs/Image; rgb8/bgr8/rgba8/bgra8/mono8."""
    import numpy as np

    if msg.encoding not in _RGB_LAYOUT:
        raise Sam4dcapError(f"bag image encoding {msg.encoding!r} is not an 8-bit colour/mono encoding "
                            f"({', '.join(_RGB_LAYOUT)})")
    channels, order = _RGB_LAYOUT[msg.encoding]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.asarray(msg.data, np.uint8)
    if step < w * channels or data.size < step * (h - 1) + w * channels:
        raise Sam4dcapError(f"bag image {w}x{h} {msg.encoding} has step {step} and {data.size} bytes: corrupt")
    rows = np.lib.stride_tricks.as_strided(data, (h, w, channels), (step, channels, 1))
    return np.ascontiguousarray(rows[:, :, list(order)])


def bag_frames(path: str | os.PathLike, *, topic: str = "/camera/image_raw", start_s: float = 0.0,
               end_s: float | None = None):
    """The images of a recorded bag as `observations.Frame`s (RGB), timed by their capture stamps
    (header.stamp, seconds as recorded). `start_s`/`end_s` are relative to the first image."""
    first = None
    index = 0
    for _, _, _, msg in read_messages(path, [topic]):
        t = stamp_ns(msg) * 1e-9
        first = t if first is None else first
        rel = t - first
        if rel < start_s - 1e-9:
            continue
        if end_s and rel > end_s + 1e-9:
            break
        yield Frame(index=index, time_s=t, image=image_msg_to_rgb8(msg), source=f"{path}:{topic}")
        index += 1


def bag_intrinsics(path: str | os.PathLike, *, topic: str = "/camera/camera_info"):
    """CameraIntrinsics of the first CameraInfo in the bag, or None when it has none."""
    topics = bag_topics(path)
    if topic not in topics or topics[topic].count == 0:
        return None
    for _, _, _, info in read_messages(path, [topic]):
        k = list(info.k)
        return CameraIntrinsics(int(info.width), int(info.height), k[0], k[4], k[2], k[5])
    return None
