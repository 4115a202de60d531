"""Offline flow control of a file/bag source by frame acks (the protocol; ROS-free).

The source (video_source_node) publishes a frame only while fewer than `max_queue_frames`
frames are un-acked by each stage it waits for. Stages ack every input (a Header on the
progress topic: stamp = the frame's capture stamp, frame_id = the node's name); acks are
watermarks (stamp <= t is done). A stage that holds frames back ("<node>/held" notices, e.g.
markers_node's ground-plane window) makes them not in flight to the stages downstream of it,
which cannot ack frames they were not sent, except in the final wait, which needs every ack.
A stage silent for `timeout_s` with frames pending is dropped (no longer waited for); a stage
that restarted has its backlog written off (to it and to everything downstream of it).

`FrameFlow` holds that state behind one condition variable: the ROS node feeds it acks from its
subscription callback and waits in it from its publishing thread. Graph facts (who is
downstream of whom) come from `graph.py`.
"""

from __future__ import annotations

import bisect
import threading
import time
from typing import Callable, Iterable

from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_biomech.ros.topics import HELD_SUFFIX

from . import graph

# While waiting, restarted stages are looked for at most this often [s].
RESTART_CHECK_PERIOD_S = 0.25
# The wait wakes at least this often to look at the stop flag and timeouts [s].
WAIT_SLICE_S = 0.1


class FrameFlow:
    def __init__(self, ack_nodes: Iterable[str], *, offline: bool, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.lock = threading.Condition()
        # node -> newest acked capture stamp [ns]; only nodes still waited for.
        self.acked_ns: dict[str, int] = {n: -1 for n in ack_nodes} if offline else {}
        self.held_ns: dict[str, int] = {}      # stage -> newest frame it holds back (not yet passed on)
        self.last_ack: dict[str, float] = {}   # node -> clock() of its newest ack
        self.published_ns: list[int] = []      # capture stamps published, increasing
        self.started = clock()
        self.last_publish = self.started

    # --- inputs -------------------------------------------------------------------------------
    def on_progress(self, frame_id: str, stamp_ns: int) -> None:
        """One message of the progress topic: an ack, or a held-frames notice."""
        with self.lock:
            if frame_id.endswith(HELD_SUFFIX):
                holder = frame_id[:-len(HELD_SUFFIX)]
                self.held_ns[holder] = max(self.held_ns.get(holder, -1), int(stamp_ns))
                self.lock.notify_all()
            elif frame_id in self.acked_ns:
                if stamp_ns > self.acked_ns[frame_id]:
                    self.acked_ns[frame_id] = int(stamp_ns)
                self.last_ack[frame_id] = self.clock()
                self.lock.notify_all()

    def published(self, stamp_ns: int) -> None:
        with self.lock:
            self.published_ns.append(int(stamp_ns))
            self.last_publish = self.clock()

    def wake(self) -> None:
        """Wake a waiting thread (a stop was requested)."""
        with self.lock:
            self.lock.notify_all()

    # --- state ----------------------------------------------------------------------------------
    def pending(self, node_name: str, *, count_held: bool = False) -> int:
        """Frames published but not yet acked by `node_name`. Frames held back upstream of it
        are not in flight to it unless `count_held`."""
        done = self.acked_ns[node_name]
        if not count_held:
            for holder, held in self.held_ns.items():
                if held > done and holder in graph.NODE_NAMES and graph.waits_on_held_frames(holder, node_name):
                    done = held
        return len(self.published_ns) - bisect.bisect_right(self.published_ns, done)

    def waiting(self, max_pending: int, *, count_held: bool = False) -> list[str]:
        return [n for n in self.acked_ns if self.pending(n, count_held=count_held) > max_pending]

    def write_off(self, node_name: str) -> int:
        """`node_name` restarted: the frames in flight to it (and to the nodes downstream of it)
        will never be acked. Returns how many it lost."""
        lost = self.pending(node_name, count_held=True)
        downstream = graph.downstream_of(node_name) if node_name in graph.NODE_NAMES else set()
        for m in {node_name} | downstream:
            if m in self.acked_ns and self.published_ns:
                self.acked_ns[m] = max(self.acked_ns[m], self.published_ns[-1])
        return lost

    # --- the wait -------------------------------------------------------------------------------
    def wait_for_acks(self, max_pending: int, timeout_s: float, *,
                      check_restarts: Callable[[list[str]], None] = lambda waiting: None,
                      stopped: Callable[[], bool] = lambda: False,
                      on_dropped: Callable[[str, float, int], None] = lambda name, timeout_s, pending: None) -> None:
        """Until every node still waited for has at most `max_pending` frames un-acked
        (`max_pending == 0`: the final wait, held frames count). `check_restarts(waiting)` is
        called under the lock every RESTART_CHECK_PERIOD_S (it may call `write_off`); a node
        that acked nothing for `timeout_s` (since its last ack or the last publish) is dropped
        and reported through `on_dropped(name, timeout_s, pending)`. Raises Sam4dcapError when
        `stopped()`."""
        count_held = max_pending == 0
        with self.lock:
            last_check = -float("inf")
            while True:
                waiting = self.waiting(max_pending, count_held=count_held)
                if not waiting:
                    return
                now = self.clock()
                if now - last_check > RESTART_CHECK_PERIOD_S:
                    last_check = now
                    check_restarts(waiting)
                    waiting = self.waiting(max_pending, count_held=count_held)
                    if not waiting:
                        return
                for n in waiting:
                    since = max(self.last_ack.get(n, self.started), self.last_publish)
                    if now - since > timeout_s:
                        on_dropped(n, timeout_s, self.pending(n))
                        del self.acked_ns[n]
                if stopped():
                    raise Sam4dcapError("shut down while waiting for downstream")
                self.lock.wait(timeout=WAIT_SLICE_S)
