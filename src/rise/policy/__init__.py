"""Advantage-conditioned policy (ROS-free): advantage labels and bins (:mod:`.advantage`), the
flow-matching network (:mod:`.model`) and the deployable, saveable wrapper (:mod:`.policy_io`).

Kept import-light: ``rise.policy.advantage`` needs only numpy.
"""
