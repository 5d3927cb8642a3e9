"""Monitor node: reports which of the bringup mode's nodes are alive.

Publishes ``/diagnostics`` (diagnostic_msgs/DiagnosticArray, 1 Hz) with one status per expected
node, and answers ``/rise/monitor/status`` (std_srvs/Trigger): success when every expected node
is in the ROS graph, message = JSON ``{"mode", "robot", "alive", "missing"}``.

Run: ``ros2 run rise rise_monitor --ros-args -p expected_nodes:="[monitor]"``
"""

from __future__ import annotations

import json

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_srvs.srv import Trigger

from rise.nodes.node_main import run_node
from rise.nodes.parameters import declare, declare_configs

STATUS_SERVICE = "/rise/monitor/status"


class MonitorNode(Node):
    def __init__(self):
        super().__init__("monitor")
        self._robot, _ = declare_configs(self)
        self._mode = declare(self, "mode", "collect", "bringup mode: collect, deploy or improve")
        self._period_s = declare(self, "period_s", 1.0, "diagnostics period [s]")
        self.declare_parameter("expected_nodes", Parameter.Type.STRING_ARRAY)
        expected = self.get_parameter_or("expected_nodes", None)
        self._expected = list(expected.value) if expected and expected.value else [self.get_name()]
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_service(Trigger, STATUS_SERVICE, self._on_status)
        self.create_timer(self._period_s, self._publish)
        self.get_logger().info(
            f"monitoring {len(self._expected)} nodes for mode '{self._mode}' on robot "
            f"'{self._robot.name}': {', '.join(self._expected)}"
        )

    def status(self) -> dict:
        present = {name for name, namespace in self.get_node_names_and_namespaces()
                   if namespace == "/"}
        return {
            "mode": self._mode,
            "robot": self._robot.name,
            "alive": [n for n in self._expected if n in present],
            "missing": [n for n in self._expected if n not in present],
        }

    def _on_status(self, _request, response):
        status = self.status()
        response.success = not status["missing"]
        response.message = json.dumps(status)
        return response

    def _publish(self) -> None:
        status = self.status()
        message = DiagnosticArray()
        message.header.stamp = self.get_clock().now().to_msg()
        for name in self._expected:
            alive = name in status["alive"]
            message.status.append(DiagnosticStatus(
                level=DiagnosticStatus.OK if alive else DiagnosticStatus.ERROR,
                name=f"rise/nodes/{name}",
                message="alive" if alive else "not in the ROS graph",
                hardware_id=self._robot.name,
                values=[KeyValue(key="mode", value=self._mode)],
            ))
        self._diagnostics.publish(message)


def main(args=None) -> int:
    return run_node(MonitorNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
