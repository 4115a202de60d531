"""trial_writer_node: records the session's markers, kinematics and kinetics; writes TRC/MOT/STO
at the end of each trial (`trial_recording` does the work).

- Subscribes /sam4dcap/markers, /sam4dcap/joint_kinematics, /sam4dcap/joint_kinetics.
- Services ~/start_trial (StartTrial) and ~/stop_trial (StopTrial). Starting while a trial
  records finishes (writes) that one first.
- `auto_start` (default): a trial starts with the node, so an offline run is one trial without
  any service call. On shutdown (SIGINT/SIGTERM, the graph runner ending after a file source)
  the current trial is written by `close()`.
Files: <output_dir>/<trial>/<trial>.trc, _ik.mot, _ik_errors.sto, _id.sto, _trial.json.
"""

from __future__ import annotations

import numpy as np
from rclpy.node import Node

from ..errors import Sam4dcapError
from ..trial_recording import TrialRecording
# The file writers' lazy import (scipy via trc -> filters: seconds on a busy machine) happens at
# start, not in the final write at shutdown, where it made the node miss launch's 5 s SIGINT
# grace period (launch then escalates to SIGTERM, then SIGKILL).
from .. import filters  # noqa: F401
from ..ros.msg_conversion import points_to_array, stamp_to_sec
from ..ros.node_plumbing import DEEP_QOS, NodeDiagnostics, declare_parameters, run_node
from ..ros.topics import KINEMATICS_TOPIC, KINETICS_TOPIC, MARKERS_TOPIC, relative_topic


class TrialWriterNode(Node):
    def __init__(self):
        super().__init__("trial_writer_node")
        self.diagnostics = NodeDiagnostics(self)
        from sam4dcap_msgs.msg import JointKinematics, JointKinetics, VirtualMarkers
        from sam4dcap_msgs.srv import StartTrial, StopTrial

        self.p = p = declare_parameters(self, "trial_writer_node", runtime=("output_dir",))  # next trial
        self.trial: TrialRecording | None = None
        self._person_ids: set[int] = set()
        if p["auto_start"]:
            try:
                self.trial = TrialRecording(p["trial_name"], p["output_dir"])
            except Sam4dcapError as exc:
                raise Sam4dcapError(f"parameter trial_writer_node.trial_name: {exc}") from None
        self.create_subscription(VirtualMarkers, relative_topic(MARKERS_TOPIC), self._on_markers, DEEP_QOS)
        self.create_subscription(JointKinematics, relative_topic(KINEMATICS_TOPIC), self._on_kinematics, DEEP_QOS)
        self.create_subscription(JointKinetics, relative_topic(KINETICS_TOPIC), self._on_kinetics, DEEP_QOS)
        self.create_service(StartTrial, "~/start_trial", self._on_start)
        self.create_service(StopTrial, "~/stop_trial", self._on_stop)
        if self.trial is not None:
            self.get_logger().info(f"recording trial {self.trial.name!r} into {self.trial.folder}")

    # --- samples -------------------------------------------------------------------------
    def _check_person(self, person_id: int) -> None:
        if person_id not in self._person_ids:
            self._person_ids.add(person_id)
            if len(self._person_ids) > 1:
                self.get_logger().warning(f"samples of several bodies ({sorted(self._person_ids)}) arrive; "
                                          "the trial files mix them")

    def _add(self, what: str, add, *args, **kwargs) -> None:
        try:
            add(*args, **kwargs)
        except Sam4dcapError as exc:
            self.get_logger().warning(f"{what} sample skipped: {exc}", throttle_duration_sec=5.0)

    def _on_markers(self, msg) -> None:
        if self.trial is None:
            return
        self._check_person(msg.person_id)
        positions = points_to_array(msg.positions)
        self._add("markers", self.trial.add_markers, stamp_to_sec(msg.header.stamp), list(msg.names), positions,
                  marker_set=msg.marker_set)

    def _on_kinematics(self, msg) -> None:
        if self.trial is None:
            return
        self._check_person(msg.person_id)
        self._add("kinematics", self.trial.add_kinematics, stamp_to_sec(msg.header.stamp), list(msg.name),
                  np.asarray(msg.position, dtype=float), model_name=msg.model_name,
                  marker_error_rms_m=msg.marker_error_rms, marker_error_max_m=msg.marker_error_max,
                  markers_used=msg.markers_used)

    def _on_kinetics(self, msg) -> None:
        if self.trial is None:
            return
        self._check_person(msg.person_id)
        self._add("kinetics", self.trial.add_kinetics, stamp_to_sec(msg.header.stamp), list(msg.name),
                  np.asarray(msg.generalized_force, dtype=float), no_external_loads=msg.no_external_loads)

    # --- trials --------------------------------------------------------------------------
    def _finish(self) -> tuple[bool, str, list[str]]:
        """Write the current trial (if any) and forget it: (success, message, files)."""
        trial, self.trial = self.trial, None
        if trial is None:
            return False, "no trial is recording: call ~/start_trial first", []
        try:
            result = trial.write()
        except Sam4dcapError as exc:
            return False, str(exc), []
        files = [str(f) for f in result.files]
        counts = ", ".join(f"{n} {k}" for k, n in trial.counts.items() if n)
        message = f"trial {trial.name!r}: {counts} samples -> {len(files)} files in {trial.folder}"
        if trial.no_external_loads:
            message += " (no external loads: pelvis residuals in the _id.sto are not physical)"
        if result.problems:
            message += "; not written: " + "; ".join(result.problems)
        return not result.problems, message, files

    def _on_start(self, request, response):
        try:
            new_trial = TrialRecording(request.trial_name, self.p["output_dir"])
        except Sam4dcapError as exc:
            response.success, response.message = False, str(exc)
            return response
        previous = ""
        if self.trial is not None:
            if self.trial.is_empty:
                previous = f"; trial {self.trial.name!r} had no samples, discarded"
                self.trial = None
            else:
                _, text, _ = self._finish()
                previous = f"; finished the previous {text}"
        if new_trial.folder.exists() and any(new_trial.folder.iterdir()):
            self.get_logger().warning(f"{new_trial.folder} already holds files: they will be overwritten")
        self.trial = new_trial
        response.success = True
        response.output_dir = str(new_trial.folder)
        response.message = f"recording trial {new_trial.name!r} into {new_trial.folder}{previous}"
        self.get_logger().info(response.message)
        return response

    def _on_stop(self, request, response):
        response.success, response.message, response.files = self._finish()
        if response.success:
            self.get_logger().info(response.message)
        else:
            self.get_logger().warning(response.message)
        return response

    def close(self) -> list[str]:
        """Write the trial in progress (shutdown, end of a file source). Returns the files."""
        if self.trial is None or self.trial.is_empty:
            self.trial = None
            return []
        ok, message, files = self._finish()
        # The ROS logger may be gone at shutdown: print as well, the graph runner shows stderr.
        import sys

        print(f"trial_writer_node: {message}", file=sys.stderr, flush=True)
        return files


def main(args=None) -> int:
    return run_node(TrialWriterNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
