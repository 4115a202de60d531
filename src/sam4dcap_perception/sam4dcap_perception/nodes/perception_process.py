"""perception_process: video_source_node and body_estimator_node in one process.

The two nodes are the same classes as in their own processes (same names, parameters, topics,
frame acks and diagnostics); what changes is the hand-off: each frame goes from the source's
reading thread to the body estimator as an array (`VideoSourceNode(local_images=...)` ->
`BodyEstimatorNode.take_image`), so no image message is built, serialized, copied between
processes and parsed again. /camera/image_raw is still published while another node (the
recorder, an image viewer) subscribes to it. rclpy has no intra-process transport: this is that
transport for the one topic whose messages are megabytes.

Reading and decoding run on the source's thread, the estimator on the executor's thread
(MediaPipe releases Python's lock while it infers), so the two overlap on two cores. Live
(realtime), the newest waiting frame wins and the others are counted as skipped on /diagnostics
(body_estimator_node's frames_skipped); offline every frame is processed in order (the source's
frame acks bound the frames in flight). Started by `sam4dcap graph --one-process-perception`
and by the launch file's `one_process_perception:=true`; its parameters come as one params file
with a section per node.
"""

from __future__ import annotations

from sam4dcap_biomech.ros.node_plumbing import run_node

from .body_estimator_node import BodyEstimatorNode
from .video_source_node import VideoSourceNode

# The nodes this process runs (the graph runner and the launch file start it in their place).
NODE_NAMES = ("video_source_node", "body_estimator_node")


def make_nodes():
    """(video source, body estimator): the source hands its frames to the estimator in-process."""
    body = BodyEstimatorNode(local_images=True, newest_only=True)
    try:
        source = VideoSourceNode(local_images=body.take_image, local_idle=body.wait_local_idle)
    except BaseException:
        body.close()
        body.destroy_node()
        raise
    # Offline (a file or bag at its own pace): every frame, in order. (The source's thread
    # hands over no frame before the pipeline is ready, well after this.)
    body.newest_only = not source.offline
    return source, body


def main(args=None) -> int:
    # As video_source_node alone: a failed source ends the process with exit code 1.
    return run_node(make_nodes, args, final_error=lambda node: node.error)


if __name__ == "__main__":
    raise SystemExit(main())
