from glob import glob

from setuptools import find_packages, setup

PACKAGE = "av_td3_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml") + glob("config/*.json")),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="av_td3_ros developers",
    maintainer_email="av-td3-ros@example.com",
    description="Stabilized CNN+TD3 driving policy as ROS 2 nodes for CARLA or an embedded simulator",
    license="MIT",
    entry_points={
        "console_scripts": [
            f"policy_node = {PACKAGE}.nodes.policy_node:main",
            f"trainer_node = {PACKAGE}.nodes.trainer_node:main",
            f"sim_node = {PACKAGE}.nodes.sim_node:main",
            f"episode_manager = {PACKAGE}.nodes.episode_manager:main",
            f"vehicle_command_converter = {PACKAGE}.nodes.vehicle_command_converter:main",
            f"av-td3 = {PACKAGE}.cli:main",
        ],
    },
)
