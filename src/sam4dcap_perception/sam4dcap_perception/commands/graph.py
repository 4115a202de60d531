"""Run the ROS 2 node graph (one process per node, like `ros2 launch`) on a video, bag or camera.

    sam4dcap graph --video walk.mp4 --height 1.75 --mass 70 --record out/bag
    sam4dcap graph --camera 0 --height 1.75

With a file or bag every frame is processed (the source waits for downstream), the recorder
and the trial writer are flushed, and the command exits 0 when the file ends. With a camera it
runs until Ctrl-C (or SIGTERM / SIGHUP): the source stops, the frames it already published are
finished (bounded wait; a count of any left without results is printed), and the command exits
0. A node that dies stops the graph: one line names it, exit code 1. `--namespace NS` runs
every node in the ROS namespace NS (topics /NS/camera/image_raw, ...). Parameters come from config/sam4dcap.yaml (or --config) with these flags and
`--set node.param=value` on top; node logs go to --log-dir.
"""

from __future__ import annotations


def add_arguments(parser):
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--video", metavar="PATH", help="video file, image folder or rosbag2 (mcap) folder")
    src.add_argument("--camera", metavar="N", type=int, help="camera device index")
    parser.add_argument("--height", dest="height_m", type=float, metavar="H", help="subject height [m]")
    parser.add_argument("--mass", dest="mass_kg", type=float, metavar="M", help="subject mass [kg]")
    parser.add_argument("--record", metavar="BAG_DIR", default="", help="record every topic to this new rosbag2 (mcap) folder")
    parser.add_argument("--backend", choices=["blazepose", "sam3d"], help="body estimator backend")
    parser.add_argument("--realtime", action="store_true", help="pace a file at its capture times (frames may be skipped)")
    parser.add_argument("--config", metavar="YAML", help="parameter file (default: config/sam4dcap.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.PARAM=VALUE",
                        help="override one node parameter (YAML value), repeatable")
    parser.add_argument("--log-dir", metavar="DIR", help="folder of the node logs (default: a temp folder)")
    parser.add_argument("--timeout", dest="timeout_s", type=float, metavar="S", help="stop after this many seconds")
    parser.add_argument("--namespace", metavar="NS", default="",
                        help="ROS namespace of every node and topic (e.g. cam2: /cam2/camera/image_raw); "
                             "graphs in different namespaces share a ROS domain without seeing each other")
    parser.add_argument("--without", action="append", default=[], metavar="NODE",
                        help="leave out an optional node (visualization_node, trial_writer_node, id_node; "
                             "repeatable or comma-separated), e.g. where the CPU cannot hold the live budget")
    parser.add_argument("--one-process-perception", action="store_true",
                        help="run the video source and the body estimator in one process: frames go to the "
                             "estimator as arrays, not as image messages (less CPU and latency on small machines)")
    parser.add_argument("--person-id", dest="person_id", type=int, metavar="ID",
                        help="body id of the tracked person (/humans/bodies/body<ID>/joint_states)")


def parse_overrides(items) -> dict:
    import yaml

    from sam4dcap_biomech.errors import Sam4dcapError

    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        node, dot, param = key.partition(".")
        if not sep or not dot or not node or not param:
            raise Sam4dcapError(f"--set {item!r}: expected NODE.PARAM=VALUE")
        out.setdefault(node, {})[param] = yaml.safe_load(value) if value != "" else ""
    return out


def run(args) -> int:
    import os
    import signal
    from pathlib import Path

    from sam4dcap_biomech.errors import Sam4dcapError

    from ..graph import GraphOptions

    if args.config:
        if not Path(args.config).is_file():
            raise Sam4dcapError(f"--config {args.config}: file not found")
        os.environ["SAM4DCAP_CONFIG"] = str(Path(args.config).resolve())  # inherited by every node
    if args.video and not Path(args.video).exists():
        raise Sam4dcapError(f"--video {args.video}: not found")
    if args.record and Path(args.record).exists():
        raise Sam4dcapError(f"--record {args.record}: exists already; choose a new folder")
    if args.record:  # the recorder node would only fail once the graph runs
        parent = Path(args.record).resolve().parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise Sam4dcapError(f"--record {args.record}: cannot create {parent}: {exc.strerror or exc}") from None
        if not os.access(parent, os.W_OK | os.X_OK):
            raise Sam4dcapError(f"--record {args.record}: folder {parent} is not writable")
    from ..graph import check_without
    from ..graph_runner import GraphRun

    try:
        without = check_without(",".join(args.without).split(","))
    except ValueError as exc:
        raise Sam4dcapError(f"--without: {exc}") from None

    options = GraphOptions(video=args.video or "", camera=args.camera, height_m=args.height_m, mass_kg=args.mass_kg,
                           record=args.record, backend=args.backend, realtime=True if args.realtime else None,
                           person_id=args.person_id, namespace=args.namespace,
                           extra=parse_overrides(args.overrides), without=without,
                           one_process_perception=args.one_process_perception)

    def on_term(signum, frame):  # SIGTERM, SIGHUP (terminal closed): stop the nodes in order, like Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    # Ctrl-C / SIGINT as well, explicitly: a process started with SIGINT ignored (a background
    # job of a script, `make test &`) inherits that, and Python then installs no handler of its
    # own, so `kill -INT` would be ignored and the graph would run to the end of its source.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    run_ = GraphRun(options, log_dir=args.log_dir)
    run_.start()
    print(f"sam4dcap graph: nodes {', '.join(run_.procs)}; logs in {run_.log_dir}", flush=True)
    try:
        rc = run_.wait(args.timeout_s)
    except KeyboardInterrupt:   # (during the final stop: GraphRun.wait handles the first one)
        rc = 0
    if run_.lost_frames:
        print(f"sam4dcap graph: {run_.lost_frames} published frame(s) got no result before the stop", flush=True)
    if rc == 0 and args.record:
        from ..bag_io import bag_topics

        topics = bag_topics(args.record)
        print("sam4dcap graph: recorded " + ", ".join(f"{t} {i.count}" for t, i in topics.items() if i.count))
    return rc
