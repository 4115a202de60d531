"""Body estimator factory: one `BodyEstimator` per stream, chosen by `body_estimator_node.backend`.

    est = create_estimator(load_config().params("body_estimator_node"))
    for frame in open_source("walk.mp4"):
        obs = est.process(frame)          # BodyObservation
    est.close()

Backends:
  * `blazepose` (default, CPU, offline): `blazepose.BlazePoseEstimator`.
  * `sam3d` (GPU, optional): `mesh_sam3d.Sam3dBodyEstimator` -- SAM 3D Body with user-supplied
    checkpoints; raises `MissingDependencyError` naming what is missing.
`segmentation_backend=sam3` (GPU, optional) replaces the person mask with SAM 3 video
propagation from the same prompt (`segmentation_sam3.Sam3Segmenter`).
"""

from __future__ import annotations

from typing import Protocol

from sam4dcap_biomech.config import load_config
from sam4dcap_biomech.errors import Sam4dcapError

from .blazepose import BlazePoseEstimator
from .mesh_sam3d import Sam3dBodyEstimator
from .observations import BodyObservation, Frame
from .segmentation_sam3 import Sam3Segmenter


class BodyEstimator(Protocol):
    backend: str

    def process(self, frame: Frame) -> BodyObservation: ...

    def close(self) -> None: ...


class _WithSam3Masks:
    """Wraps a body estimator: its prompt drives SAM 3; SAM 3's mask replaces the embedded one."""

    def __init__(self, inner, segmenter):
        self.inner = inner
        self.segmenter = segmenter
        self.backend = f"{inner.backend}+sam3"

    def process(self, frame: Frame) -> BodyObservation:
        obs = self.inner.process(frame)
        if not obs.tracked:
            return obs
        mask = self.segmenter.segment(frame, obs.prompt, tracked=True, box=obs.box_xyxy)
        if mask is not None:
            obs.extra["mask_backend"] = "sam3"
            obs.mask = mask
        return obs

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            self.segmenter.close()


def create_estimator(params: dict | None = None) -> BodyEstimator:
    """The configured body estimator. `params`: `load_config().params("body_estimator_node")`
    or a subset of overrides (missing values come from the config file)."""
    p = load_config().params("body_estimator_node", params or {})
    backend = p["backend"]
    est: BodyEstimator
    if backend == "blazepose":
        est = BlazePoseEstimator(p)
    elif backend == "sam3d":
        if str(p["person"]).strip().lower() not in ("", "auto"):
            # SAM 3D Body follows its auto-prompted person only; a choice must not be ignored.
            raise Sam4dcapError(f"body_estimator_node.person={p['person']!r} needs backend=blazepose "
                                "(the sam3d backend follows the auto-prompted person only)")

        est = Sam3dBodyEstimator(p)
    else:  # pragma: no cover - the config's choices= refuse it first
        raise Sam4dcapError(f"body_estimator_node.backend={backend!r}: choose blazepose or sam3d")
    if p["segmentation_backend"] == "sam3":
        try:
            seg = Sam3Segmenter(p)
        except Exception:
            est.close()
            raise
        return _WithSam3Masks(est, seg)
    return est
