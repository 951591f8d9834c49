"""``python -m slapp <command> [options]``: the same as the ``slapp`` console script."""
import sys

from slapp.commands import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
