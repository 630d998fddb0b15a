"""``python -m loadtest``: the load-test tool's entry point."""

from __future__ import annotations

import sys


def main() -> int:
    print("loadtest: scenarios are not implemented yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
