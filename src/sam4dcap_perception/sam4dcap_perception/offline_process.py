"""Offline trials: video or recorded bag -> markers, model, scaling, IK, (ID), C3D, report.

`process_trial` runs the stages of one trial into one folder. Every stage writes a small manifest
(`.sam4dcap/<stage>.json`: hashes of its input files, its parameters, hashes of its outputs);
running again with the same inputs reuses a stage whose manifest matches and whose outputs are
untouched, unless `force`. Changing an upstream output changes the downstream inputs' hashes,
so only what depends on a change runs again.

The stages: `offline_markers` (markers), `offline_biomech` (model, scale, ik, id),
`offline_report` (c3d, report); the manifests and options: `stage_runner`.

`process_batch` runs many trials over a process pool (one subfolder each); a failed trial is
reported in the batch summary without stopping the others.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import multiprocessing
import os
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from sam4dcap_biomech.errors import Sam4dcapError

from .fit_views import monocular_views
from .offline_biomech import biomech_stages
from .offline_markers import config_snapshot, frame_confidence, markers_from_bag, markers_from_video, write_keypoints
from .offline_report import c3d_stage, report_stage
from .report import gap_warning
from .stage_runner import MANIFEST_DIR, ProcessOptions, StageRunner, jsonable, progress_bar

# The stages live in stage_runner, offline_markers, offline_biomech and offline_report; these
# names stay importable from here (multiview, the CLI, tests and benchmarks use them).
__all__ = ["BAG_EXTENSIONS", "MANIFEST_DIR", "STAGES", "VIDEO_EXTENSIONS", "ProcessOptions", "StageRunner",
           "TrialResult", "biomech_stages", "config_snapshot", "expand_inputs", "frame_confidence",
           "process_batch", "process_trial", "source_kind", "trial_folder_names", "trial_stem", "write_keypoints"]

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
BAG_EXTENSIONS = (".mcap", ".db3")


@dataclass
class TrialResult:
    source: str
    out_dir: str
    ok: bool
    error: str = ""
    stages: dict[str, str] = field(default_factory=dict)        # stage -> "ran" | "reused" | "skipped"
    artefacts: dict[str, str] = field(default_factory=dict)     # kind -> path
    seconds: float = 0.0
    warning: str = ""       # one line: frames lost (NaN in the outputs) and where


# --- inputs ----------------------------------------------------------------------------------
def source_kind(path: str | Path) -> str:
    """'video' or 'bag' for a processable input; one clear error otherwise."""
    p = Path(path)
    if not p.exists():
        raise Sam4dcapError(f"input not found: {p}")
    if p.is_dir():
        if (p / "metadata.yaml").is_file() or any(p.glob("*.mcap")) or any(p.glob("*.db3")):
            return "bag"
        raise Sam4dcapError(f"{p}: a folder that is not a rosbag2 bag (pass its videos, or the folder to batch)")
    suffix = p.suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    if suffix in BAG_EXTENSIONS:
        return "bag"
    raise Sam4dcapError(f"{p}: unknown input type {suffix or '(no extension)'!r}; give a video "
                        f"({', '.join(VIDEO_EXTENSIONS)}) or a rosbag2 bag folder / .mcap")


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Videos and bags named, plus the videos and bags inside named folders (not recursive)."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir() and not (p / "metadata.yaml").is_file() and not any(p.glob("*.mcap")):
            found = sorted(q for q in p.iterdir()
                           if q.is_file() and q.suffix.lower() in VIDEO_EXTENSIONS
                           or q.is_dir() and (q / "metadata.yaml").is_file())
            if not found:
                raise Sam4dcapError(f"{p}: folder holds no video ({', '.join(VIDEO_EXTENSIONS)}) or bag")
            out.extend(found)
        else:
            out.append(p)
    if not out:
        raise Sam4dcapError("no input given: pass a video, a bag, a folder of videos, or several")
    return out


# --- one trial, many trials ------------------------------------------------------------------------
STAGES = ("markers", "model", "scale", "ik", "id", "c3d", "report")


def process_trial(source: str | Path, out_dir: str | Path, opts: ProcessOptions, *,
                  progress: bool = False) -> TrialResult:
    """All stages of one trial into `out_dir`; raises on the first failing stage."""
    t0 = time.perf_counter()
    source = Path(source)
    opts.check()
    kind = source_kind(source)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = trial_stem(source)
    stages = [s for s in STAGES if s != "id" or opts.inverse_dynamics]
    bar = progress_bar(progress, total=len(stages), desc=f"{stem}", unit="stage")
    runner = StageRunner(out, force=opts.force,
                         on_stage=lambda name, status: (bar.set_postfix_str(f"{name} {status}"), bar.update(1)))
    try:
        if kind == "video":
            arts = markers_from_video(runner, source, stem, opts, progress=progress)
        else:
            arts = markers_from_bag(runner, source, stem, opts)
        marker_set = runner.extras["markers"].get("marker_set") or "blazepose33"
        fit_inputs: dict[str, Path] = {k: arts[k] for k in ("keypoints_npz", "camera") if k in arts}
        fit_views = None
        if len(fit_inputs) == 2:
            def fit_views():
                return monocular_views(fit_inputs["keypoints_npz"], fit_inputs["camera"])
        arts.update(biomech_stages(runner, arts["markers_trc"], stem, opts, marker_set=marker_set,
                                   fit_views=fit_views, fit_inputs=fit_inputs))
        arts["c3d"] = c3d_stage(runner, arts["markers_trc"], stem)
        arts.update(report_stage(runner, arts, stem, opts, source=source, marker_set=marker_set))
    finally:
        bar.close()

    warning = gap_warning(json.loads(Path(arts["summary"]).read_text()).get("gaps", {}))
    return TrialResult(source=str(source), out_dir=str(out), ok=True, stages=dict(runner.status),
                       artefacts={k: str(v) for k, v in arts.items()}, seconds=time.perf_counter() - t0,
                       warning=warning)


def _trial_worker(source: str, out_dir: str, opts: ProcessOptions, verbose: bool) -> TrialResult:
    """Process-pool entry: never raises; a failure becomes a TrialResult with its error."""
    # force: a pool worker runs several trials in turn, and each one's lines carry its own name.
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, force=True,
                        format=f"%(asctime)s [{Path(source).stem}] %(name)s: %(message)s", datefmt="%H:%M:%S")
    t0 = time.perf_counter()
    try:
        return process_trial(source, out_dir, opts, progress=False)
    except Sam4dcapError as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.warning("trial failed: %s", msg)
    except Exception as exc:  # noqa: BLE001 - one trial's crash must not stop the batch
        log.error("%s: %s", source, traceback.format_exc())
        msg = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return TrialResult(source=str(source), out_dir=str(out_dir), ok=False, error=msg,
                       seconds=time.perf_counter() - t0)


def trial_stem(source: Path) -> str:
    """File name without its video/bag extension (a bag folder keeps its name)."""
    return source.stem if source.suffix.lower() in VIDEO_EXTENSIONS + BAG_EXTENSIONS else source.name


def trial_folder_names(sources: Sequence[Path]) -> list[str]:
    """One distinct subfolder name per input (the file stem; parent folder added on clashes)."""
    stems = [trial_stem(s) for s in sources]
    out = []
    for s, stem in zip(sources, stems):
        out.append(f"{s.parent.name}_{stem}" if stems.count(stem) > 1 else stem)
    if len(set(out)) != len(out):
        out = [f"{i:03d}_{n}" for i, n in enumerate(out)]
    return out


def process_batch(sources: Sequence[str | Path], out_dir: str | Path, opts: ProcessOptions, *,
                  max_workers: int | None = None, progress: bool = False, verbose: bool = False,
                  ) -> list[TrialResult]:
    """Trials in parallel over a process pool, each in `out_dir/<name>/`; writes
    `out_dir/batch_summary.json`. Failures are collected, never raised."""
    opts.check()
    srcs = [Path(s) for s in sources]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = trial_folder_names(srcs)
    workers = max(1, min(len(srcs), max_workers or os.cpu_count() or 1))
    results: dict[int, TrialResult] = {}
    t0 = time.perf_counter()
    bar = progress_bar(progress, total=len(srcs), desc="trials", unit="trial")
    # spawn: workers start clean (no inherited OpenSim/MediaPipe threads from the parent).
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_trial_worker, str(s), str(out / n), opts, verbose): i
                   for i, (s, n) in enumerate(zip(srcs, names))}
        for fut in cf.as_completed(futures):
            i = futures[fut]
            try:
                results[i] = fut.result()
            except Exception as exc:  # noqa: BLE001 - a worker that died (e.g. killed by the OS)
                results[i] = TrialResult(source=str(srcs[i]), out_dir=str(out / names[i]), ok=False,
                                         error=f"worker died: {type(exc).__name__}: {exc}")
            bar.update(1)
    bar.close()
    ordered = [results[i] for i in range(len(srcs))]
    summary = {
        "trials": len(ordered), "succeeded": sum(r.ok for r in ordered),
        "failed": sum(not r.ok for r in ordered), "workers": workers,
        "seconds": round(time.perf_counter() - t0, 2),
        "options": asdict(opts),
        "results": [asdict(r) for r in ordered],
    }
    (out / "batch_summary.json").write_text(json.dumps(jsonable(summary), indent=2) + "\n")
    return ordered
