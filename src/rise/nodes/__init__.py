"""Thin rclpy nodes over the ROS-free core, one node per file, each with a ``main()``."""
