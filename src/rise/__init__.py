"""RISE for ROS 2: robot policies that improve by practising in a learned world model.

A regular package (not a namespace package), so ``find_packages`` and a ROS 2 build install it.
"""
