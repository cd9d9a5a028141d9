"""demo: `av-td3 demo` and `av-td3 drive`. The nodes run as processes watched from here (run,
monitor); evaluation and report below them know nothing of ROS."""
