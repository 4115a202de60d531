"""Echo peer for the message round-trip tests: a separate process with its own rclpy context.

For each message type `pkg/msg/Name` it subscribes to /roundtrip/in/Name and republishes every
message it receives, unchanged, on /roundtrip/out/Name (so each message crosses the process
boundary twice: test -> peer -> test). For each service `pkg/srv/Name` it serves
/roundtrip/srv/Name and answers sample(Response, seed=1) when the request equals
sample(Request, seed=1), else sample(Response, seed=2). Prints "ready" when set up; exits when
stdin closes (the test ends) or after --timeout-s.
"""

import argparse
import importlib
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import rclpy  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402

from msg_samples import sample  # noqa: E402

QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def load_type(name: str):
    pkg, kind, cls = name.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), cls)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("types", nargs="+")
    ap.add_argument("--timeout-s", type=float, default=120.0)
    args = ap.parse_args()
    rclpy.init()
    node = rclpy.create_node("msgs_echo_peer")
    keep = []
    for name in args.types:
        cls = load_type(name)
        short = name.split("/")[-1]
        if name.split("/")[1] == "msg":
            pub = node.create_publisher(cls, f"/roundtrip/out/{short}", QOS)
            keep.append(node.create_subscription(cls, f"/roundtrip/in/{short}", pub.publish, QOS))
        else:
            def serve(request, response, cls=cls):
                seed = 1 if request == sample(cls.Request, seed=1) else 2
                return sample(cls.Response, seed=seed)
            keep.append(node.create_service(cls, f"/roundtrip/srv/{short}", serve))
    print("ready", flush=True)
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    timer = threading.Timer(args.timeout_s, done.set)
    timer.daemon = True
    timer.start()
    while not done.is_set() and rclpy.ok():
        rclpy.spin_once(node, timeout_sec=0.1)
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
