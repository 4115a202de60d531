"""A probe node for tests and benchmarks: watch a running graph from your own process."""

from __future__ import annotations

import threading

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions


class BackgroundNode:
    """A node in its own rclpy context, spun by a daemon thread: the probe that tests and
    benchmarks use to watch a running graph from their own process. Add subscriptions to
    `.node` at any time; `close()` stops the thread and shuts the context down."""

    def __init__(self, name: str, *, spin_period_s: float = 0.02, namespace: str = ""):
        self.ctx = rclpy.Context()
        # No rclpy signal handlers: Ctrl-C stays a KeyboardInterrupt of the host program.
        rclpy.init(context=self.ctx, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(name, context=self.ctx, namespace=namespace or None)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self._period_s = spin_period_s
        self._stop = False
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while not self._stop:
            self.executor.spin_once(timeout_sec=self._period_s)

    def close(self) -> None:
        self._stop = True
        self.thread.join(5)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)
