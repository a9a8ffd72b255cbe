"""`python -m xrtc ...` is `xrtc ...`."""

import sys

from .cli import main

sys.exit(main())
