"""The shared weight store (formats/xrtpkg.md, "Weight store"): every distinct weight tensor of a bundle's OpenVINO
and ONNX Runtime variants stored once, in one uncompressed section, each entry at a 64-byte aligned offset.

- OpenVINO IR: the store *is* the IR's weights file. Each `Const` layer's `offset`/`size` in the XML is rewritten to
  its bytes' place in the store, so the runtime hands the store to `read_model(xml, weights)` as it did the `.bin`
  (no runtime change, zero copy).
- ONNX Runtime: each graph initializer of at least MIN_EXTERNAL_BYTES becomes external data with `location` =
  "xrt:weights" (the variant's `weights` artifact: a role, never a path) and `offset`/`length` into it; the runtime
  gives ONNX Runtime those tensors from the verified store in memory (`add_external_initializers`), never a file.
- Entries are keyed by their bytes (SHA-256): a tensor that two variants hold with the same bytes is stored once;
  bytes only one variant has (OpenVINO's folded constants, fp16 or int8 weights) are added once each.

How a target declares its variants' entries: a variant for the host CPU (`_shares_store`) whose engine has an
adapter in `_ADAPTERS` (OpenVINO: `model` XML + `weights` bin; ONNX Runtime: `model` ONNX) has its weights moved to
the store, and its `weights` artifact names the store. Other targets (cuda) keep their own sections untouched.
Compiled blobs: drop_unpicked_blobs keeps one only on the runtime's first variant, and that blob is then exported
without weights over the store (targets/engines/openvino_weightless.py; a whole blob stays where that fails).

Deterministic: entries are laid out in the order the variants and their tensors come (manifest order, then graph
order), so the same variants give the same store bytes.
"""

from __future__ import annotations

import hashlib
import re

from xpuruntime.onnx_tensors import STORE_LOCATION, STORE_NUMPY_TYPES

from .errors import InternalError

STORE_SECTION = "shared.weights"
ALIGNMENT = 64
# Smaller initializers (shapes, axes, scalars) stay inline: ONNX Runtime folds them at load, and moving them saves
# nothing measurable.
MIN_EXTERNAL_BYTES = 1024
STORE_MINOR = 2  # the format minor that gives a store section its meaning

# One IR Const layer's <data .../> element: the offset/size pair is rewritten, everything else is kept byte for byte.
_CONST_DATA = re.compile(rb'(<layer\b[^>]*\btype="Const"[^>]*>\s*<data\b)([^>]*?)(/?>)')
_OFFSET = re.compile(rb'\boffset="(\d+)"')
_SIZE = re.compile(rb'\bsize="(\d+)"')


def _shares_store(variant: dict) -> bool:
    """Variants for the host CPU share the store (chosen by device, like the tuner: target names stay inside
    xrtc.targets)."""
    return variant.get("device") == "cpu"


