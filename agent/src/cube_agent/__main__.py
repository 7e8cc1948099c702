"""`python -m cube_agent` is `cube-agent`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
