"""`sam4dcap`: one command per pipeline stage. Names and flags are a stable interface.

Each subcommand lives in its own module with `add_arguments(parser)` and `run(args) -> int`
(modules import their heavy dependencies inside `run`, so `--help` stays fast). Errors the
user can fix print one line `sam4dcap CMD: error: ...` and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from sam4dcap_biomech.errors import Sam4dcapError

# name -> (module, one-line help). Order is the order of the data flow.
COMMANDS: dict[str, tuple[str, str]] = {
    "markers": ("sam4dcap_perception.commands.markers", "video -> world-frame virtual markers (.trc)"),
    "model": ("sam4dcap_biomech.commands.model", "generate the project's full-body OpenSim model"),
    "scale": ("sam4dcap_biomech.commands.scale", "scale a model to a subject from a static trial"),
    "ik": ("sam4dcap_biomech.commands.ik", "inverse kinematics: markers (.trc) -> coordinates (.mot)"),
    "id": ("sam4dcap_biomech.commands.id", "inverse dynamics: coordinates (.mot) -> generalized forces (.sto)"),
    "process": ("sam4dcap_perception.commands.process", "whole offline trial: video/bag -> markers, model, IK, ID, report"),
    "compare": ("sam4dcap_perception.commands.compare", "compare a result with a reference (.mot/.trc)"),
    "graph": ("sam4dcap_perception.commands.graph", "run the ROS 2 node graph in-process (ros2 launch equivalent)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sam4dcap", description="Video of a person -> OpenSim biomechanical twin.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each stage in detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, help_text) in COMMANDS.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_text, description=(mod.__doc__ or help_text).strip().splitlines()[0])
        mod.add_arguments(p)
        p.set_defaults(_module=mod)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return int(args._module.run(args) or 0)
    except (Sam4dcapError, FileNotFoundError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"sam4dcap {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sam4dcap {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
