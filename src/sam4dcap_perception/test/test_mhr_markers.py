"""MHR -> SMPL -> 43 OpenCap markers on synthetic meshes, and the Harrington 2007 hip joint
centres against the regression evaluated by hand in a known pelvis frame."""

import numpy as np
import pytest

from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_biomech.markersets import OPENCAP43
from sam4dcap_perception.mhr_markers import (
    N_MHR_VERTICES, N_SMPL_VERTICES, OPENCAP_SMPL_VERTEX_IDS, SmplMapping, harrington_hjc, mhr_to_smpl,
    opencap_markers_from_smpl_vertices)

RNG = np.random.default_rng(7)


def _rotation(rng):
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


@pytest.fixture()
def mapping(tmp_path):
    """A synthetic surface map over a random MHR-sized mesh (the real file is not shipped)."""
    faces = RNG.integers(0, N_MHR_VERTICES, size=(36874, 3))
    tri = RNG.integers(0, len(faces), size=N_SMPL_VERTICES)
    bary = RNG.random((N_SMPL_VERTICES, 3))
    bary /= bary.sum(axis=1, keepdims=True)
    bary[0] = (1.0, 0.0, 0.0)                  # SMPL vertex 0 sits on a corner
    path = tmp_path / "mhr2smpl_mapping.npz"
    np.savez(path, triangle_ids=tri, baryc_coords=bary)
    return path, faces, tri, bary


def test_mhr_to_smpl_is_barycentric_interpolation(mapping):
    path, faces, tri, bary = mapping
    v = RNG.normal(size=(N_MHR_VERTICES, 3))
    smpl = mhr_to_smpl(v, path, faces=faces)
    assert smpl.shape == (N_SMPL_VERTICES, 3)
    for i in (0, 1, 4000, N_SMPL_VERTICES - 1):
        a, b, c = faces[tri[i]]
        np.testing.assert_allclose(smpl[i], bary[i, 0] * v[a] + bary[i, 1] * v[b] + bary[i, 2] * v[c])
    np.testing.assert_allclose(smpl[0], v[faces[tri[0], 0]])
    # An affine map of the MHR mesh commutes with the mapping (weights sum to 1).
    r, t = _rotation(RNG), np.array([0.3, -1.0, 2.5])
    np.testing.assert_allclose(mhr_to_smpl(v @ r.T + t, path, faces=faces), smpl @ r.T + t, atol=1e-12)
    # Batched frames.
    batch = mhr_to_smpl(np.stack([v, 2 * v]), path, faces=faces)
    np.testing.assert_allclose(batch[1], 2 * smpl, atol=1e-12)


def test_faces_can_come_from_the_npz(mapping, tmp_path):
    path, faces, tri, bary = mapping
    with_faces = tmp_path / "with_faces.npz"
    np.savez(with_faces, triangle_ids=tri, baryc_coords=bary, faces=faces)
    v = RNG.normal(size=(N_MHR_VERTICES, 3))
    np.testing.assert_allclose(mhr_to_smpl(v, with_faces), mhr_to_smpl(v, path, faces=faces))


def test_mapping_errors_name_the_problem(mapping, tmp_path):
    path, faces, tri, bary = mapping
    with pytest.raises(Sam4dcapError, match="mhr2smpl_mapping"):
        SmplMapping("")
    with pytest.raises(Sam4dcapError, match="not found: .*nowhere.npz"):
        SmplMapping(tmp_path / "nowhere.npz", faces=faces)
    bad = tmp_path / "bad.npz"
    np.savez(bad, something=np.zeros(3))
    with pytest.raises(Sam4dcapError, match="needs triangle_ids and baryc_coords"):
        SmplMapping(bad, faces=faces)
    short = tmp_path / "short.npz"
    np.savez(short, triangle_ids=tri[:100], baryc_coords=bary[:100])
    with pytest.raises(Sam4dcapError, match="expected 6890"):
        SmplMapping(short, faces=faces)
    with pytest.raises(Sam4dcapError, match="has no 'faces'"):
        SmplMapping(path)
    with pytest.raises(Sam4dcapError, match="reach"):
        SmplMapping(path, faces=faces[:10])
    notnpz = tmp_path / "text.npz"
    notnpz.write_text("hello")
    with pytest.raises(Sam4dcapError, match="text.npz"):
        SmplMapping(notnpz, faces=faces)
    m = SmplMapping(path, faces=faces)
    with pytest.raises(Sam4dcapError, match="18439"):
        m(np.zeros((6890, 3)))


