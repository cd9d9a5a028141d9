"""Placeholder until the ROS 2 nodes issue lands."""

import sys


def main() -> None:
    sys.exit("policy_node is not built yet (see the 'ROS 2 nodes' issue)")
