"""Input and output arrays for the compiler and the tools: .npz/.npy files, random and seeded inputs, shape flags."""

from __future__ import annotations

import os
import re
import tempfile
from typing import Iterable, Sequence

import numpy as np

from .errors import UsageError, XrtcError

_SHAPE_RE = re.compile(r"^(?P<name>.+?)[:=](?P<dims>\[?[0-9x, ]+\]?)$")


def parse_shapes(items: Iterable[str] | None) -> dict[str, tuple[int, ...]]:
    """`--shape x=1x3x224x224` / `x:[1,3,224,224]` (repeatable) -> {name: dims}."""
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items or ():
        m = _SHAPE_RE.match(item.strip())
        if not m:
            raise UsageError(f"bad --shape {item!r}: use name=1x3x224x224 or name:[1,3,224,224]")
        text = m["dims"].strip("[]")
        dims = [d for d in re.split(r"[x,]", text.replace(" ", "")) if d]
        shapes[m["name"]] = tuple(int(d) for d in dims)
    return shapes


def load_inputs(npz: str | None, singles: Sequence[str] | None) -> dict[str, np.ndarray]:
    """Reads `--inputs file.npz` (keys are input names; or the corpus layout: `__names__` + in0, in1, ...) and
    `--input name=file.npy` (repeatable; overrides the npz)."""
    feeds: dict[str, np.ndarray] = {}
    if npz:
        try:
            with np.load(npz, allow_pickle=False) as data:
                if "__names__" in data.files:
                    names = [str(n) for n in data["__names__"]]
                    feeds.update({name: data[f"in{i}"] for i, name in enumerate(names)})
                else:
                    feeds.update({k: data[k] for k in data.files})
        except (OSError, ValueError, KeyError) as err:
            raise XrtcError(f"cannot read inputs from {npz}: {err}. Expected an .npz written by numpy.savez whose "
                            "keys are input names") from err
    for item in singles or ():
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"bad --input {item!r}: use name=file.npy")
        try:
            feeds[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise XrtcError(f"cannot read input {name!r} from {path}: {err}") from err
    return feeds


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


class _SplitMix64:
    """The generator `xrt-run --seed` uses (runtime_cpp/tools/xrt_run.cc, SplitMix64): same seed, same bits."""

    def __init__(self, seed: int) -> None:
        self.state = np.uint64(seed % 2**64)

    def draws(self, n: int) -> np.ndarray:
        with np.errstate(over="ignore"):
            z = self.state + _GOLDEN * np.arange(1, n + 1, dtype=np.uint64)
            self.state = self.state + _GOLDEN * np.uint64(n)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))

    def normalish(self, n: int) -> np.ndarray:
        """(sum of 4 draws' top 53 bits * 2^-53 - 2) * sqrt(3): mean 0, variance 1; exact but for one rounding."""
        total = (self.draws(4 * n).reshape(n, 4) >> np.uint64(11)).sum(axis=1, dtype=np.uint64)
        return (total.astype(np.float64) * 2.0**-53 - 2.0) * 1.7320508075688772


def seeded_inputs(inputs, shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    """`xrtc run/verify --seed S` inputs, bit-identical to `xrt-run --seed S` on the same bundle: SplitMix64 drawn in
    input order, then element order (floats: `normalish`, rounded through float32 except float64; integers:
    (draw >> 32) % 100; bool: the top bit). A dynamic dim needs `--shape`."""
    rng = _SplitMix64(seed)
    feeds = {}
    for info in inputs:
        shape = _shape_for(info, shapes)
        n = int(np.prod(shape, dtype=np.int64))
        if info.dtype == "string":  # lowercase words of 1..8 letters, from the same draws xrt-run would use
            draws = rng.draws(9 * n).reshape(n, 9) if n else np.zeros((0, 9), np.uint64)
            words = ["".join(chr(97 + int(d % np.uint64(26))) for d in row[1:1 + 1 + int(row[0] % np.uint64(8))])
                     for row in draws]
            feeds[info.name] = np.array(words, dtype=object).reshape(shape)
            continue
        dtype = np.dtype(info.dtype)
        if dtype.kind == "f":
            values = rng.normalish(n)
            values = values if dtype == np.float64 else values.astype(np.float32).astype(dtype)
        elif dtype.kind in "iu":
            values = ((rng.draws(n) >> np.uint64(32)) % np.uint64(100)).astype(dtype)
        elif dtype.kind == "b":
            values = (rng.draws(n) >> np.uint64(63)).astype(bool)
        else:
            raise XrtcError(f"cannot generate random data for input {info.name!r} of dtype {info.dtype}")
        feeds[info.name] = values.reshape(shape)
    return feeds


def _shape_for(info, shapes: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
    if info.name in shapes:
        return tuple(shapes[info.name])
    dynamic = [(i, d) for i, d in enumerate(info.shape) if not isinstance(d, int)]
    if dynamic:
        where = ", ".join(f"dim {i} ({d if d is not None else 'unnamed'})" for i, d in dynamic)
        example = "x".join(str(d) if isinstance(d, int) else "1" for d in info.shape)
        raise UsageError(f"input {info.name!r} has dynamic {where}: give its shape, e.g. "
                         f"--shape {info.name}={example}, or pass --inputs")
    return tuple(info.shape)


def random_inputs(inputs, shapes: dict[str, tuple[int, ...]], seed: int,
                  index_limits: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Seeded random arrays for `inputs` (IOInfo-like: name, dtype, shape) for the accuracy gate (NumPy's
    generator: its samples, hence bundles, stay as they were). A dynamic dim needs `--shape`. Integers are drawn
    from [0, 100), or from [0, limit) for an input the graph uses as indices into a smaller table
    (`index_limits`, e.g. token_type_ids into a 2-row embedding)."""
    limits = index_limits or {}
    rng = np.random.default_rng(seed)
    feeds = {}
    for info in inputs:
        shape = _shape_for(info, shapes)
        if info.dtype == "string":  # short lowercase words (a model's vocabulary is unknown here)
            n = int(np.prod(shape, dtype=np.int64))
            lengths = rng.integers(1, 9, size=n)
            letters = rng.integers(97, 123, size=int(lengths.sum()))
            words, at = [], 0
            for k in lengths.tolist():
                words.append("".join(map(chr, letters[at:at + k].tolist())))
                at += k
            feeds[info.name] = np.array(words, dtype=object).reshape(shape)
            continue
        dtype = np.dtype(info.dtype)
        if dtype.kind == "f":
            feeds[info.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            feeds[info.name] = rng.integers(0, max(1, min(100, limits.get(info.name, 100))), size=shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[info.name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            raise XrtcError(f"cannot generate random data for input {info.name!r} of dtype {info.dtype}")
    return feeds


def save_npz(path: str, arrays: dict[str, np.ndarray], force: bool) -> None:
    """Writes arrays (real names as keys) atomically; never overwrites without force."""
    from .errors import OutputExistsError

    if os.path.exists(path) and not force:
        raise OutputExistsError(f"{path} exists; pass --force to overwrite it")
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".xrtc-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def describe_array(a: np.ndarray) -> str:
    stats = ""
    if a.size and a.dtype.kind in "fiub":
        v = a.astype(np.float64)
        stats = f" min={v.min():.6g} max={v.max():.6g} mean={v.mean():.6g}"
    return f"{a.dtype} {list(a.shape)}{stats}"
