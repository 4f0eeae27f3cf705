"""The run's report: the JSON record, a table for the terminal, and a self-contained
HTML page (plotly, its JavaScript inlined: no CDN, no network)."""
from __future__ import annotations

import json
import statistics

from swarmlet.chaos.history import WRITE_OK, History


def public_record(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.startswith("_")}


def to_json(record: dict) -> str:
    return json.dumps(public_record(record), indent=2, sort_keys=True)


def _figure(values: list[float]) -> str:
    if not values:
        return "-"
    return f"median {statistics.median(values):.2f}s, max {max(values):.2f}s (n={len(values)})"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def render_table(record: dict, console) -> None:
    """Faults one per row, then the verdicts and figures."""
    from rich.table import Table

    faults = Table(title="faults")
    for column in ("start", "kind", "target", "role", "lasted", "new leader", "first write", "full replicas", "note"):
        faults.add_column(column)
    seconds = lambda v: "-" if v is None else f"{v:.2f}s"  # noqa: E731
    for fault in record["faults"]:
        lasted = None if fault["end"] is None else fault["end"] - fault["start"]
        faults.add_row(f"{fault['start']:.1f}s", fault["kind"], fault["target"], fault["role"], seconds(lasted),
                       seconds(fault["failover_s"]), seconds(fault["first_write_s"]),
                       seconds(fault["time_to_full_s"]), fault["note"])
    console.print(faults)
    writes = record["writes"]
    summary = Table(title="result: " + ("PASSED" if record["passed"] else "FAILED")
                    + (" (interrupted)" if record.get("interrupted") else ""), show_header=False)
    summary.add_column("what")
    summary.add_column("value")
    summary.add_row("writes acknowledged", str(writes["acked"]))
    summary.add_row("acknowledged writes lost", str(len(writes["lost"])) if writes["checked"] else "not checked")
    summary.add_row("writes refused (not committed) / indeterminate", f"{writes['failed']} / {writes['indeterminate']}")
    summary.add_row("refused writes present (phantoms)", str(len(writes["phantom"])))
    summary.add_row("linearisable reads / stale / failed",
                    f"{writes['reads']} / {len(writes['stale_reads'])} / {writes['read_errors']}")
    summary.add_row("write unavailability", f"{writes['unavailable_s']:.2f}s")
    summary.add_row("leader changes", str(record["leader"]["changes"]))
    summary.add_row("failover (fault -> new leader)", _figure(record["leader"]["failover_s"]))
    firsts = [f["first_write_s"] for f in record["faults"] if f["first_write_s"] is not None]
    summary.add_row("fault -> first committed write", _figure(firsts))
    summary.add_row("fault -> full replicas", _figure(record["replicas"]["time_to_full_s"]))
    summary.add_row("duplicate running tasks in a slot", str(len(record["duplicates"])))
    if "http" in record:
        http = record["http"]
        summary.add_row("HTTP requests / errors", f"{http['requests']} / {http['errors']}")
        summary.add_row("HTTP error rate outside faults", _rate(http["outside_faults"]["error_rate"]))
        for row in http["by_fault"]:
            summary.add_row(f"HTTP error rate, {row['kind']} {row['target']} at {row['start']:.1f}s",
                            f"{_rate(row['error_rate'])} of {row['requests']}")
    summary.add_row("seed", str(record["seed"]))
    console.print(summary)
    for lost in writes.get("lost_detail", []):
        tried = "; ".join(f"{a['host']} {a['start']:.2f}-{a['end']:.2f}s: {a['status'] or a['error']}"
                          for a in lost["attempts"])
        faults_then = ", ".join(f"{f['kind']} {f['target']} at {f['start']:.1f}s" for f in lost["faults"]) or "none"
        console.print(f"lost {lost['name']}: sent {lost['start']:.2f}s, acknowledged {lost['end']:.2f}s at store "
                      f"index {lost['index']}; attempts: {tried}; faults: {faults_then}")


FAULT_COLOURS = {"kill": "rgba(214,39,40,0.18)", "freeze": "rgba(31,119,180,0.18)",
                 "partition": "rgba(255,127,14,0.2)", "loss": "rgba(148,103,189,0.2)",
                 "latency": "rgba(140,86,75,0.2)"}


