"""World-model and policy models (ROS-free): dynamics, value, policy; their data and checkpoints."""
