"""``python -m bench`` from a checkout: the same as ``asyncperf bench``."""

from __future__ import annotations

import sys

from asyncperf.tools.bench._main import main

if __name__ == "__main__":
    sys.exit(main())
