"""`xrtc diff`: what changed between two bundles."""

from __future__ import annotations

import json
import sys

from .explain import load_decisions


def _flat(obj, prefix: str = "") -> dict[str, object]:
    """{"a.b[0].c": value} for a JSON value (dict keys sorted)."""
    out: dict[str, object] = {}
    if isinstance(obj, dict):
        for k in sorted(obj):
            out.update(_flat(obj[k], f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.update(_flat(v, f"{prefix}[{i}]"))
    else:
        out[prefix] = obj
    return out


def diff_bundles(a, b) -> dict:
    """{"same": bool, "changes": {area: [[key, a, b], ...]}} over file sizes, sections, variants (precision, options,
    accuracy, order), tool versions, policy, per-node plan and excluded variants."""
    changes: dict[str, list] = {}

    def compare(area: str, x, y) -> None:
        fx, fy = _flat(x), _flat(y)
        rows = [[k, fx.get(k), fy.get(k)] for k in sorted(set(fx) | set(fy)) if fx.get(k) != fy.get(k)]
        if rows:
            changes[area] = rows

    ma, mb = a.manifest, b.manifest
    compare("size", {"file": a.file_size}, {"file": b.file_size})
    compare("sections", {s.name: {"size": s.size, "sha256": s.sha256[:16]} for s in a.sections},
            {s.name: {"size": s.size, "sha256": s.sha256[:16]} for s in b.sections})
    compare("variants", {v["id"]: {k: v.get(k) for k in ("precision", "options", "accuracy", "engine")}
                         for v in ma["variants"]},
            {v["id"]: {k: v.get(k) for k in ("precision", "options", "accuracy", "engine")} for v in mb["variants"]})
    compare("order", [v["id"] for v in ma["variants"]], [v["id"] for v in mb["variants"]])
    compare("excluded", ma.get("excluded", []), mb.get("excluded", []))
    prov_a, prov_b = ma.get("provenance", {}), mb.get("provenance", {})
    compare("tools", prov_a.get("tools", {}), prov_b.get("tools", {}))
    compare("source", prov_a.get("source", {}), prov_b.get("source", {}))
    compare("policy", prov_a.get("policy", {}), prov_b.get("policy", {}))

    def node_table(bundle, manifest) -> dict:
        if not manifest.get("decisions"):
            return {}
        log = load_decisions(bundle, "bundle")
        return {n["name"]: {vid: c["precision"] for vid, c in n["choices"].items()} for n in log["nodes"]}

    compare("nodes", node_table(a, ma), node_table(b, mb))
    return {"same": not changes, "changes": changes}


def _text(value) -> str:
    return "-" if value is None else str(value)


class Diff:
    """Show what changed between two bundles (exit 1 when they differ, like diff(1)).

    Compares file and section sizes and digests, variants (precision, engine options, measured accuracy, order),
    excluded variants, tool versions, source model, policy and the per-node precision plan.
    """

    name = "diff"
    ok_codes = (0, 1)

    def add_args(self, parser) -> None:
        parser.add_argument("a", metavar="A.xrtpkg")
        parser.add_argument("b", metavar="B.xrtpkg")
        parser.add_argument("--json", action="store_true", help="print the differences as JSON")
        parser.add_argument("--limit", type=int, default=40, help="rows shown per area (default 40; --json: all)")

    def run(self, args) -> int:
        from .inspect import read_bundle

        result = diff_bundles(read_bundle(args.a), read_bundle(args.b))
        if args.json:
            print(json.dumps(result, indent=1, sort_keys=True))
        elif result["same"]:
            print(f"no differences between {args.a} and {args.b}")
        else:
            print(f"{'area':<10} {'key':<48} {'A':<24} B")
            for area, rows in result["changes"].items():
                for key, x, y in rows[: args.limit]:
                    print(f"{area:<10} {key[:48]:<48} {_text(x)[:24]:<24} {_text(y)[:40]}")
                if len(rows) > args.limit:
                    print(f"{area:<10} ... {len(rows) - args.limit} more (--json shows all)")
        sys.stdout.flush()
        return 0 if result["same"] else 1
