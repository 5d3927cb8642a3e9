"""launch_testing check of the installed ``bringup.launch.py``, one mode per run.

Run by tests/test_ros2_launch.py as ``launch_test check_bringup.launch.py mode:=M config:=C`` in a
sourced colcon workspace, with ``RISE_CHECK_MODE`` (M) and ``RISE_CHECK_EXPECTED_NODES`` (JSON list:
what ``rise nodes`` says the mode starts) in the environment. While the stack runs, a plain rclpy
client checks that exactly those nodes are up, the monitor agrees, the simulated robot's topics
flow and, in deploy mode, that a trajectory on /rise/policy/command moves the arm through the
bridge. After launch_test's shutdown every process must have exited 0 without a traceback.
"""

import json
import os
import time
import unittest
from pathlib import Path

import launch_testing
import launch_testing.actions
import launch_testing.asserts
import rclpy
from ament_index_python.packages import get_package_share_directory
from builtin_interfaces.msg import Duration
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from rise.config import load_robot

MODE = os.environ["RISE_CHECK_MODE"]
EXPECTED = json.loads(os.environ["RISE_CHECK_EXPECTED_NODES"])
ARM_JOINTS = list(load_robot("sim").arm.joint_names)


def generate_test_description():
    bringup = Path(get_package_share_directory("rise")) / "launch" / "bringup.launch.py"
    return LaunchDescription([
        DeclareLaunchArgument("mode"),
        DeclareLaunchArgument("config"),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(str(bringup)),
            launch_arguments={"mode": LaunchConfiguration("mode"),
                              "config": LaunchConfiguration("config")}.items()),
        launch_testing.actions.ReadyToTest(),
    ])


class TestRunningStack(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rclpy.init(args=[])  # not launch_test's argv (its mode:=... would read as remaps)
        cls.node = rclpy.create_node("launch_check")
        cls.states = []
        cls.images = []
        cls.node.create_subscription(JointState, "/joint_states", cls.states.append, 10)
        cls.node.create_subscription(Image, "/cameras/front/image_raw", cls.images.append,
                                     qos_profile_sensor_data)

    @classmethod
    def tearDownClass(cls):
        cls.node.destroy_node()
        rclpy.shutdown()

    def spin_until(self, predicate, timeout_s, what):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            rclpy.spin_once(self.node, timeout_sec=0.05)
            if predicate():
                return
        self.fail(f"timed out after {timeout_s} s waiting for {what}")

    def rise_nodes(self):
        return sorted(name for name, _ in self.node.get_node_names_and_namespaces()
                      if name != "launch_check" and not name.startswith("launch_ros"))

    def test_1_exactly_the_mode_nodes_are_up(self):
        self.spin_until(lambda: self.rise_nodes() == sorted(EXPECTED), 90,
                        f"the nodes {sorted(EXPECTED)} (graph: {self.rise_nodes()})")
        client = self.node.create_client(Trigger, "/rise/monitor/status")
        self.assertTrue(client.wait_for_service(timeout_sec=30))
        answers = []

        def monitor_agrees():  # ask again until the monitor's own discovery has caught up
            future = client.call_async(Trigger.Request())
            self.spin_until(future.done, 30, "the monitor's answer")
            answers.append(future.result())
            return answers[-1].success

        self.spin_until(monitor_agrees, 30, f"the monitor to see every node ({answers[-1:]})")
        status = json.loads(answers[-1].message)
        self.assertEqual(status["mode"], MODE)
        self.assertEqual(sorted(status["alive"]), sorted(EXPECTED))

    def test_2_sim_topics_flow(self):
        self.spin_until(lambda: len(self.states) >= 10 and len(self.images) >= 5, 60,
                        "/joint_states and /cameras/front/image_raw")
        self.assertEqual(list(self.states[-1].name), ARM_JOINTS)
        self.assertGreater(self.images[-1].width * self.images[-1].height, 0)

    def test_3_a_client_drives_the_arm_through_the_bridge(self):
        if MODE != "deploy":
            self.skipTest("only deploy mode leaves /rise/policy/command to this client")
        command = self.node.create_publisher(JointTrajectory, "/rise/policy/command", 10)
        self.spin_until(lambda: self.states and command.get_subscription_count() > 0, 30,
                        "the arm bridge subscribed to /rise/policy/command")
        goal = list(self.states[-1].position)
        start = goal[0]
        goal[0] = start + 0.4
        message = JointTrajectory(joint_names=ARM_JOINTS)
        message.points = [JointTrajectoryPoint(positions=goal, time_from_start=Duration(sec=1))]
        for _ in range(30):  # again until followed: the first may race the bridge's arming
            command.publish(message)
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                rclpy.spin_once(self.node, timeout_sec=0.05)
            if abs(self.states[-1].position[0] - goal[0]) < 0.05:
                break
        self.assertLess(abs(self.states[-1].position[0] - goal[0]), 0.05,
                        f"waist at {self.states[-1].position[0]:.3f}, commanded {goal[0]:.3f}")


@launch_testing.post_shutdown_test()
class TestStoppedCleanly(unittest.TestCase):
    def test_every_process_exited_0(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)

    def test_no_traceback(self, proc_output):
        for output in proc_output:
            self.assertNotIn("Traceback", output.text.decode(errors="replace"), output.process_name)
