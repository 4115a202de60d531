"""The offline process's options and stage runner: every stage writes a manifest
(`.sam4dcap/<stage>.json`: hashes of its input files, its parameters, hashes of its outputs);
a stage whose manifest matches and whose outputs are untouched is reused, unless `force`."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_biomech.settings import check_height_m, check_mass_kg


log = logging.getLogger(__name__)


MANIFEST_DIR = ".sam4dcap"


MANIFEST_VERSION = 1


@dataclass(frozen=True)
class ProcessOptions:
    height_m: float | None
    mass_kg: float | None = None
    backend: str = "blazepose"
    model: str | None = None            # user .osim: used instead of the generated model
    markerset: str | None = None        # user marker set .xml added to the user model
    start_s: float = 0.0
    end_s: float | None = None
    inverse_dynamics: bool = False
    force: bool = False
    static_window: tuple[float, float] | None = None   # (start_s, end_s) of a still pose for scaling
    person: str | None = None           # subject choice (--person); None = body_estimator_node.person
    fit: str | None = None              # IK: "camera" (2D keypoints through the camera) | "markers"; None = config camera_fit.default_fit

    @property
    def height(self) -> float:
        """The subject height (m); a missing one is refused (as by check())."""
        if self.height_m is None:
            raise Sam4dcapError("missing subject height: pass --height in metres (e.g. --height 1.75)")
        return self.height_m

    def check(self) -> None:
        if self.height_m is None:
            raise Sam4dcapError("missing subject height: pass --height in metres (e.g. --height 1.75)")
        check_height_m(self.height_m, name="--height")
        if self.mass_kg is not None:
            check_mass_kg(self.mass_kg, name="--mass")
        if self.markerset and not self.model:
            raise Sam4dcapError("--markerset needs --model (the marker set is added to that model)")
        for flag, value in (("--model", self.model), ("--markerset", self.markerset)):
            if value and not Path(value).is_file():
                raise Sam4dcapError(f"{flag} file not found: {value}")
        if self.model and Path(self.model).suffix.lower() != ".osim":
            raise Sam4dcapError(f"--model {self.model}: expected an OpenSim .osim file")
        if self.markerset and Path(self.markerset).suffix.lower() != ".xml":
            raise Sam4dcapError(f"--markerset {self.markerset}: expected an OpenSim marker set .xml")
        if self.fit not in (None, "camera", "markers"):
            raise Sam4dcapError(f"--fit {self.fit!r}: expected camera or markers")
        if self.start_s < 0 or (self.end_s is not None and self.end_s and self.end_s <= self.start_s):
            raise Sam4dcapError(f"time window {self.start_s}..{self.end_s} s is empty or negative")


# --- stage reuse ---------------------------------------------------------------------------------
def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    p = Path(path)
    if p.is_dir():
        for q in sorted(p.rglob("*")):
            if q.is_file():
                h.update(str(q.relative_to(p)).encode())
                h.update(file_sha256(q).encode())
        return h.hexdigest()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def jsonable(x):
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x


def _code_version() -> str:
    """The installed sam4dcap version: results of another release are not reused."""
    try:
        return importlib.metadata.version("sam4dcap_perception")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class StageRunner:
    """Runs named stages into `out_dir`, reusing those whose manifest still matches."""

    def __init__(self, out_dir: str | Path, *, force: bool = False, on_stage: Callable[[str, str], object] | None = None):
        self.out_dir = Path(out_dir)
        self.force = force
        self.status: dict[str, str] = {}
        self.extras: dict[str, dict] = {}
        self._on_stage = on_stage
        (self.out_dir / MANIFEST_DIR).mkdir(parents=True, exist_ok=True)

    def manifest_path(self, name: str) -> Path:
        return self.out_dir / MANIFEST_DIR / f"{name}.json"

    def _rel(self, p: Path) -> str:
        try:
            return str(Path(p).resolve().relative_to(self.out_dir.resolve()))
        except ValueError:
            return str(Path(p).resolve())

    def run(self, name: str, fn: Callable[[], Mapping | None], *, inputs: Mapping[str, str | Path],
            params: Mapping, outputs: Sequence[str | Path]) -> dict:
        """Run `fn` unless a matching manifest says its outputs are current. Returns the
        stage's extra data (what `fn` returned, stored in the manifest)."""
        wanted = {
            "version": MANIFEST_VERSION,
            "code": _code_version(),
            "inputs": {k: file_sha256(v) for k, v in sorted(inputs.items())},
            "params": jsonable(dict(params)),
        }
        path = self.manifest_path(name)
        if not self.force and path.is_file():
            try:
                old = json.loads(path.read_text())
            except (OSError, ValueError):
                old = {}
            same = all(old.get(k) == v for k, v in wanted.items())
            outs = old.get("outputs", {})
            intact = same and all(
                (self.out_dir / rel).exists() and file_sha256(self.out_dir / rel) == digest
                for rel, digest in outs.items()) and {self._rel(Path(o)) for o in outputs} <= set(outs)
            if intact:
                self.status[name] = "reused"
                self.extras[name] = old.get("extra", {})
                log.info("stage %s: reused (inputs and parameters unchanged)", name)
                if self._on_stage:
                    self._on_stage(name, "reused")
                return self.extras[name]
        path.unlink(missing_ok=True)
        t0 = time.perf_counter()
        extra = dict(fn() or {})
        missing = [str(o) for o in outputs if not Path(o).exists()]
        if missing:
            raise Sam4dcapError(f"stage {name} did not write {', '.join(missing)}")
        record = dict(wanted, outputs={self._rel(Path(o)): file_sha256(o) for o in outputs},
                      extra=jsonable(extra), seconds=round(time.perf_counter() - t0, 3))
        path.write_text(json.dumps(record, indent=1) + "\n")
        self.status[name] = "ran"
        self.extras[name] = record["extra"]
        log.info("stage %s: done in %.1f s", name, record["seconds"])
        if self._on_stage:
            self._on_stage(name, "ran")
        return self.extras[name]


def progress_bar(enabled: bool, **kw):
    from tqdm import tqdm

    return tqdm(disable=not enabled, dynamic_ncols=True, leave=False, file=sys.stderr, **kw)
