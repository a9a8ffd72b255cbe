"""Every ELF file of an installed xpuruntime finds each library it needs inside the installed wheels (xpuruntime,
xpuruntime.libs, the openvino wheel) or in the manylinux base set that every Linux has (glibc, libstdc++, libgcc_s).

    python scripts/wheel_check_libs.py SITE_PACKAGES SCRIPTS_DIR

Prints one line per ELF file and exits 1 naming any library resolved elsewhere (e.g. /usr/lib's libzip from a
-dev package) or not found."""

from __future__ import annotations

import os
import re
import subprocess
import sys

# The manylinux policy's base libraries (auditwheel's whitelist), which a wheel never carries.
BASE = re.compile(r"^(libc|libm|libdl|libpthread|librt|libutil|libresolv|libnsl|libcrypt|libstdc\+\+|libgcc_s|"
                  r"ld-linux[-\w]*|linux-vdso|libz|libexpat)\.so")


def elf_files(*roots: str):
    for root in roots:
        for folder, _, files in os.walk(root):
            for name in files:
                path = os.path.join(folder, name)
                if os.path.isfile(path) and not os.path.islink(path):
                    with open(path, "rb") as f:
                        if f.read(4) == b"\x7fELF":
                            yield path


def main() -> int:
    site, scripts = sys.argv[1], sys.argv[2]
    ours = [os.path.join(site, "xpuruntime"), os.path.join(site, "xpuruntime.libs")]
    allowed_roots = [os.path.realpath(site)]  # the installed wheels
    bad = []
    for path in sorted(elf_files(*[r for r in ours if os.path.isdir(r)], scripts)):
        if path.startswith(scripts) and not os.path.basename(path).startswith("xrt"):
            continue  # the venv's own python
        out = subprocess.run(["ldd", path], capture_output=True, text=True, env={"PATH": os.environ["PATH"]}).stdout
        needed = []
        for line in out.splitlines():
            m = re.match(r"\s*(\S+)(?: => (\S+|not found))?", line)
            if not m or m.group(1) == "statically":
                continue
            name, where = m.group(1), m.group(2) or m.group(1)
            if BASE.match(os.path.basename(name)):
                continue
            real = os.path.realpath(where) if where != "not found" else where
            if not any(real.startswith(r + os.sep) for r in allowed_roots):
                bad.append(f"{os.path.relpath(path, site)}: {name} => {where}")
            needed.append(os.path.basename(name))
        print(f"{os.path.relpath(path, site)}: {', '.join(needed) or '(base libraries only)'}")
    for b in bad:
        print(f"OUTSIDE THE WHEEL: {b}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
