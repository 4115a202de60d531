"""OpenCap's 43 virtual markers from a body mesh (SAM 3D Body -> MHR -> SMPL topology).

1. `mhr_to_smpl`: MHR LOD1 vertices (18,439) -> SMPL-topology vertices (6,890) with MHR's
   published surface map `mhr2smpl_mapping.npz` (facebookresearch/MHR,
   tools/mhr_smpl_conversion/assets; not shipped here, path from the config): for each SMPL
   vertex one MHR triangle id (`triangle_ids`) and three barycentric weights (`baryc_coords`).
   The triangles are the MHR mesh's faces (SAM 3D Body: `estimator.faces`), passed in or stored
   in the npz as `faces`. Interpolation is linear, so units pass through unchanged (MHR's own
   tools work in cm; SAM 3D Body returns metres).
2. `opencap_markers_from_smpl_vertices`: 41 surface markers at fixed SMPL vertex ids (OpenCap's
   LaiUhlrich2022 marker set on SMPL, as used by SAM4Dcap) plus the two hip joint centres.
3. `harrington_hjc`: hip joint centres from the pelvis markers with the regression of
   Harrington et al. 2007 (J Biomech 40:595-602), the one OpenCap-style pipelines use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_biomech.markersets import OPENCAP43

N_MHR_VERTICES = 18439   # MHR LOD1
N_SMPL_VERTICES = 6890

# OpenCap marker -> SMPL vertex id (all markers of OPENCAP43 except the hip joint centres).
OPENCAP_SMPL_VERTEX_IDS: dict[str, int] = {
    "C7_study": 1306, "r_shoulder_study": 4724, "L_shoulder_study": 1239,
    "r.ASIS_study": 6573, "L.ASIS_study": 3156, "r.PSIS_study": 6522, "L.PSIS_study": 3099,
    "r_knee_study": 4495, "r_mknee_study": 4634, "r_ankle_study": 6727, "r_mankle_study": 6599,
    "r_toe_study": 6703, "r_5meta_study": 6718, "r_calc_study": 6786,
    "L_knee_study": 1010, "L_mknee_study": 1148, "L_ankle_study": 3328, "L_mankle_study": 3199,
    "L_toe_study": 3303, "L_calc_study": 3387, "L_5meta_study": 3318,
    "r_lelbow_study": 5090, "L_lelbow_study": 1621, "r_melbow_study": 6471, "L_melbow_study": 3013,
    "r_lwrist_study": 5573, "L_lwrist_study": 2112, "r_mwrist_study": 5568, "L_mwrist_study": 2108,
    "r_thigh1_study": 4360, "r_thigh2_study": 4445, "r_thigh3_study": 4389,
    "L_thigh1_study": 874, "L_thigh2_study": 961, "L_thigh3_study": 902,
    "r_sh1_study": 4585, "r_sh2_study": 4604, "r_sh3_study": 4947,
    "L_sh1_study": 1101, "L_sh2_study": 1117, "L_sh3_study": 1474,
}

# Harrington 2007 regression, pelvis frame (origin mid-ASIS; x anterior, y superior, z right),
# PW = inter-ASIS distance, PD = distance between the ASIS and PSIS midpoints; mm in the paper.
_HJC_X = (-0.24, -0.0099)    # x = -0.24 PD - 9.9 mm
_HJC_Y = (-0.30, -0.0109)    # y = -0.30 PW - 10.9 mm
_HJC_Z = (0.33, 0.0073)      # z = +-(0.33 PW + 7.3 mm), + right


class SmplMapping:
    """MHR -> SMPL barycentric surface map, loaded once."""

    def __init__(self, path: str | Path, *, faces: np.ndarray | None = None):
        p = Path(path).expanduser() if str(path) else None
        if p is None:
            raise Sam4dcapError("no MHR->SMPL mapping given: set body_estimator_node.mhr2smpl_mapping to "
                                "MHR's tools/mhr_smpl_conversion/assets/mhr2smpl_mapping.npz")
        if not p.is_file():
            raise Sam4dcapError(f"MHR->SMPL mapping not found: {p} (get mhr2smpl_mapping.npz from "
                                "github.com/facebookresearch/MHR tools/mhr_smpl_conversion/assets)")
        try:
            with np.load(p) as z:
                keys = set(z.files)
                if not {"triangle_ids", "baryc_coords"} <= keys:
                    raise Sam4dcapError(f"{p}: not an MHR->SMPL mapping (needs triangle_ids and "
                                        f"baryc_coords; has {', '.join(sorted(keys)) or 'nothing'})")
                tri = np.asarray(z["triangle_ids"]).astype(np.int64).reshape(-1)
                bary = np.asarray(z["baryc_coords"], dtype=float)
                npz_faces = np.asarray(z["faces"]) if "faces" in keys else None
        except (OSError, ValueError) as exc:
            if isinstance(exc, Sam4dcapError):
                raise
            raise Sam4dcapError(f"{p}: cannot read the MHR->SMPL mapping ({exc})") from None
        if tri.shape[0] != N_SMPL_VERTICES or bary.shape != (N_SMPL_VERTICES, 3):
            raise Sam4dcapError(f"{p}: expected {N_SMPL_VERTICES} triangle ids and ({N_SMPL_VERTICES}, 3) "
                                f"barycentric weights, got {tri.shape} and {bary.shape}")
        faces = faces if faces is not None else npz_faces
        if faces is None:
            raise Sam4dcapError(f"{p} has no 'faces': pass the MHR LOD1 triangles "
                                "(SAM 3D Body: estimator.faces)")
        faces = np.asarray(faces).astype(np.int64)
        if faces.ndim != 2 or faces.shape[1] != 3:
            raise Sam4dcapError(f"MHR faces must be (F, 3), got {faces.shape}")
        if tri.min() < 0 or tri.max() >= len(faces):
            raise Sam4dcapError(f"{p}: triangle ids reach {tri.max()} but the mesh has {len(faces)} faces")
        if faces.max() >= N_MHR_VERTICES:
            raise Sam4dcapError(f"MHR faces index vertex {faces.max()}, beyond LOD1's {N_MHR_VERTICES}")
        self.path = p
        self.corners = faces[tri]            # (6890, 3) MHR vertex ids of each SMPL vertex's triangle
        self.weights = bary                  # (6890, 3)

    def __call__(self, vertices_mhr: np.ndarray) -> np.ndarray:
        v = np.asarray(vertices_mhr, dtype=float)
        if v.shape[-2:] != (N_MHR_VERTICES, 3):
            raise Sam4dcapError(f"MHR LOD1 vertices must be (..., {N_MHR_VERTICES}, 3), got {v.shape}")
        return np.einsum("...vkc,vk->...vc", v[..., self.corners, :], self.weights)


def mhr_to_smpl(vertices_mhr: np.ndarray, mapping_npz_path: str | Path, *,
                faces: np.ndarray | None = None) -> np.ndarray:
    """(18439, 3) or (N, 18439, 3) MHR LOD1 vertices -> (6890, 3) / (N, 6890, 3) SMPL topology."""
    return SmplMapping(mapping_npz_path, faces=faces)(vertices_mhr)


def harrington_hjc(rasis: np.ndarray, lasis: np.ndarray, rpsis: np.ndarray,
                   lpsis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Right and left hip joint centres (same units as the inputs, metres expected: the
    regression's offsets are in metres) from (3,) or (N, 3) pelvis markers."""
    ra, la, rp, lp = (np.asarray(a, dtype=float) for a in (rasis, lasis, rpsis, lpsis))
    origin = 0.5 * (ra + la)
    mid_psis = 0.5 * (rp + lp)
    z = ra - la
    pw = np.linalg.norm(z, axis=-1, keepdims=True)
    z = z / pw
    ant = origin - mid_psis
    pd = np.linalg.norm(ant, axis=-1, keepdims=True)
    x = ant - np.sum(ant * z, axis=-1, keepdims=True) * z    # anterior, orthogonal to z
    x = x / np.linalg.norm(x, axis=-1, keepdims=True)
    y = np.cross(z, x)                                        # superior (x, y, z right-handed)
    lx = _HJC_X[0] * pd + _HJC_X[1]
    ly = _HJC_Y[0] * pw + _HJC_Y[1]
    lz = _HJC_Z[0] * pw + _HJC_Z[1]
    rhjc = origin + lx * x + ly * y + lz * z
    lhjc = origin + lx * x + ly * y - lz * z
    return rhjc, lhjc


def opencap_markers_from_smpl_vertices(vertices: np.ndarray) -> dict[str, np.ndarray]:
    """The 43 OpenCap markers (OPENCAP43 order) from (6890, 3) or (N, 6890, 3) SMPL-topology
    vertices: 41 at fixed vertex ids, RHJC/LHJC by Harrington 2007 from the ASIS/PSIS markers."""
    v = np.asarray(vertices, dtype=float)
    if v.shape[-2:] != (N_SMPL_VERTICES, 3):
        raise Sam4dcapError(f"SMPL-topology vertices must be (..., {N_SMPL_VERTICES}, 3), got {v.shape}")
    out = {name: v[..., vid, :].copy() for name, vid in OPENCAP_SMPL_VERTEX_IDS.items()}
    out["RHJC_study"], out["LHJC_study"] = harrington_hjc(
        out["r.ASIS_study"], out["L.ASIS_study"], out["r.PSIS_study"], out["L.PSIS_study"])
    return {name: out[name] for name in OPENCAP43}
