"""Streaming inverse kinematics: the IK problem of OpenSim's InverseKinematicsTool, frame by frame.

Why not OpenSim's InverseKinematicsSolver per frame: the Python solver copies its
MarkersReference (new marker data never reaches an existing solver), and rebuilding a solver
for every frame costs ≈ 11 ms/frame on Gait2354, slower than the batch tool (≈ 9 ms/frame).

Method (chosen by measurement, see bench/streaming_ik.py): the same objective Simbody's
Assembler minimises for the tool,

    sum_i w_i |x_i(q) - m_i|^2 / sum_i w_i  +  sum_j W_j (q_j - v_j)^2

(markers goal weight 1, coordinate tasks as QValue goals with their task weight; the relative
scale of the two terms was checked against the tool with weak tasks, where it matters: the
solutions agree to < 0.001 deg), solved by
damped Gauss-Newton on Simbody's station Jacobians with a structured secant (NL2SOL) estimate of
the Hessian term Gauss-Newton leaves out, which real keypoints (cm from any model pose) make
large in weakly observed coordinates, warm-started from the previous frame's solution
extrapolated by its velocity. Coordinates that are clamped keep to their range (projected steps
with an active set); locked coordinates stay at their value. The first frame (and any frame where
the iterations cannot lower the objective from the warm start) is assembled by OpenSim's own
InverseKinematicsSolver from the model's default pose, then polished by Gauss-Newton, so the cold
start is as robust as the tool's.

Models with kinematic constraints (coordinate couplers, ...) are solved with OpenSim's solver
on every frame (slower, same results): the Gauss-Newton path handles unconstrained trees only.

Regularisation (config ik_node.regularize_unobserved, default on): the marker set's weak
coordinate priors (ik_problem.MARKER_SET_PRIORS) and a task holding every free coordinate
that moves none of the markers (`unobserved_coordinates`, e.g. mtp with BlazePose) at its default
value, the same tasks `run_ik` gives the InverseKinematicsTool. A coordinate no present marker
moves is reported with q_std = inf and confidence 0 (held at its default, or at its previous value
when its markers drop out for a while).
"""

from __future__ import annotations

import logging
import math
import time as _time
from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import numpy as np

from .errors import Sam4dcapError
from .fit_confidence import combined_confidence
from .ik_problem import (MARKER_SET_WEIGHTS, CoordinateTask, canonical_coordinates, closest_marker_set,
                         ik_regularization, unobserved_coordinates, wrap_angle)
from .model_builder import load_model
from .settings import IKSettings

log = logging.getLogger(__name__)


def state_index(state, coord, kind: str) -> int:
    """Index of an OpenSim coordinate in the state's Q ("q") or U ("u") vector, found by
    nudging it (OpenSim exposes no direct map)."""
    s = state
    if kind == "q":
        before = s.getQ().to_numpy().copy()
        coord.setValue(s, coord.getValue(s) + 0.1, False)
        after = s.getQ().to_numpy().copy()
        coord.setValue(s, coord.getValue(s) - 0.1, False)
    else:
        before = s.getU().to_numpy().copy()
        coord.setSpeedValue(s, coord.getSpeedValue(s) + 1.0)
        after = s.getU().to_numpy().copy()
        coord.setSpeedValue(s, coord.getSpeedValue(s) - 1.0)
    changed = np.flatnonzero(np.abs(after - before) > 1e-12)
    if changed.size != 1:
        raise Sam4dcapError(f"coordinate {coord.getName()} does not map to one state {kind.upper()}")
    return int(changed[0])


@dataclass(frozen=True)
class IKFrame:
    """One solved frame. q and qdot in the model's units (rad for rotations, m for translations)."""

    time_s: float
    coordinate_names: tuple[str, ...]
    q: np.ndarray
    qdot: np.ndarray | None
    marker_rms_m: float
    marker_max_m: float
    max_error_marker: str
    markers_used: int
    marker_errors_m: dict = field(default_factory=dict)   # name -> distance [m], used markers only
    q_std: np.ndarray | None = None         # estimated 1-sigma uncertainty of q (rad / m)
    confidence: np.ndarray | None = None    # per coordinate in [0, 1]: 1 = well determined by markers
    iterations: int = 0
    cold_start: bool = False
    converged: bool = True                  # False: stopped by the time budget (warm result, objective lowered)

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.coordinate_names, self.q.tolist()))


