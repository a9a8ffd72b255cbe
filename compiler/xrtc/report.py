"""One self-contained HTML page about a bundle, for people: variants and why, the accuracy gate's numbers, the
per-node plan, the latency distribution, where run time goes (by op type, by node), size by section, and a
comparison against a baseline bench result.

Plots are matplotlib figures inlined as SVG (text as paths: no font or network fetch); styles and the one small
script are inline too, so the file opens anywhere, offline. matplotlib is the `[report]` extra.
"""

from __future__ import annotations

import html
import io
import json

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
td,th{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f4f4f4}.num{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#176b2c;font-weight:bold}.fail{color:#a11;font-weight:bold}.muted{color:#777}
.plot svg{max-width:100%;height:auto}#node-filter{margin:4px 0;padding:3px;width:260px}
"""

_SCRIPT = """
(function(){
  var box=document.getElementById('node-filter');
  if(box){box.addEventListener('input',function(){
    var q=box.value.toLowerCase();
    document.querySelectorAll('#node-plan tbody tr').forEach(function(r){
      r.style.display=r.textContent.toLowerCase().indexOf(q)>=0?'':'none';});});}
  document.body.setAttribute('data-ready','1');
})();
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and DOCTYPE: inline SVG in HTML takes neither


def _pyplot():
    try:
        import matplotlib
    except ImportError as err:
        from .errors import XrtcError

        raise XrtcError("xrtc report draws with matplotlib: pip install 'xpuruntime[report]'") from err
    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "path"
    matplotlib.rcParams["svg.hashsalt"] = "xrtc-report"
    import matplotlib.pyplot as plt

    return plt


def _barh(plt, labels: list[str], values: list[float], xlabel: str, title: str) -> str:
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(labels) + 1.2))
    ax.barh(range(len(labels)), values, color="#3b75af")
    ax.set_yticks(range(len(labels)), [lab[:48] for lab in labels], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    return _svg(fig)


def _table(head: list[str], rows: list[list], numeric: set[int] = frozenset(), table_id: str = "") -> str:
    out = [f"<table{f' id={chr(34)}{table_id}{chr(34)}' if table_id else ''}><thead><tr>"
           + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for row in rows:
        out.append("<tr>" + "".join(f"<td class=\"num\">{_e(c)}</td>" if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def render(info: dict, decisions: dict | None, bench: dict | None, profile: dict | None,
           baseline: dict | None) -> str:
    """The page. `info`: inspect.describe(); `bench`/`profile`: `xrtc bench --json` / `xrtc profile -o` results
    (or None: that part says it was not measured); `baseline`: bench.compare rows plus the baseline's file name."""
    plt = _pyplot()
    m = info["manifest"]
    model = m.get("model", {})
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>xrtc report: "
             f"{_e(model.get('name', info['file']))}</title><style>{_CSS}</style></head><body>",
             f"<h1 id=\"title\">{_e(model.get('name', '?'))}: xrtc bundle report</h1>",
             f"<p>{_e(info['file'])}: xrtpkg {_e(info['version'])}, {info['file_size']:,} bytes, "
             f"{'signed' if info.get('signer') else 'unsigned'}. Built by "
             + _e(", ".join(f"{k} {v}" for k, v in sorted(m.get("provenance", {}).get("tools", {}).items())))
             + "</p>"]
    if bench:
        mach = bench["machine"]
        parts.append(f"<p class=\"muted\">Measured on {_e(mach.get('cpu_model', '?'))}, {mach['usable_cpus']} usable CPUs, "
                     f"{mach['memory_gib']} GiB (fingerprint {_e(mach['fingerprint'])}); "
                     + _e(", ".join(f"{k} {v}" for k, v in sorted(bench["versions"].items()))) + "</p>")

    # Variants: chosen order, excluded, why.
    parts.append("<h2 id=\"variants\">Variants</h2>")
    rows = []
    for v in (decisions or {}).get("variants", []):
        status = f"{v['rank'] + 1}. built" if v["status"] == "built" else "excluded"
        ran = " (ran in this report)" if bench and bench.get("variant") == v["id"] else ""
        rows.append([_e(v["id"]) + _e(ran), _e(v["engine"]), _e(status), _e(v.get("precision") or "-"),
                     _e(v["why"]) + "".join(f"<br><span class=muted>note: {_e(n)}</span>" for n in v.get("notes", []))
                     + (f"<br>fallback: {_e(v['fallback'])}" if v.get("fallback") else "")])
    if not rows:  # a bundle without a decision log: the manifest's list
        rows = [[_e(v.get("id")), _e(v.get("engine")), "built", _e(v.get("precision")), _e(v.get("why", ""))]
                for v in m.get("variants", [])]
    parts.append(_table(["variant", "engine", "status", "precision", "why chosen / excluded"], rows))

    # Accuracy gate per output.
    parts.append("<h2 id=\"accuracy\">Accuracy gate</h2>")
    rows = []
    for v in m.get("variants", []):
        acc = v.get("accuracy") or {}
        for out, err in sorted(acc.get("max_abs_err", {}).items()):
            rows.append([_e(v["id"]), _e(out), f"{err:.3g}", f"{acc.get('rtol')}", f"{acc.get('atol')}",
                         _e(acc.get("samples", "?")),
                         "<span class=pass>pass</span>" if acc.get("passed") else "<span class=fail>FAIL</span>"])
    parts.append(_table(["variant", "output", "max abs err", "rtol", "atol", "samples", "verdict"], rows, {2})
                 if rows else "<p class=muted>No accuracy measurement recorded in this bundle.</p>")

    # Latency distribution and baseline.
    parts.append("<h2 id=\"latency\">Latency</h2>")
    if bench:
        lat = bench["latency_ms"]
        parts.append(_table(["runs", "p50", "p90", "p95", "p99", "mean", "load ms", "first run ms",
                             f"runs/s at concurrency {bench['throughput']['concurrency']}", "peak RSS MiB"],
                            [[lat["runs"], f"{lat['p50']:.4f}", f"{lat['p90']:.4f}", f"{lat['p95']:.4f}",
                              f"{lat['p99']:.4f}", f"{lat['mean']:.4f}", f"{bench['load_ms']:.1f}",
                              f"{bench['first_run_ms']:.2f}", f"{bench['throughput']['per_s']:.1f}",
                              f"{bench['memory_mib']['peak_rss']:.0f}"]], set(range(10))))
        fig, ax = plt.subplots(figsize=(8, 2.8))
        # Up to twice the p99 (a shared machine's rare stalls would squash the bulk into one bar); the table above
        # has the max.
        top = max(2 * lat["p99"], lat["min"] * 1.01)
        ax.hist([t for t in bench["samples_ms"] if t <= top], bins=40, color="#3b75af")
        for q, style in (("p50", "-"), ("p99", "--")):
            ax.axvline(lat[q], color="#a11", linestyle=style, label=f"{q} {lat[q]:.3f} ms")
        ax.set_xlabel("latency per run (ms)")
        ax.set_ylabel("runs")
        ax.legend(fontsize=8)
        parts.append(f"<div class=\"plot\" id=\"latency-plot\">{_svg(fig)}</div>")
        if bench.get("peers"):
            parts.append(_table(["engine", "p50 ms", "p90 ms", "version"],
                                [["xrt " + _e(bench["variant"]), f"{lat['p50']:.4f}", f"{lat['p90']:.4f}", ""]] +
                                [[_e(p), f"{v['latency_ms']['p50']:.4f}", f"{v['latency_ms']['p90']:.4f}",
                                  _e(v["version"])] for p, v in bench["peers"].items()], {1, 2}))
    else:
        parts.append("<p class=muted>Not measured.</p>")
    if baseline:
        parts.append(f"<h2 id=\"baseline\">Against the baseline {_e(baseline['file'])}</h2>")
        parts.append(_table(["metric", "baseline", "now", "change", "verdict"],
                            [[_e(r["metric"]), f"{r['baseline']:.4g}", f"{r['now']:.4g}", f"{r['change']:+.1%}",
                              "<span class=fail>regression</span>" if r["regressed"] else
                              "<span class=pass>within budget</span>"] for r in baseline["rows"]], {1, 2, 3}))

    # Where time goes.
    parts.append("<h2 id=\"time\">Where the time goes</h2>")
    if profile:
        from .profiling import by_op

        ops = [(op, ms) for op, ms in by_op(profile) if ms > 0][:20]
        parts.append(f"<p>{_e(profile['variant'])} on {_e(profile['engine'])}: {profile['run_ms']:.3f} ms per run "
                     f"(engine-measured, mean of {profile['runs']}); engine overhead is the time no entry accounts "
                     "for.</p>")
        if ops:
            chart = _barh(plt, [o for o, _ in ops], [t for _, t in ops], "ms per run",
                          "time by ONNX op type (a fused entry under its first node's op)")
            parts.append(f"<div class=\"plot\" id=\"op-plot\">{chart}</div>")
        top_nodes = sorted((n for n in profile["nodes"] if n["ms"] > 0), key=lambda n: -n["ms"])[:25]
        if top_nodes:
            parts.append("<div class=\"plot\" id=\"node-plot\">" + _barh(
                plt, [f"{n['name']} ({n['op']})" for n in top_nodes], [n["ms"] for n in top_nodes], "ms per run",
                "time by ONNX node (a fused entry's time split among its nodes)") + "</div>")
        parts.append(_table(["ms", "kind", "engine entry", "type", "ONNX nodes"],
                            [[f"{e['ms']:.4f}", _e(e["kind"]), _e(e["name"]), _e(e["type"]),
                              _e(", ".join(e["onnx_nodes"]) or "-")] for e in profile["entries"][:40]], {0}))
    else:
        parts.append("<p class=muted>Not profiled.</p>")

    # Per-node plan.
    parts.append("<h2 id=\"plan\">Per-node plan</h2>")
    if decisions and decisions.get("nodes"):
        built = [v["id"] for v in decisions["variants"] if v["status"] == "built"]
        timed = {n["name"]: n for n in (profile or {}).get("nodes", [])}
        rows = []
        for n in decisions["nodes"]:
            cells = []
            for vid in built:
                c = n["choices"].get(vid, {})
                kernel = c.get("kernel", "engine default")
                cells.append(_e(c.get("precision", "?")) + ("" if kernel == "engine default" else
                                                             f"<br><span class=muted>{_e(kernel)}</span>"))
            t = timed.get(n["name"])
            rows.append([_e(n["name"]), _e(n["op"]), *cells,
                         (f"{t['ms']:.4f}" if t and t["status"].startswith("timed") else _e(t["status"]) if t else "-"),
                         _e(n["why"]) + "".join(f"<br><span class=muted>rejected {_e(r['alternative'])}: "
                                                f"{_e(r['reason'])}</span>" for r in n["rejected"])])
        parts.append("<input id=\"node-filter\" type=\"search\" placeholder=\"filter nodes\" aria-label=\"filter "
                     "nodes\">")
        parts.append(_table(["node", "op", *built, "ms per run", "why"], rows, table_id="node-plan"))
    else:
        parts.append("<p class=muted>No decision log in this bundle.</p>")

    # Size by section.
    parts.append("<h2 id=\"sizes\">Size by section</h2>")
    sections = sorted(info["sections"], key=lambda s: -s["stored_size"])
    parts.append("<div class=\"plot\" id=\"size-plot\">" + _barh(
        plt, [s["name"] for s in sections], [s["stored_size"] / 1024 for s in sections], "KiB stored",
        "bundle size by section") + "</div>")
    parts.append(_table(["section", "stored bytes", "bytes", "zstd"],
                        [[_e(s["name"]), f"{s['stored_size']:,}", f"{s['size']:,}", "yes" if s["compressed"] else "no"]
                         for s in sections], {1, 2}))
    parts.append(f"<script>{_SCRIPT}</script></body></html>")
    return "\n".join(parts)


def load_json(path: str | None, what: str):
    if not path:
        return None
    from .errors import UsageError

    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise UsageError(f"{what} {path}: cannot read it as JSON: {err}") from err