class Store:
    """The store being built: distinct byte strings at 64-byte aligned offsets."""

    def __init__(self):
        self._parts: list[bytes] = []
        self._size = 0
        self._offsets: dict[bytes, int] = {}
        self.referenced_bytes = 0  # what the variants hold in all (before sharing), for the record

    def add(self, data: bytes) -> int:
        """The offset of `data` in the store (added once)."""
        self.referenced_bytes += len(data)
        key = hashlib.sha256(data).digest() + len(data).to_bytes(8, "little")
        offset = self._offsets.get(key)
        if offset is None:
            offset = (self._size + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT
            self._parts.append(bytes(offset - self._size))  # zero padding
            self._parts.append(data)
            self._size = offset + len(data)
            self._offsets[key] = offset
        return offset

    def entries(self) -> int:
        return len(self._offsets)

    def to_bytes(self) -> bytes:
        return b"".join(self._parts)


def _openvino(variant: dict, sections: dict[str, bytes], store: Store) -> dict[str, bytes]:
    """The variant's XML with every Const pointing into the store; returns the sections it replaces."""
    arts = variant["artifacts"]
    if "weights" not in arts:
        return {}
    xml, weights = sections[arts["model"]], sections[arts["weights"]]

    def point_into_store(match: re.Match) -> bytes:
        attrs = match.group(2)
        offset, size = _OFFSET.search(attrs), _SIZE.search(attrs)
        if offset is None or size is None:
            return match.group(0)
        start, length = int(offset.group(1)), int(size.group(1))
        if start + length > len(weights):
            raise InternalError(f"{arts['model']}: a Const reads [{start}, {start + length}) past the "
                                f"{len(weights)}-byte weights")
        new_offset = store.add(weights[start:start + length])
        attrs = attrs[:offset.start(1)] + str(new_offset).encode() + attrs[offset.end(1):]
        return match.group(1) + attrs + match.group(3)

    return {arts["model"]: _CONST_DATA.sub(point_into_store, xml)}


def _onnxruntime(variant: dict, sections: dict[str, bytes], store: Store) -> dict[str, bytes]:
    """The variant's ONNX graph with its large initializers as external data in the store."""
    import onnx
    from onnx import numpy_helper

    name = variant["artifacts"]["model"]
    model = onnx.load_from_string(sections[name])
    changed = False
    for tensor in model.graph.initializer:
        if tensor.data_type not in STORE_NUMPY_TYPES or tensor.external_data:
            continue
        array = numpy_helper.to_array(tensor)
        if array.nbytes < MIN_EXTERNAL_BYTES:
            continue
        data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        offset = store.add(data)
        keep = (tensor.name, tensor.data_type, list(tensor.dims), tensor.doc_string)
        tensor.Clear()
        tensor.name, tensor.data_type, tensor.doc_string = keep[0], keep[1], keep[3]
        tensor.dims.extend(keep[2])
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", STORE_LOCATION), ("offset", str(offset)), ("length", str(len(data)))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        changed = True
    return {name: model.SerializeToString(deterministic=True)} if changed else {}


_ADAPTERS = {"openvino": _openvino, "onnxruntime": _onnxruntime}


def share(manifest: dict, payloads: list[tuple[str, bytes, bool]]) -> list[tuple[str, bytes, bool]]:
    """Moves the weights of the manifest's store variants (host CPU variants x _ADAPTERS) into one store section and
    points their artifacts at it; records `weight_store` in the manifest. Returns the new payloads (unchanged when
    no variant qualifies). Sections no variant references any more (an IR's old .bin) are dropped."""
    variants = [v for v in manifest["variants"]
                if _shares_store(v) and v.get("engine") in _ADAPTERS]
    if not variants:
        return payloads
    sections = {name: data for name, data, _ in payloads}
    store = Store()
    replaced: dict[str, bytes] = {}
    for variant in variants:
        replaced.update(_ADAPTERS[variant["engine"]](variant, sections, store))
    if store.entries() == 0:
        return payloads  # nothing to share (a weightless model): the bundle stays as it was
    old_weights = {v["artifacts"]["weights"] for v in variants if "weights" in v["artifacts"]}
    for variant in variants:
        variant["artifacts"]["weights"] = STORE_SECTION
    referenced = {name for v in manifest["variants"] for name in v.get("artifacts", {}).values()}
    out = []
    for name, data, compress in payloads:
        if name in old_weights and name not in referenced:
            continue  # an IR's own .bin: its bytes are in the store now
        out.append((name, replaced.get(name, data), compress))
    out.insert(_store_position(out, variants), (STORE_SECTION, store.to_bytes(), False))
    manifest["format"]["version"] = f"1.{STORE_MINOR}"
    manifest["weight_store"] = {"section": STORE_SECTION, "alignment": ALIGNMENT, "entries": store.entries(),
                                "variants": [v["id"] for v in variants],
                                "referenced_bytes": store.referenced_bytes}
    return out


def _store_position(payloads: list, variants: list[dict]) -> int:
    """The store goes right before the first store variant's first section (deterministic, near its readers)."""
    names = {n for v in variants for n in v["artifacts"].values()}
    for i, (name, _, _) in enumerate(payloads):
        if name in names:
            return i
    return len(payloads)


def drop_unpicked_blobs(manifest: dict, payloads: list[tuple[str, bytes, bool]]) -> list[tuple[str, bytes, bool]]:
    """Keeps a compiled blob (the weights again) only on the variant the runtime picks by default, the first.
    Measured (bench/cpu_corpus.py, report 16): where OpenVINO runs first, importing the blob beats compiling the IR
    from the store (e.g. 96 vs 463 ms); a later variant runs only when named or when the first cannot run, so its
    blob is size without a load-time gain: it compiles its IR from the store instead. Its `xrt.compiled_*` options go
    with the blob; the dropped sections are recorded in `weight_store.dropped_blobs`."""
    dropped = []
    for variant in manifest["variants"][1:]:
        arts = variant.get("artifacts", {})
        if _shares_store(variant) and "compiled" in arts:
            dropped.append(arts.pop("compiled"))
            for key in [k for k in variant.get("options", {}) if k.startswith("xrt.compiled_")]:
                del variant["options"][key]
    if not dropped:
        return payloads
    if isinstance(manifest.get("weight_store"), dict):
        manifest["weight_store"]["dropped_blobs"] = dropped
    referenced = {name for v in manifest["variants"] for name in v.get("artifacts", {}).values()}
    return [p for p in payloads if p[0] not in dropped or p[0] in referenced]


def describe(manifest: dict, sections: list[dict]) -> list[str]:
    """`xrtc inspect`'s lines on the weight store and on compiled blobs (which hold the weights again)."""
    sizes = {s["name"]: s["stored_size"] for s in sections}
    lines = []
    store = manifest.get("weight_store")
    if isinstance(store, dict) and store.get("section") in sizes:
        held = store.get("referenced_bytes", 0)
        lines.append(f"weights  store {store['section']}: {store.get('entries')} entries, {sizes[store['section']]} "
                     f"bytes, shared by {', '.join(store.get('variants', []))} ({held} bytes without sharing)")
    else:
        lines.append("weights  no shared store: each variant holds its own weights")
    for v in manifest.get("variants", []):
        blob = v.get("artifacts", {}).get("compiled")
        if blob in sizes:
            # xrt.compiled_weights (targets/engines/openvino_weightless.py): the blob reads the store at import
            kind = (f"no weights: read from {v['artifacts'].get('weights')} at import"
                    if v.get("options", {}).get("xrt.compiled_weights") == "store" else "weights included again")
            lines.append(f"compiled {v.get('id')}: {blob} kept ({sizes[blob]} bytes, {kind}): imported "
                         "instead of compiling the IR only on OpenVINO "
                         f"{v.get('options', {}).get('xrt.compiled_build', '?')} with the same CPU capabilities")
    for blob in store.get("dropped_blobs", []) if isinstance(store, dict) else []:
        lines.append(f"compiled {blob} dropped: its variant is not the runtime's first choice (it compiles its IR "
                     "from the store when it runs)")
    return lines


def standalone_model(model_bytes: bytes, store: bytes | None) -> bytes:
    """An ONNX Runtime variant's graph with its weight-store references inlined: a model that stands alone, for the
    tools that hand a variant's graph to ONNX Runtime themselves (xrtc profile, xrtc bench --peers). The runtime
    never does this: it gives ONNX Runtime the verified store's bytes without a copy (xpuruntime._ort_backend)."""
    if store is None:
        return model_bytes
    import onnx

    from xpuruntime.onnx_tensors import store_refs

    model = onnx.load_from_string(model_bytes)
    refs = store_refs(model, STORE_LOCATION, len(store))
    if not refs:
        return model_bytes
    for tensor, offset, length in refs:
        tensor.raw_data = bytes(store[offset:offset + length])
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT
    return model.SerializeToString()
