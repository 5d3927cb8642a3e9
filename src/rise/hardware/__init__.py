"""ROS-free hardware code: camera drivers, the arm safety filter, teleop devices.

Nothing here imports ``rclpy``; the nodes in ``rise.nodes`` wrap these classes.
"""