def test_markers_read_the_published_vertex_ids():
    v = RNG.normal(size=(N_SMPL_VERTICES, 3))
    m = opencap_markers_from_smpl_vertices(v)
    assert tuple(m) == OPENCAP43 and len(m) == 43
    assert OPENCAP_SMPL_VERTEX_IDS["C7_study"] == 1306 and OPENCAP_SMPL_VERTEX_IDS["L_sh3_study"] == 1474
    for name, vid in OPENCAP_SMPL_VERTEX_IDS.items():
        np.testing.assert_array_equal(m[name], v[vid])
    rh, lh = harrington_hjc(v[6573], v[3156], v[6522], v[3099])
    np.testing.assert_allclose(m["RHJC_study"], rh)
    np.testing.assert_allclose(m["LHJC_study"], lh)
    batch = opencap_markers_from_smpl_vertices(np.stack([v, v + 1.0]))
    np.testing.assert_allclose(batch["r_knee_study"][1], v[4495] + 1.0)
    with pytest.raises(Sam4dcapError, match="6890"):
        opencap_markers_from_smpl_vertices(np.zeros((100, 3)))


def test_end_to_end_mhr_mesh_to_markers(mapping):
    path, faces, tri, bary = mapping
    v = RNG.normal(size=(N_MHR_VERTICES, 3))
    markers = opencap_markers_from_smpl_vertices(mhr_to_smpl(v, path, faces=faces))
    i = OPENCAP_SMPL_VERTEX_IDS["r_ankle_study"]
    np.testing.assert_allclose(markers["r_ankle_study"], bary[i] @ v[faces[tri[i]]])


def test_harrington_in_a_known_pelvis_frame():
    """PW = 0.25 m, PD = 0.15 m: x = -0.24*150-9.9 = -45.9 mm, y = -0.30*250-10.9 = -85.9 mm,
    z = +-(0.33*250+7.3) = +-89.8 mm in the pelvis frame (x anterior, y up, z right)."""
    pw, pd = 0.25, 0.15
    local = {  # mid-ASIS origin; PSIS behind and level (frame axes exact)
        "rasis": [0, 0, pw / 2], "lasis": [0, 0, -pw / 2],
        "rpsis": [-pd, 0, 0.045], "lpsis": [-pd, 0, -0.045]}
    expect_r = np.array([-0.0459, -0.0859, 0.0898])
    expect_l = expect_r * [1, 1, -1]
    r, t = _rotation(RNG), np.array([1.0, 0.9, -2.0])
    world = {k: r @ np.array(p) + t for k, p in local.items()}
    rh, lh = harrington_hjc(world["rasis"], world["lasis"], world["rpsis"], world["lpsis"])
    np.testing.assert_allclose(r.T @ (rh - t), expect_r, atol=1e-9)
    np.testing.assert_allclose(r.T @ (lh - t), expect_l, atol=1e-9)
    # A tilted PSIS line does not change the frame's z axis (ASIS-ASIS) nor the widths.
    assert np.linalg.norm(rh - lh) == pytest.approx(2 * 0.0898)
    # Vectorised over frames.
    stack = [np.stack([world[k], world[k] + 0.1]) for k in ("rasis", "lasis", "rpsis", "lpsis")]
    rh2, lh2 = harrington_hjc(*stack)
    assert rh2.shape == (2, 3)
    np.testing.assert_allclose(rh2[1], rh + 0.1)