class StreamingIK:
    """Frame-by-frame IK with warm start; the engine of `sam4dcap ik --streaming` and the ik_node.

    marker_names: the order of the rows of `positions` given to `solve()`. Names the model does
    not carry are ignored (like the InverseKinematicsTool; listed in `ignored_markers`); too few
    usable markers is an error naming both sides. marker_weights None = the project's
    marker-set weights (ik_problem.MARKER_SET_WEIGHTS) when the names are a project set,
    else equal weights; names missing from given weights, or weight 0, are ignored.
    coordinate_tasks: OpenSim IKCoordinateTask equivalents; they override, per coordinate, the
    regularisation tasks added when `regularize` (None = settings.regularize_unobserved; settings
    None = the config's, `IKSettings.from_config()`; accuracy/min_markers override them):
    see `ik_problem.ik_regularization`. The tasks in effect are `coordinate_tasks`.
    """

    def __init__(self, model, marker_names: Sequence[str], *,
                 marker_weights: Mapping[str, float] | None = None,
                 coordinate_tasks: Mapping[str, CoordinateTask] | None = None,
                 accuracy: float | None = None,
                 min_markers: int | None = None,
                 constraint_weight: float = math.inf,
                 max_iterations: int = 60,
                 time_budget_s: float | None = None,
                 regularize: bool | None = None,
                 settings: IKSettings | None = None):
        settings = settings if settings is not None else IKSettings.from_config()
        self.accuracy = float(settings.accuracy if accuracy is None else accuracy)
        self.min_markers = int(settings.min_markers if min_markers is None else min_markers)
        self.constraint_weight = float(constraint_weight)
        self.max_iterations = int(max_iterations)
        # Live streams: a warm frame's Gauss-Newton stops once this much time is spent (None = no
        # limit); the next frame continues from that pose (see solve()).
        self.time_budget_s = time_budget_s
        self._budget_hit = False
        self._unconverged_step = np.zeros(0)

        self.model = load_model(model)
        self.state = self.model.initSystem()
        self.matter = self.model.getMatterSubsystem()
        names = self._init_markers(marker_names, marker_weights)
        self._init_stations(names)
        self._init_coordinates()
        self._init_tasks([names[i] for i in self._tracked], coordinate_tasks,
                         bool(settings.regularize_unobserved if regularize is None else regularize))

        n_constraints = sum(1 for i in range(self.model.getConstraintSet().getSize())
                            if self.model.getConstraintSet().get(i).isEnforced(self.state))
        self._gauss_newton = n_constraints == 0 and self._u_is_qdot()
        if not self._gauss_newton:
            log.info("model has %d enforced constraints (or q' != u): streaming IK uses OpenSim's "
                     "solver on every frame", n_constraints)
        # (q, residuals, jacobian, marker positions) of the last Gauss-Newton evaluation.
        self._last_eval: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._prev: IKFrame | None = None
        self._prev_q_full: np.ndarray | None = None
        self._q_full = self.state.getQ().to_numpy().copy()

    # --- setup (the parts of __init__) --------------------------------------------------------
    def _init_markers(self, marker_names: Sequence[str], marker_weights: Mapping[str, float] | None) -> list[str]:
        """Marker names, weights and the tracked subset (model markers with a weight > 0)."""
        model_markers = self.model.getMarkerSet()
        have = {model_markers.get(i).getName() for i in range(model_markers.getSize())}
        names = [str(n) for n in marker_names]
        # Like the InverseKinematicsTool, data markers the model does not carry are ignored.
        self.ignored_markers = tuple(n for n in names if n not in have)
        if self.ignored_markers:
            log.info("markers not on the model, ignored: %s", ", ".join(self.ignored_markers))
        self.marker_names = tuple(names)
        if marker_weights is None:
            # The project's marker-set weights when the names are one of its sets, else equal.
            key = closest_marker_set(names)
            marker_weights = MARKER_SET_WEIGHTS[key] if key else {n: 1.0 for n in names}
        weights = np.array([0.0 if n not in have else float(marker_weights.get(n, 0.0)) for n in names])
        if np.any(weights < 0) or not np.all(np.isfinite(weights)):
            raise Sam4dcapError("marker weights must be finite and >= 0")
        self.weights = weights
        self._tracked = np.flatnonzero(weights > 0)   # indices into marker_names
        if self._tracked.size < max(3, self.min_markers):
            raise Sam4dcapError(
                f"only {self._tracked.size} of the input markers are on model {self.model.getName()!r} with a "
                f"weight > 0 (need {max(3, self.min_markers)}); the markers are probably misnamed. Input: "
                f"{', '.join(names[:8])}{', ...' if len(names) > 8 else ''}; model: "
                f"{', '.join(sorted(have)[:8])}{', ...' if len(have) > 8 else ''}")
        return names

    def _init_stations(self, names: list[str]) -> None:
        """Body and station of each tracked marker, for Simbody's station Jacobian."""
        import opensim

        model_markers = self.model.getMarkerSet()
        self._markers = [model_markers.get(names[i]) for i in self._tracked]
        self._mobods = opensim.SimTKArrayMobilizedBodyIndex()
        self._stations = opensim.SimTKArrayVec3()
        for mk in self._markers:
            frame = mk.getParentFrame()
            base = frame.findBaseFrame()
            station = frame.findStationLocationInAnotherFrame(self.state, mk.get_location(), base)
            self._mobods.push_back(opensim.PhysicalFrame.safeDownCast(base).getMobilizedBodyIndex())
            self._stations.push_back(station)
        self._jac = opensim.Matrix()

    def _init_coordinates(self) -> None:
        """System Q/U index of each coordinate, which are free, bounds, defaults."""
        cs = self.model.getCoordinateSet()
        self.coordinate_names = tuple(cs.get(i).getName() for i in range(cs.getSize()))
        self._coords = [cs.get(i) for i in range(cs.getSize())]
        self._q_index = np.array([self._system_index(c, "q") for c in self._coords])
        self._u_index = np.array([self._system_index(c, "u") for c in self._coords])
        self._locked = np.array([c.getLocked(self.state) for c in self._coords])
        self._free = np.flatnonzero(~self._locked)
        lo = np.array([c.getRangeMin() for c in self._coords])
        hi = np.array([c.getRangeMax() for c in self._coords])
        clamped = np.array([c.getClamped(self.state) for c in self._coords])
        self._lo = np.where(clamped, lo, -np.inf)
        self._hi = np.where(clamped, hi, np.inf)
        self._rotational = np.array([c.getMotionType() == 1 for c in self._coords])  # 1 = Rotational
        # Rotations without a range to keep to (the free joint's): kept canonical (wrapped, one form).
        self.unbounded_rotations = self._rotational & ~clamped & ~np.array([c.getLocked(self.state)
                                                                           for c in self._coords])
        self._default_q = np.array([c.getDefaultValue() for c in self._coords])

    def _init_tasks(self, tracked_names: list[str], coordinate_tasks: Mapping[str, CoordinateTask] | None,
                    regularize: bool) -> None:
        """Coordinate tasks in effect: regularisation of the unobserved ones, overridden by the given."""
        self.unobserved_coordinates = unobserved_coordinates(self.model, tracked_names, state=self.state)
        tasks = {}
        if regularize:
            tasks = ik_regularization(tracked_names, self.coordinate_names,
                                      unobserved=self.unobserved_coordinates,
                                      locked=[n for n, lk in zip(self.coordinate_names, self._locked) if lk])
        tasks.update(coordinate_tasks or {})
        bad = [n for n in tasks if n not in self.coordinate_names]
        if bad:
            raise Sam4dcapError(f"coordinate task(s) for unknown coordinate(s): {', '.join(bad)}")
        self._task_idx = np.array([self.coordinate_names.index(n) for n in tasks if tasks[n].weight > 0
                                   and not self._locked[self.coordinate_names.index(n)]], dtype=int)
        self._task_w = np.array([tasks[self.coordinate_names[i]].weight for i in self._task_idx])
        self._task_v = np.array([self._default_q[i] if tasks[self.coordinate_names[i]].value is None
                                 else tasks[self.coordinate_names[i]].value for i in self._task_idx])
        self.coordinate_tasks = tasks

    # --- setup helpers ------------------------------------------------------------------------
    def _system_index(self, coord, kind: str) -> int:
        return state_index(self.state, coord, kind)

    def _u_is_qdot(self) -> bool:
        """True when every mobilizer's q' = u (OpenSim CustomJoint/PinJoint/...): J_q = J_u."""
        import opensim

        s = self.state
        nq, nu = s.getNQ(), s.getNU()
        if nq != nu:
            return False
        out = opensim.Vector(nq, 0.0)
        for k in range(nu):
            u = opensim.Vector(nu, 0.0)
            u.set(k, 1.0)
            self.matter.multiplyByN(s, False, u, out)
            col = out.to_numpy()
            expect = np.zeros(nq)
            expect[k] = 1.0
            if not np.allclose(col, expect, atol=1e-12):
                return False
        return True

    # --- public -------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the previous frame: the next solve() starts cold (OpenSim assembly)."""
        self._prev = None
        self._prev_q_full = None

    def solve(self, time_s: float, positions) -> IKFrame | None:
        """Solve one frame. positions: (M, 3) metres in `marker_names` order, NaN = missing.

        Returns None when fewer than `min_markers` tracked markers are present; the solve after
        such a frame starts cold (no warm start from the pose before the person was lost).
        """
        pos = np.asarray(positions, dtype=float)
        if pos.shape != (len(self.marker_names), 3):
            raise Sam4dcapError(f"positions must be ({len(self.marker_names)}, 3) metres in marker_names "
                                f"order; got shape {pos.shape}")
        obs = pos[self._tracked]
        present = np.isfinite(obs).all(axis=1)
        if int(present.sum()) < self.min_markers:
            log.debug("t=%.3f: %d markers present < min_markers=%d", time_s, present.sum(), self.min_markers)
            self.reset()
            return None
        if np.nanmax(np.abs(obs)) > 50.0:
            raise Sam4dcapError(f"marker coordinates up to {np.nanmax(np.abs(obs)):.0f} m: "
                                "positions must be in metres (convert mm data first)")
        cold = self._prev is None
        if not self._gauss_newton:
            # Constrained models: OpenSim's solver every frame, warm-started from the last pose.
            q_full = self._assemble_with_opensim(time_s, pos, q_start=None if cold else self._prev_q_full)
        elif cold:
            q_full = self._assemble_with_opensim(time_s, pos)
        else:
            assert self._prev is not None and self._prev_q_full is not None   # not cold
            q_full = self._prev_q_full.copy()
            dt = time_s - self._prev.time_s
            if self._prev.qdot is not None and 0 < dt < 0.5:
                q_full[self._q_index] += self._prev.qdot * dt
        iterations = 0
        self._budget_hit = False
        if self._gauss_newton:
            deadline = None if cold or not self.time_budget_s else _time.perf_counter() + self.time_budget_s
            q_full, iterations, ok = self._gauss_newton_solve(q_full, obs, present, deadline=deadline)
            if not ok and not cold and self._budget_hit:
                # Out of time, not out of luck: every step lowered the objective; the next frame
                # warm-starts from here (no cold assembly, which would cost several budgets).
                pass
            elif not ok and not cold:
                # Rare now (about 1 frame in 100 on real BlazePose markers, a long curved valley):
                # OpenSim's assembler from the default pose, polished, and the lower objective of
                # the two is kept; the warm result only ever lowered the objective of the warm
                # start, the cold one can leave a wrong basin (after a fast move).
                log.debug("t=%.3f: Gauss-Newton did not converge; also assembling cold", time_s)
                warm, warm_iterations = q_full, iterations
                q_full = self._assemble_with_opensim(time_s, pos)
                q_full, more, ok = self._gauss_newton_solve(q_full, obs, present)
                iterations += more
                cold = True
                if self._objective(warm, obs, present) <= self._objective(q_full, obs, present):
                    q_full, cold, self._last_eval = warm, False, None
                    iterations = warm_iterations + more
        q_full = self._undo_whole_turns(q_full, obs, present)
        q_full[self._q_index] = canonical_coordinates(self.coordinate_names, q_full[self._q_index],
                                                      unbounded_rotations=self.unbounded_rotations)
        frame = self._make_frame(time_s, q_full, obs, present, iterations, cold)
        if self._budget_hit:
            # Not converged: the last step counts as an expected error on top of the local
            # std (the map of _uncertainty), so a coordinate still moving by degrees is not
            # reported as well determined.
            step = np.zeros(len(self.coordinate_names))
            step[self._free] = self._unconverged_step
            conf = combined_confidence(frame.q_std, step ** 2, self._rotational) if frame.q_std is not None else None
            frame = replace(frame, converged=False, confidence=conf)
        self._prev = frame
        self._prev_q_full = q_full
        return frame

    @property
    def coordinate_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) bound of each coordinate IK keeps to: its range when the model clamps
        it, else -inf / inf (coordinate_names order; rad or m)."""
        return self._lo.copy(), self._hi.copy()

    # --- the problem's kinematics, for fitters that build their own objective (camera_fit) --------
    @property
    def tracked_marker_names(self) -> tuple[str, ...]:
        """The markers on the model with a weight > 0, the rows of `marker_kinematics`."""
        return tuple(self.marker_names[i] for i in self._tracked)

    @property
    def tracked_marker_weights(self) -> np.ndarray:
        return self.weights[self._tracked].copy()

    @property
    def tracked_markers(self) -> list:
        """The model's Marker objects of `tracked_marker_names` (read their frames and locations)."""
        return list(self._markers)

    def move_markers(self, offsets: Mapping[str, np.ndarray]) -> None:
        """Move tracked markers on their bodies by offsets (metres, each in its parent frame; as
        marker_placement finds them): the kinematics and Jacobians use the new places."""
        import opensim

        for mk, name in zip(self._markers, self.tracked_marker_names):
            if name in offsets:
                loc = mk.get_location().to_numpy() + np.asarray(offsets[name], float)
                mk.set_location(opensim.Vec3(*[float(v) for v in loc]))
        self._init_stations(list(self.marker_names))
        self._last_eval = None

    @property
    def free_coordinates(self) -> np.ndarray:
        """Indices (into coordinate_names) of the unlocked coordinates, the columns of the Jacobian."""
        return self._free.copy()

    @property
    def rotational(self) -> np.ndarray:
        return self._rotational.copy()

    @property
    def default_q(self) -> np.ndarray:
        return self._default_q.copy()

    @property
    def supports_jacobian(self) -> bool:
        """False for models with enforced constraints (station Jacobians alone do not describe them)."""
        return self._gauss_newton

    def task_terms(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The coordinate tasks in effect: (coordinate indices, weights, target values)."""
        return self._task_idx.copy(), self._task_w.copy(), self._task_v.copy()

    def marker_kinematics(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tracked marker positions (M, 3) in ground and d(positions)/d(free q) (M, 3, n_free) at
        the coordinate values q (coordinate_names order)."""
        q_full = self._q_full.copy()
        q_full[self._q_index] = np.asarray(q, float)
        self._set_q(q_full)
        x = self._marker_positions()
        return x, self._jacobian().reshape(len(self._markers), 3, -1)

    def solve_from(self, time_s: float, positions, starts: Sequence[np.ndarray]) -> IKFrame | None:
        """Solve one frame from each start pose (coordinate values in `coordinate_names` order,
        clipped into the clamped ranges) and keep the solution with the lowest objective.

        The warm start of solve() is left alone and the frame carries no qdot. run_ik re-solves
        with it the frames where the InverseKinematicsTool left a clamped coordinate's range.
        """
        pos = np.asarray(positions, dtype=float)
        if pos.shape != (len(self.marker_names), 3):
            raise Sam4dcapError(f"positions must be ({len(self.marker_names)}, 3) metres in marker_names "
                                f"order; got shape {pos.shape}")
        obs = pos[self._tracked]
        present = np.isfinite(obs).all(axis=1)
        if int(present.sum()) < self.min_markers or not starts:
            return None
        best: tuple[float, np.ndarray, int] | None = None
        for start in starts:
            q_full = self._q_full.copy()
            q_full[self._q_index] = np.clip(np.asarray(start, float), self._lo, self._hi)
            if self._gauss_newton:
                q_full, iterations, _ = self._gauss_newton_solve(q_full, obs, present)
            else:
                q_full, iterations = self._assemble_with_opensim(time_s, pos, q_start=q_full), 0
            r = self._residuals(q_full, obs, present)[0]
            if best is None or r @ r < best[0]:
                best = (float(r @ r), q_full, iterations)
        assert best is not None   # starts is not empty
        self._last_eval = None
        saved, self._prev = self._prev, None
        try:
            return self._make_frame(time_s, best[1], obs, present, best[2], False)
        finally:
            self._prev = saved

    # --- internals ------------------------------------------------------------------------------
    def _set_q(self, q_full: np.ndarray) -> None:
        import opensim

        self.state.setQ(opensim.Vector.createFromMat(q_full))
        self.model.realizePosition(self.state)

    def _marker_positions(self) -> np.ndarray:
        s = self.state
        return np.array([mk.getLocationInGround(s).to_numpy() for mk in self._markers])

    def _jacobian(self) -> np.ndarray:
        """d(marker positions)/d(free coordinates): (3 * n_tracked, n_free)."""
        self.matter.calcStationJacobian(self.state, self._mobods, self._stations, self._jac)
        jac = self._jac.to_numpy()
        return jac[:, self._u_index[self._free]]

    def _residuals(self, q_full, obs, present):
        """Weighted residual vector and its Jacobian (rows: present markers xyz, then tasks)."""
        self._set_q(q_full)
        x = self._marker_positions()
        w = self.weights[self._tracked][present]
        sqrt_w = np.sqrt(w / w.sum())       # markers goal: sum w r^2 / sum w (weight 1)
        r_m = ((x[present] - obs[present]) * sqrt_w[:, None]).reshape(-1)
        jac_all = self._jacobian().reshape(len(self._markers), 3, -1)
        j_m = (jac_all[present] * sqrt_w[:, None, None]).reshape(-1, self._free.size)
        if self._task_idx.size:
            q = q_full[self._q_index]
            sqrt_t = np.sqrt(self._task_w)   # QValue goal: W (q - v)^2, same scale as the markers goal
            r_t = sqrt_t * (q[self._task_idx] - self._task_v)
            j_t = np.zeros((self._task_idx.size, self._free.size))
            for row, ci in enumerate(self._task_idx):
                j_t[row, np.searchsorted(self._free, ci)] = sqrt_t[row]
            r_m = np.concatenate([r_m, r_t])
            j_m = np.vstack([j_m, j_t])
        return r_m, j_m, x

    def _gauss_newton_solve(self, q_full, obs, present, *, deadline: float | None = None):
        """Gauss-Newton with a structured secant correction and Levenberg-Marquardt damping.

        Real markers (BlazePose keypoints, a few cm from any model pose) make this a
        large-residual problem: in weakly observed directions (forearm rotation, wrist, subtalar)
        the Hessian term Gauss-Newton leaves out (sum r_i d2r_i/dq2) is as large as J^T J, so
        plain Gauss-Newton converges there only linearly (each step 0.75-0.9 times the last,
        measured on the demo clip) and 25 iterations did not reach the step tolerance. The
        missing term is estimated from the steps taken (Dennis, Gay & Welsch's NL2SOL update,
        sized down when it over-estimates, restarted every 20 iterations), which restores fast
        convergence; whenever J^T J + S is not positive definite the plain Gauss-Newton step is
        taken instead.
        Clamped coordinates keep to their range by an active set (projected steps): a
        coordinate at a bound whose gradient pushes it outward is held there and the step is
        solved for the others. Stops once an undamped step moves no free coordinate by more than
        the step tolerance (30x the accuracy: at the gait setup's 1e-5 the result is
        0.002 deg from the converged answer, the InverseKinematicsTool's 0.12 deg; 10x cost ~25 %
        more CPU a frame for 0.001 deg): with the curvature corrected that step is the
        distance to the optimum. Returns (q_full, iterations, converged); a step sequence that
        runs out of iterations still only ever lowered the objective from the start. With a
        `deadline` (time.perf_counter()), the iterations also stop once it has passed (at least
        one step is taken; self._budget_hit says so).
        The final pose is evaluated by the caller (_make_frame).
        """
        q_full = q_full.copy()
        free_q = self._q_index[self._free]
        lo, hi = self._lo[self._free], self._hi[self._free]
        bounded = bool(np.isfinite(lo).any() or np.isfinite(hi).any())
        q_full[free_q] = np.clip(q_full[free_q], lo, hi)
        r, jac, x = self._residuals(q_full, obs, present)
        cost = 0.5 * r @ r
        step_tol = max(self.accuracy * 30.0, 1e-9)
        damping = 0.0
        secant = np.zeros((free_q.size, free_q.size))   # estimate of sum r_i d2r_i/dq2
        for it in range(1, self.max_iterations + 1):
            grad = jac.T @ r
            q = q_full[free_q]
            if bounded:
                held = ((q <= lo) & (grad > 0)) | ((q >= hi) & (grad < 0))
                move = np.flatnonzero(~held)
            else:
                move = np.arange(q.size)
            jtj = jac[:, move].T @ jac[:, move]
            hess = jtj + secant[np.ix_(move, move)]
            try:
                np.linalg.cholesky(hess + 1e-12 * np.eye(move.size))
            except np.linalg.LinAlgError:
                secant[:] = 0.0
                hess = jtj
            g = grad[move]
            eye = np.eye(move.size)
            first = True
            while True:
                # Convergence is judged on the undamped step (a damped step is short anywhere).
                d = 0.0 if first else damping
                a = hess + (d * np.diag(np.diag(jtj)) + 1e-12 * eye if d else 1e-12 * eye)
                try:
                    step = -np.linalg.solve(a, g)
                except np.linalg.LinAlgError:
                    step = -np.linalg.lstsq(a, g, rcond=None)[0]
                trial = q_full.copy()
                trial[free_q[move]] = np.clip(q[move] + step, lo[move], hi[move])
                moved = float(np.max(np.abs(trial[free_q] - q), initial=0.0))
                if first and moved < step_tol:
                    # Keep the last evaluation for the frame report: the final step moved no
                    # coordinate by more than step_tol, so marker errors differ by < ~step_tol m.
                    self._last_eval = (q.copy(), r, jac, x)
                    return trial, it, True
                if first and damping:
                    first = False
                    continue
                first = False
                r_new, jac_new, x_new = self._residuals(trial, obs, present)
                cost_new = 0.5 * r_new @ r_new
                if cost_new <= cost:
                    damping = damping * 0.1 if damping > 1e-6 else 0.0
                    break
                damping = 1e-4 if damping == 0.0 else damping * 10.0
                if damping > 1e8:
                    return q_full, it, False
            if it % 20 == 0:
                # Along a long curved valley the estimate goes stale (measured: a frame crawling
                # 5 deg short of the optimum after 60 iterations converged in 60 more from a
                # fresh estimate): start it afresh now and then.
                secant[:] = 0.0
            self._update_secant(secant, trial[free_q] - q, jac, jac_new, r, r_new)
            q_full, r, jac, x, cost = trial, r_new, jac_new, x_new, cost_new
            if deadline is not None and _time.perf_counter() > deadline:
                self._budget_hit = True
                self._last_eval = (q_full[free_q].copy(), r, jac, x)
                # The last step per coordinate: about the distance still to go (fast convergence)
                # or less (slow, weakly observed ones): the frame's confidence accounts for it.
                self._unconverged_step = np.abs(trial[free_q] - q)
                return q_full, it, False
        return q_full, self.max_iterations, False

    @staticmethod
    def _update_secant(secant, s, jac, jac_new, r, r_new) -> None:
        """NL2SOL update (in place) of the estimate S of sum r_i d2r_i/dq2 after the step s:
        S s should equal (J_new - J)^T r_new; S is first sized down when s^T S s over-states it."""
        y = jac_new.T @ r_new - jac.T @ r            # change of the true gradient
        y_sharp = (jac_new - jac).T @ r_new           # the part of it S has to explain
        ys = float(y @ s)
        if not ys > 1e-14 * float(np.linalg.norm(y) * np.linalg.norm(s)) or ys <= 0.0:
            return
        s_s = secant @ s
        sts = float(s @ s_s)
        if sts > 0.0:
            tau = min(1.0, abs(float(s @ y_sharp)) / sts)
            secant *= tau
            s_s *= tau
        v = y_sharp - s_s
        secant += (np.outer(v, y) + np.outer(y, v)) / ys - (float(v @ s) / ys ** 2) * np.outer(y, y)

    def _objective(self, q_full, obs, present) -> float:
        r = self._residuals(q_full, obs, present)[0]
        return float(r @ r)

    def _undo_whole_turns(self, q_full, obs, present):
        """Take back whole turns a rotation made since the previous frame when the pose is the same.

        In a flat valley of the objective (e.g. arm rotation against pronation with few hand
        markers) a Gauss-Newton step can land on the same pose with rotations 360 deg on; the
        velocity warm start would then carry the jump on, frame after frame. The unwrapped
        solution is kept only if its objective is no worse (same pose, same task costs).
        """
        if self._prev is None:
            return q_full
        q = q_full[self._q_index]
        turns = np.round((q - self._prev.q) / (2.0 * np.pi))
        back = q - 2.0 * np.pi * turns
        which = np.flatnonzero((turns != 0) & self._rotational & ~self._locked
                               & (back >= self._lo) & (back <= self._hi))
        if not which.size:
            return q_full
        trial = q_full.copy()
        trial[self._q_index[which]] = back[which]
        r_now = self._residuals(q_full, obs, present)[0]
        r_back = self._residuals(trial, obs, present)[0]
        if r_back @ r_back <= (r_now @ r_now) * (1.0 + 1e-9) + 1e-18:
            return trial
        return q_full

    def _assemble_with_opensim(self, time_s: float, pos: np.ndarray, q_start=None) -> np.ndarray:
        """OpenSim's InverseKinematicsSolver on one frame, from q_start or the model's default pose."""
        import opensim

        names = [self.marker_names[i] for i in self._tracked]
        table = opensim.TimeSeriesTableVec3()
        table.setColumnLabels(names)
        row = opensim.RowVectorVec3(len(names))
        for k, i in enumerate(self._tracked):
            p = pos[i]
            row[k] = opensim.Vec3(*p) if np.all(np.isfinite(p)) else opensim.Vec3(np.nan, np.nan, np.nan)
        table.appendRow(float(time_s), row)
        weight_set = opensim.SetMarkerWeights()
        for k, i in enumerate(self._tracked):
            weight_set.cloneAndAppend(opensim.MarkerWeight(names[k], float(self.weights[i])))
        markers_ref = opensim.MarkersReference(table, weight_set)
        coord_refs = opensim.SimTKArrayCoordinateReference()
        for ci, w, v in zip(self._task_idx, self._task_w, self._task_v):
            coord_refs.push_back(opensim.CoordinateReference(self.coordinate_names[ci], opensim.Constant(float(v))))
            coord_refs.back().setWeight(float(w))
        solver = opensim.InverseKinematicsSolver(self.model, markers_ref, coord_refs, self.constraint_weight)
        solver.setAccuracy(self.accuracy)
        s = self.state
        s.setTime(float(time_s))
        if q_start is not None:
            s.setQ(opensim.Vector.createFromMat(np.asarray(q_start, float)))
        else:
            for c, q0 in zip(self._coords, self._default_q):
                if not c.getLocked(s):
                    c.setValue(s, float(q0), False)
        try:
            solver.assemble(s)
        except Exception as exc:  # noqa: BLE001
            raise Sam4dcapError(f"t={time_s:.3f} s: the model cannot be assembled to these markers "
                                f"({str(exc).splitlines()[0]}); {self._worst_markers_text(pos)}") from None
        return s.getQ().to_numpy().copy()

    def _worst_markers_text(self, pos: np.ndarray, n: int = 3) -> str:
        self.model.realizePosition(self.state)
        x = self._marker_positions()
        obs = pos[self._tracked]
        d = np.linalg.norm(x - obs, axis=1)
        order = [k for k in np.argsort(-np.nan_to_num(d, nan=-1.0)) if np.isfinite(d[k])][:n]
        return "worst markers: " + ", ".join(f"{self.marker_names[self._tracked[k]]} {d[k] * 1000:.0f} mm"
                                              for k in order)

    def _make_frame(self, time_s, q_full, obs, present, iterations, cold) -> IKFrame:
        last, self._last_eval = self._last_eval, None
        if last is not None and np.max(np.abs(last[0] - q_full[self._q_index[self._free]])) < 1e-3:
            r, jac, x = last[1:]
        else:
            r, jac, x = self._residuals(q_full, obs, present)
        err = np.linalg.norm(x - obs, axis=1)
        used = np.flatnonzero(present)
        n_marker_rows = 3 * used.size
        blind = np.flatnonzero(np.linalg.norm(jac[:n_marker_rows], axis=0) < 1e-12)   # into _free
        untasked = np.setdiff1d(self._free[blind], self._task_idx)
        if untasked.size and self._prev is not None:
            # No present marker moves them (markers dropped out) and no task holds them: keep the
            # previous value rather than the velocity-extrapolated warm start (no marker changes).
            q_full[self._q_index[untasked]] = self._prev.q[untasked]
        errors = {self.marker_names[self._tracked[k]]: float(err[k]) for k in used}
        worst = max(errors, key=errors.__getitem__)
        q = q_full[self._q_index].copy()
        qdot = None
        if self._prev is not None:
            dt = time_s - self._prev.time_s
            if dt > 0:
                dq = q - self._prev.q
                # Canonical (wrapped) rotations: the short way round.
                dq[self.unbounded_rotations] = wrap_angle(dq[self.unbounded_rotations])
                qdot = dq / dt
        q_std, confidence = self._uncertainty(jac, err[used], present, blind)
        return IKFrame(time_s=float(time_s), coordinate_names=self.coordinate_names, q=q, qdot=qdot,
                       marker_rms_m=float(np.sqrt(np.mean(err[used] ** 2))),
                       marker_max_m=float(err[used].max()), max_error_marker=worst,
                       markers_used=int(used.size), marker_errors_m=errors, q_std=q_std,
                       confidence=confidence, iterations=iterations, cold_start=cold)

    def _uncertainty(self, jac, err_used, present, blind):
        """1-sigma coordinate uncertainty and a [0, 1] confidence per coordinate.

        Sandwich covariance of the weighted least-squares estimate, with every present marker's
        position noise taken as the frame's RMS marker error per axis (at least 2 mm): marker rows
        of `jac` are scaled by s_i = sqrt(w_i / sum w), so cov = sigma^2 A (J_m^T S^2 J_m) A with
        A = (J^T J)^-1 (coordinate tasks act as exact priors). Confidence maps sigma as the camera
        fit's (`fit_confidence.combined_confidence`, no flip term: 3D markers carry no image):
        1 / (1 + (sigma / ref)^2) with ref = 5 deg (rotations) / 5 cm (translations), 0.5 at ref,
        the gate of JointKinematics.confidence.
        Coordinates no present marker moves (`blind`, indices into the free coordinates) are not
        measured at all, whatever a task holds them to: q_std = inf, confidence 0. The priors'
        bias (a regularised coordinate pulled away from the truth) is not part of q_std.
        """
        n = len(self.coordinate_names)
        q_std = np.zeros(n)
        sigma = max(float(np.sqrt(np.mean(err_used ** 2)) / np.sqrt(3.0)), 0.002)
        w = self.weights[self._tracked][present]
        s2 = np.repeat(w / w.sum(), 3)
        jm = jac[:s2.size]
        a = np.linalg.pinv(jac.T @ jac, rcond=1e-12)
        cov = sigma ** 2 * a @ (jm.T @ (jm * s2[:, None])) @ a
        q_std[self._free] = np.sqrt(np.clip(np.diag(cov), 0.0, None))
        q_std[self._free[blind]] = np.inf
        return q_std, combined_confidence(q_std, np.zeros(n), self._rotational)


def solve_trial(ik: StreamingIK, markers, *, start_s: float | None = None, end_s: float | None = None):
    """Run a StreamingIK over a marker TimeSeries; returns (frames, per-frame solve seconds)."""
    series = markers.slice_time(start_s, end_s) if (start_s is not None or end_s is not None) else markers
    series = series.select(ik.marker_names)
    if series.unit != "m":
        series = series.to_unit("m")
    frames: list[IKFrame | None] = []
    seconds = np.empty(series.n_frames)
    for k in range(series.n_frames):
        t0 = _time.perf_counter()
        frames.append(ik.solve(float(series.time[k]), series.values[k]))
        seconds[k] = _time.perf_counter() - t0
    return frames, seconds
