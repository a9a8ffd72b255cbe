"""The `xrt-run` console script: replaces this process with the C++ runner installed inside the package
(xpuruntime/bin/xrt-run, next to libxrt.so), so arguments, output and exit codes are the runner's own."""

from __future__ import annotations

import os
import sys


def main() -> None:
    runner = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bin", "xrt-run")
    if not os.access(runner, os.X_OK):
        sys.stderr.write(f"xrt-run: error: UNAVAILABLE: the C++ runner is not installed at {runner} (this build of "
                         "xpuruntime was made without it: XRT_BUILD_RUNNER=OFF or no libzip)\n")
        sys.exit(5)
    os.execv(runner, [runner, *sys.argv[1:]])
