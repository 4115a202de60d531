"""Frames a live subscriber never saw, from the publisher's sequence numbers (ROS-free).

Live images travel with "newest frame wins" QoS (keep last 1, best effort): a node busier than
the camera works on the latest image and the older ones are dropped, never queued. The drops are
counted here from the publication sequence numbers the middleware reports with each message
(rclpy's MessageInfo `publication_sequence_number`, per publisher), so the node can report them
on /diagnostics. A restarted or new publisher starts its own count; without sequence numbers
(an rmw that does not report them) nothing is counted.
"""

from __future__ import annotations


class SkipCounter:
    """`observe(sequence_number, publisher)` per received message; `skipped` = messages the
    publisher sent in between that this subscriber never received."""

    def __init__(self):
        self.received = 0
        self.skipped = 0
        self._last: dict[str, int] = {}

    def observe(self, sequence_number: int | None, publisher=None) -> int:
        """Counts one received message; returns how many were skipped just before it."""
        self.received += 1
        if sequence_number is None:
            return 0
        key = repr(publisher)
        last = self._last.get(key)
        self._last[key] = int(sequence_number)
        if last is None or sequence_number <= last:     # first message, or a restarted publisher
            return 0
        gap = int(sequence_number) - last - 1
        self.skipped += gap
        return gap

    @property
    def skipped_share(self) -> float:
        total = self.received + self.skipped
        return self.skipped / total if total else 0.0
