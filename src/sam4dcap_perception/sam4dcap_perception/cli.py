"""`sam4dcap`: one command per pipeline stage. Names and flags are a stable interface.

Each subcommand lives in its own module with `add_arguments(parser)` and `run(args) -> int`
(modules import their heavy dependencies inside `run`, so `--help` stays fast). Errors the
user can fix print one line `sam4dcap CMD: error: ...` and exit 2; so do the environment's
(a full disk, a folder that can't be written: OSError). Anything else is a bug and keeps its
traceback. `--debug` (or SAM4DCAP_DEBUG=1) shows the traceback of every error.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
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
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of errors (also SAM4DCAP_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, help_text) in COMMANDS.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_text, description=(mod.__doc__ or help_text).strip().splitlines()[0])
        mod.add_arguments(p)
        p.set_defaults(_module=mod)
    return parser


def error_line(exc: BaseException) -> str:
    """One line for an expected failure: the project's message, or the OS's reason and the path."""
    if isinstance(exc, OSError) and not isinstance(exc, Sam4dcapError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        where += f" -> {exc.filename2}" if getattr(exc, "filename2", None) else ""
        return f"{exc.strerror}{where}"
    text = str(exc)
    return text.splitlines()[0] if text.strip() else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    debug = args.debug or os.environ.get("SAM4DCAP_DEBUG", "") not in ("", "0")
    try:
        return int(args._module.run(args) or 0)
    except (Sam4dcapError, OSError) as exc:
        if debug:
            raise
        print(f"sam4dcap {args.command}: error: {error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sam4dcap {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
