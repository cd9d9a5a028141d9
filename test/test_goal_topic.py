"""The episode manager's goals reach the waypoint publisher whichever goal topic its build
subscribes: upstream /carla/<role>/goal or the image's fork /carla/<role>/goal_pose
(issue 11, defect 2). carla.launch.py remaps the waypoint publisher's subscription onto the
launch argument `goal_topic`, which the episode manager publishes on."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from conftest import PROGRAMS
from test_launch_files import _launched_nodes, _params, _run_launch

from av_td3_ros.episodes import fleet

sys.path.insert(0, str(Path(__file__).parent))


def test_the_waypoint_publisher_is_remapped_from_both_known_goal_topics_onto_the_goal_topic():
    assert fleet.waypoint_publisher_goal_remappings("ego_vehicle") == [
        ("/carla/ego_vehicle/goal_pose", "/carla/ego_vehicle/goal")]
    assert fleet.waypoint_publisher_goal_remappings("hero1", "/av_td3/{role_name}/goal") == [
        ("/carla/hero1/goal", "/av_td3/hero1/goal"), ("/carla/hero1/goal_pose", "/av_td3/hero1/goal")]
    with pytest.raises(ValueError, match="absolute"):
        fleet.waypoint_publisher_goal_remappings("ego_vehicle", "goal")


def test_carla_launch_gives_the_episode_manager_and_every_waypoint_publisher_one_goal_topic(
        monkeypatch, tmp_path):
    custom = "/av_td3/{role_name}/goal"
    for overrides, template in (({}, fleet.GOAL_TOPIC_TEMPLATE), ({"goal_topic": custom}, custom)):
        actions = _run_launch("carla.launch.py", monkeypatch, tmp_path, num_vehicles=2, **overrides)
        (manager,) = _launched_nodes(actions, "episode_manager")
        assert _params(manager)["goal_topic"] == template
        publishers = _launched_nodes(actions, "carla_waypoint_publisher")
        assert [p["namespace"] for p in publishers] == ["hero0", "hero1"]
        for p in publishers:
            role = p["namespace"]
            assert p["remappings"] == fleet.waypoint_publisher_goal_remappings(role, template)
            assert {to for _, to in p["remappings"]} == {template.format(role_name=role)}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("subscribed", fleet.WAYPOINT_PUBLISHER_GOAL_TOPICS)
def test_a_goal_published_on_the_goal_topic_reaches_either_subscription_through_the_remaps(
        spawn, rclpy_context, subscribed):
    from geometry_msgs.msg import PoseStamped
    from rclpy.node import Node

    role = "ego_vehicle"
    # what launch_ros passes for Node(remappings=...)
    remap_args = [arg for src, dst in fleet.waypoint_publisher_goal_remappings(role)
                  for arg in ("-r", f"{src}:={dst}")]
    listener = spawn([str(PROGRAMS / "goal_listener.py"), role, subscribed.format(role_name=role),
                      *remap_args])
    assert listener.stdout.readline().strip() == "ready", listener.stderr_path.read_text()
    node = Node("pretend_episode_manager", context=rclpy_context)
    try:
        pub = node.create_publisher(PoseStamped, fleet.goal_topic(role), 10)
        goal = PoseStamped()
        goal.header.frame_id = "map"
        goal.pose.position.x = 12.5
        deadline = time.monotonic() + 60
        while listener.poll() is None and time.monotonic() < deadline:
            pub.publish(goal)
            time.sleep(0.1)
        out, _ = listener.communicate(timeout=30)
    finally:
        node.destroy_node()
    got = json.loads(out.strip().splitlines()[-1])
    assert got == {"resolved": fleet.goal_topic(role), "x": 12.5}, listener.stderr_path.read_text()
