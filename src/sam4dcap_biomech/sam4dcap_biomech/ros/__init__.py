"""The ROS layer both packages share (topic names, QoS, node plumbing, message conversion)."""