def render_html(record: dict, history: History) -> str:
    """One self-contained page: faults as bands over four aligned plots (leader and
    term; write latency and errors; replicas; HTTP errors)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = 4 if history.http else 3
    titles = ["leader (term)", "write latency (ms) and errors", "service replicas running / desired"]
    if history.http:
        titles.append("HTTP requests and errors per second (round robin over the URLs)")
    figure = make_subplots(rows=rows, cols=1, shared_xaxes=True, subplot_titles=titles, vertical_spacing=0.06)

    timeline = record["leader"]["timeline"]
    if timeline:
        figure.add_trace(go.Scatter(x=[p["t"] for p in timeline], y=[p["term"] for p in timeline], mode="lines+markers",
                                    line_shape="hv", text=[p["leader"] for p in timeline], name="term (hover: leader)"),
                         row=1, col=1)
    acked = [w for w in history.writes if w.outcome == WRITE_OK]
    figure.add_trace(go.Scattergl(x=[w.end for w in acked], y=[(w.end - w.start) * 1000 for w in acked],
                                  mode="markers", marker={"size": 3}, name="acknowledged write"), row=2, col=1)
    errors = [w for w in history.writes if w.outcome != WRITE_OK]
    if errors:
        figure.add_trace(go.Scattergl(x=[w.end for w in errors], y=[(w.end - w.start) * 1000 for w in errors],
                                      mode="markers", marker={"size": 6, "symbol": "x", "color": "red"},
                                      text=[f"{w.outcome}: {w.error}" for w in errors], name="failed / unknown write"),
                         row=2, col=1)
    if history.replicas:
        figure.add_trace(go.Scatter(x=[s.t for s in history.replicas], y=[s.running for s in history.replicas],
                                    line_shape="hv", name="running"), row=3, col=1)
        figure.add_trace(go.Scatter(x=[s.t for s in history.replicas], y=[s.desired for s in history.replicas],
                                    line_shape="hv", line={"dash": "dot"}, name="desired"), row=3, col=1)
    if history.http:
        seconds, requests, errors = http_per_second(history)
        figure.add_trace(go.Bar(x=seconds, y=requests, name="HTTP requests per second",
                                marker={"color": "rgba(44,160,44,0.35)"}), row=4, col=1)
        figure.add_trace(go.Bar(x=seconds, y=errors, name="HTTP errors per second", marker={"color": "red"}),
                         row=4, col=1)
        failed = [s for s in history.http if not s.ok]
        figure.add_trace(go.Scatter(x=[s.t for s in failed], y=[0] * len(failed), mode="markers",
                                    marker={"symbol": "x", "color": "red", "size": 5},
                                    text=[f"{s.url}: {s.error}" for s in failed], name="HTTP error (hover: why)"),
                         row=4, col=1)
        figure.update_layout(barmode="overlay")
    for fault in record["faults"]:
        end = fault["end"] if fault["end"] is not None else record["duration_s"]
        figure.add_vrect(x0=fault["start"], x1=end, fillcolor=FAULT_COLOURS.get(fault["kind"], "rgba(0,0,0,0.1)"),
                         line_width=0, annotation_text=f"{fault['kind']} {fault['target']}",
                         annotation_position="top left", annotation_font_size=9)
    verdict = "PASSED" if record["passed"] else "FAILED"
    writes = record["writes"]
    figure.update_layout(
        height=250 * rows + 150,
        title=(f"swarmlet chaos run ({verdict}, seed {record['seed']}): {len(record['faults'])} faults, "
               f"{writes['acked']} writes acknowledged, {len(writes['lost'])} lost, "
               f"{len(writes['stale_reads'])} stale reads, {len(record['duplicates'])} duplicates"))
    figure.update_xaxes(title_text="seconds since the run began", row=rows, col=1)
    body = figure.to_html(full_html=True, include_plotlyjs=True)
    summary = "<pre id='record'>" + _escape(json.dumps(public_record(record), indent=2, sort_keys=True)) + "</pre>"
    return body.replace("</body>", f"<h2>The full record</h2>{summary}</body>")


def http_per_second(history: History) -> tuple[list[float], list[int], list[int]]:
    """Requests and errors begun in each whole second of the run (bar positions at the
    middle of each second)."""
    if not history.http:
        return [], [], []
    last = int(max(s.t for s in history.http)) + 1
    requests, errors = [0] * last, [0] * last
    for sample in history.http:
        second = max(0, int(sample.t))
        requests[second] += 1
        errors[second] += not sample.ok
    return [second + 0.5 for second in range(last)], requests, errors


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
