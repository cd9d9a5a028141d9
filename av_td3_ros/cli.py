"""av-td3: the command-line front door (demo, drive)."""

import sys


def main(argv: list[str] | None = None) -> None:
    sys.exit("av-td3 is not built yet")
