"""Process recorded trials: video/bag -> markers, scaled model, IK (ID), C3D, keypoints, report.

One input writes into --out directly; several inputs (or a folder of videos) are processed in
parallel, one subfolder each, with a batch_summary.json; a failed trial is reported without
stopping the others (exit code 1 if any failed). Stages whose inputs and parameters did not
change are reused unless --force.
"""

from __future__ import annotations

import sys

from .markers import add_person_arguments, estimator_overrides, list_people_command


def add_arguments(parser):
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="video file(s), a folder of videos, or a recorded rosbag2 bag (folder or .mcap)")
    parser.add_argument("--height", type=float, metavar="M", help="subject height [m] (required)")
    parser.add_argument("--mass", type=float, metavar="KG", help="subject mass [kg] (required for the generated model)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--backend", default=None, choices=["blazepose", "sam3d"],
                        help="body estimator (default: body_estimator_node.backend of the config)")
    parser.add_argument("--model", metavar="OSIM", help="use this OpenSim model instead of the generated one")
    parser.add_argument("--markerset", metavar="XML", help="OpenSim marker set added to --model")
    parser.add_argument("--start", type=float, default=0.0, metavar="S", help="skip the video before S seconds")
    parser.add_argument("--end", type=float, default=None, metavar="S", help="stop the video after S seconds")
    parser.add_argument("--static-window", type=float, nargs=2, metavar=("START", "END"),
                        help="seconds of the trial where the subject stands still, for scaling "
                             "(default: found automatically; none found = the height-sized model)")
    parser.add_argument("--id", dest="inverse_dynamics", action="store_true",
                        help="also run inverse dynamics (.sto; no external loads: residuals not physical)")
    parser.add_argument("--fit", choices=["camera", "markers"], default=None,
                        help="joint angles from: camera = the model fitted to the 2D keypoints through the camera, "
                             "markers = marker IK on the 3D markers (default: config camera_fit.default_fit)")
    parser.add_argument("--force", action="store_true", help="rerun every stage even when its outputs are current")
    parser.add_argument("--jobs", type=int, default=None, metavar="N",
                        help="parallel trials in a batch (default: number of cores)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_person_arguments(parser)
    parser.set_defaults(config=None)


def run(args) -> int:
    import contextlib

    from tqdm.contrib.logging import logging_redirect_tqdm

    progress = not args.quiet and sys.stderr.isatty()
    # Log lines printed above the progress bars instead of through them.
    with logging_redirect_tqdm() if progress else contextlib.nullcontext():
        return _run(args, progress)


def _run(args, progress: bool) -> int:
    from pathlib import Path

    from sam4dcap_biomech.config import load_config
    from sam4dcap_biomech.errors import Sam4dcapError
    from sam4dcap_perception.offline_process import (ProcessOptions, expand_inputs, process_batch,
                                                     process_trial, source_kind)

    if args.list_people is not None or args.person is not None:
        flag = "--list-people" if args.list_people is not None else "--person"
        for source in expand_inputs(args.inputs):
            if source_kind(source) == "bag":
                raise Sam4dcapError(f"{flag} applies to videos; the bag {source} holds the markers of the subject "
                                    "chosen when it was recorded")
    if args.list_people is not None:
        sources = expand_inputs(args.inputs)
        for source in sources:
            sheet = Path(args.list_people) if args.list_people and len(sources) == 1 \
                else Path(args.out) / f"{source.stem}_people.png"
            list_people_command(source, sheet, args)
        return 0
    backend = args.backend or load_config().params("body_estimator_node")["backend"]
    opts = ProcessOptions(height_m=args.height, mass_kg=args.mass, backend=backend, model=args.model,
                          markerset=args.markerset, start_s=args.start, end_s=args.end,
                          inverse_dynamics=args.inverse_dynamics, force=args.force,
                          static_window=tuple(args.static_window) if args.static_window else None,
                          person=estimator_overrides(args).get("person"), fit=args.fit)
    opts.check()
    if args.jobs is not None and args.jobs < 1:
        raise Sam4dcapError(f"--jobs must be at least 1 (got {args.jobs})")
    sources = expand_inputs(args.inputs)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise Sam4dcapError(f"--out {out} is a file; give a folder (it is created if missing)")
    # One named video or bag writes into --out itself; a folder or a list is a batch.
    single = len(args.inputs) == 1 and len(sources) == 1 and sources[0] == Path(args.inputs[0])
    if single:
        result = process_trial(sources[0], out, opts, progress=progress)
        reused = [s for s, st in result.stages.items() if st == "reused"]
        print(f"{sources[0]}: done in {result.seconds:.1f} s"
              + (f" (reused: {', '.join(reused)})" if reused else ""))
        if result.warning:
            print(f"{sources[0]}: warning: {result.warning}", file=sys.stderr)
        print(f"report: {result.artefacts.get('report', out / 'report.html')}")
        return 0
    for s in sources:
        source_kind(s)   # unknown types fail before any work starts
    results = process_batch(sources, out, opts, max_workers=args.jobs, progress=progress,
                            verbose=getattr(args, "verbose", False))
    failed = [r for r in results if not r.ok]
    for r in results:
        state = f"ok in {r.seconds:.1f} s" if r.ok else f"FAILED: {r.error}"
        print(f"{r.source}: {state}" + (f"; warning: {r.warning}" if r.warning else ""))
    print(f"{len(results) - len(failed)} of {len(results)} trials succeeded; summary: {out / 'batch_summary.json'}")
    return 1 if failed else 0
