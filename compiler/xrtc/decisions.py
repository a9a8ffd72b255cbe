"""The decision log: for every variant and every node, what was chosen, by which rule or measurement, and what was
rejected and why. Built from the plan (the policy's resolution) and the build's outcome (variants built and their
order, accuracy measured, fallbacks); stored in the bundle as `decisions.json`, shown by `xrtc explain`, returned by
`Session.explain()`.

Format (decisions_format 1):
    {"decisions_format": 1, "warnings": [str],
     "variants": [{"id", "engine", "status": "built"|"excluded", "precision_planned", "precision", "rank",
                   "why", "accuracy", "fallback", "notes", "options"}],
     "nodes": [{"name", "op", "choices": {variant id: {"engine", "precision", "kernel"}}, "why",
                "rejected": [{"alternative", "reason"}]}]}
"""

from __future__ import annotations

DECISIONS_FORMAT = 1

_ENGINE_WIDE = {"fp16": "fp16 (engine-wide f16 hint)", "bf16": "bf16 (engine-wide bf16 hint)"}


def _node_precision(node: dict, variant: dict, gate_fp32: set) -> str:
    """What `node` runs at in `variant`: the graph precision for graph-converted variants (ONNX Runtime fp16, both
    engines at int8), the engine-wide hint for OpenVINO fp16/bf16, fp32 otherwise."""
    if node["precision"] == "-":
        return "-"
    precision = variant["precision"]
    if precision == "fp16" and variant["engine"] == "onnxruntime" and node["name"] in gate_fp32:
        return "fp32"
    if precision == "int8" or (precision == "fp16" and variant["engine"] == "onnxruntime"):
        return node["precision"]
    if variant["engine"] == "openvino" and precision in _ENGINE_WIDE:
        return _ENGINE_WIDE[precision]
    return "fp32"


def decision_log(plan, variants: list[dict], excluded: list[dict], fallbacks: dict[str, str],
                 warnings: list[str], gate_fp32: set | None = None) -> dict:
    """`gate_fp32`: nodes the accuracy gate's per-node fallback kept in fp32 (ONNX Runtime fp16 variants)."""
    gate_fp32 = gate_fp32 or set()
    planned = {v["id"]: v for v in plan.variants}
    out_variants = []
    for rank, v in enumerate(variants):
        p = planned.get(v["id"], {})
        out_variants.append({"id": v["id"], "engine": v["engine"], "status": "built", "rank": rank,
                             "precision_planned": p.get("precision", v["precision"]), "precision": v["precision"],
                             "why": v.get("why", ""), "accuracy": v.get("accuracy"),
                             "fallback": fallbacks.get(v["id"]),
                             "notes": list(dict.fromkeys(list(p.get("notes", [])) + list(v.get("notes", [])))),
                             "options": v.get("options", {})})
    for e in excluded:
        vid = f"{e['target']}-{e['engine']}"
        out_variants.append({"id": vid, "engine": e["engine"], "status": "excluded",
                             "rank": None, "precision_planned": planned.get(vid, {}).get("precision"),
                             "precision": None, "why": e["reason"], "accuracy": None, "fallback": None,
                             "notes": [], "options": {}})
    nodes = []
    for node in plan.nodes:
        choices = {}
        for v in variants:
            kernel = node.get("kernel", {}).get("engines", {}).get(v["id"], "engine default")
            choices[v["id"]] = {"engine": v["engine"], "precision": _node_precision(node, v, gate_fp32),
                                "kernel": kernel}
        rejected = []
        if node["precision"] == "fp32" and any(v["precision"] in ("fp16", "int8") for v in variants):
            lower = next(v["precision"] for v in variants if v["precision"] in ("fp16", "int8"))
            rejected.append({"alternative": lower, "reason": node["why"]})
        k = node.get("kernel")
        if k:
            for vid, text in sorted(k["engines"].items()):
                if "not possible" in text:
                    rejected.append({"alternative": f"{k['family']}={k['choice']} on {vid}", "reason": text})
        for v in variants:
            if node["name"] in gate_fp32 and v["engine"] == "onnxruntime" and v["precision"] == "fp16":
                rejected.append({"alternative": f"fp16 on {v['id']}",
                                 "reason": "accuracy gate: per-node fallback (converting it put the outputs over "
                                           "the tolerance)"})
            elif fallbacks.get(v["id"]) and node["precision"] not in ("-", "fp32") and \
                    "per-node fallback" not in fallbacks[v["id"]]:
                rejected.append({"alternative": f"{node['precision']} on {v['id']}",
                                 "reason": f"accuracy gate: {fallbacks[v['id']]}"})
        nodes.append({"name": node["name"], "op": node["op"], "choices": choices, "why": node["why"],
                      "rejected": rejected})
    return {"decisions_format": DECISIONS_FORMAT, "warnings": list(warnings), "variants": out_variants,
            "nodes": nodes}
