"""The monitor's page: one Bokeh document per browser tab, drawn from the latest view (follower.py).

Numbers sit in HTML tables with ``data-key`` and ``data-value`` (the exact value, repr) on each, so a script
or a test reads what the page shows without parsing text; the plots are Bokeh figures fed per analysis point.
Every text that comes from the file or the stream is HTML-escaped.
"""

from __future__ import annotations

import datetime as dt
import html
import math

from bokeh.layouts import column, gridplot, row
from bokeh.models import ColumnDataSource, Div, Span
from bokeh.plotting import figure

COLORS = {"accuracy": "#1f77b4", "band": "#aec7e8", "estimate": "#2ca02c", "limit": "#d62728", "spent": "#9467bd",
          "cap": "#ff7f0e", "batch": "#8c564b"}
STYLE = """<style>
.qs table {border-collapse: collapse; font: 13px sans-serif; margin: 2px 0 8px 0;}
.qs td, .qs th {border-bottom: 1px solid #ddd; padding: 2px 8px; text-align: left; vertical-align: top;}
.qs h3 {font: bold 14px sans-serif; margin: 6px 0 2px 0;}
.qs .bad {color: #b00020; font-weight: bold;} .qs .ok {color: #1b5e20; font-weight: bold;}
.qs pre {font: 12px monospace; white-space: pre-wrap; margin: 0;}
.qs .bar {background: #eee; width: 320px; height: 12px;} .qs .fill {background: #607d8b; height: 12px;}
</style>"""


def _number(value, fmt: str = ".4g", unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return f"{value:{fmt}}{(' ' + unit) if unit else ''}"
    return html.escape(str(value)) + (f" {html.escape(unit)}" if unit else "")


def cell(key: str, value, fmt: str = ".4g", unit: str = "") -> str:
    """A table cell a script can read: data-key, data-value (the exact value) and the text a person reads."""
    exact = "" if value is None else html.escape(repr(value), quote=True)
    return f'<td data-key="{key}" data-value="{exact}">{_number(value, fmt, unit)}</td>'


def table(title: str, rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{html.escape(name)}</th>{cells}</tr>" for name, cells in rows)
    return f"<h3>{html.escape(title)}</h3><table>{body}</table>"


# --- the parts of the page, each from the view -------------------------------------------------------

def header_html(view: dict) -> str:
    if "waiting" in view:
        return f'{STYLE}<div class="qs"><h3>qslab monitor</h3><p data-key="waiting">{html.escape(view["waiting"])}</p></div>'
    status = view.get("status") or "unknown"
    css = {"running": "ok", "complete": "ok", "aborted": "bad"}.get(status, "")
    error = f'<p class="bad" data-key="error">{html.escape(view["error"])}</p>' if view.get("error") else ""
    detail = f" ({html.escape(view['detail'])})" if view.get("detail") else ""
    stopped = view.get("stopped") or {}
    stop = (f'<p class="bad" data-key="stopped">stopped: {html.escape(str(stopped.get("error_type")))}: '
            f'{html.escape(str(stopped.get("error")))}</p>') if stopped else ""
    return (f'{STYLE}<div class="qs"><h3>qslab monitor: run <span data-key="run_id" data-value="'
            f'{html.escape(str(view.get("run_id")))}">{html.escape(str(view.get("run_id") or "-"))}</span>, '
            f'<span class="{css}" data-key="status" data-value="{html.escape(status)}">{html.escape(status)}</span>'
            f'{detail}</h3><p>{html.escape(view.get("file") or "")} (started {html.escape(view.get("created_utc") or "-")})'
            f'</p>{error}{stop}</div>')


def progress_html(view: dict) -> str:
    p = view.get("progress") or {}
    done, total = p.get("images_done", 0), p.get("images_total", 0)
    width = int(320 * done / total) if total else 0
    rows = [("batches", f'{cell("batches_done", p.get("batches_done"), "d")}'
                        f'{cell("batches_total", p.get("batches_total"), "d", "in all")}'),
            ("images", f'{cell("images_done", done, "d")}{cell("images_total", total, "d", "in all")}'),
            ("to go", cell("batches_to_go", (p.get("batches_total", 0) - p.get("batches_done", 0)) if p else None,
                           "d", "batches"))]
    return (f'{STYLE}<div class="qs">{table("Progress", rows)}<div class="bar"><div class="fill" '
            f'style="width: {width}px"></div></div></div>')


def numbers_html(view: dict) -> str:
    a = view.get("accuracy") or {}
    v = view.get("verification") or {}
    leak = view.get("leakage") or {}
    ci = a.get("ci95") or [None, None]
    accepted = v.get("accepted")
    rows = [
        ("analysed", cell("analysed_images", view.get("analysed_images"), "d", "images")),
        ("accuracy", cell("accuracy", a.get("accuracy"), ".2%") + cell("correct", a.get("correct"), "d", "correct")),
        ("95 % interval", cell("accuracy_ci_low", ci[0], ".2%") + cell("accuracy_ci_high", ci[1], ".2%")),
        ("T (estimate, lower limit)", cell("transmittance_hat", v.get("transmittance_hat"))
         + cell("transmittance_min", v.get("transmittance_min"))),
        ("eps (estimate, upper limit)", cell("excess_noise_hat_snu", v.get("excess_noise_hat_snu"), ".4g", "SNU")
         + cell("excess_noise_max_snu", v.get("excess_noise_max_snu"), ".4g", "SNU")),
        ("verification", cell("verified", accepted) + cell("verified_samples", v.get("n_samples"), "d", "samples")),
        ("weight leakage per query", cell("leakage_per_query", leak.get("per_query_bits_per_mode"), ".4g", "bit/mode")),
        ("weight leakage spent", cell("leakage_spent", leak.get("spent_bits_per_mode"), ".4g", "bit/mode")
         + cell("leakage_cap", leak.get("cap_bits_per_mode"), ".4g", "bit/mode cap")),
    ]
    for layer in view.get("layers") or []:
        name = layer["layer"]
        rows.append((f"  {name}", cell(f"{name}_bits_per_mode", layer["bits_per_mode"], ".4g", "bit/mode")
                     + cell(f"{name}_transmittance_min", layer["transmittance_min"])
                     + cell(f"{name}_excess_noise_max_snu", layer["excess_noise_max_snu"], ".4g", "SNU")
                     + f"<td>{html.escape(layer['method'])}</td>"))
    return f'{STYLE}<div class="qs">{table("So far (computed from the file by the monitor)", rows)}</div>'


def station_html(view: dict) -> str:
    station = view.get("station") or {}
    readings = station.get("readings") or {}
    rows = []
    for name, instrument in readings.items():
        for key, item in (instrument.get("values") or {}).items():
            rows.append((f"{name} ({instrument.get('category')})", f"<td>{html.escape(key)}</td>"
                         + cell(f"{name}.{key}", item.get("value"), ".6g", item.get("unit") or "")))
    link = station.get("link") or {}
    if link:
        rows.append(("link", "<td>laser set-point</td>" + cell("link.laser_power_dbm", link.get("laser_power_dbm"),
                                                                 ".4g", "dBm")))
        for receiver, volts in (link.get("digitizer_ranges_v") or {}).items():
            rows.append(("link", f"<td>{html.escape(receiver)} range</td>" + cell(f"link.range.{receiver}", volts,
                                                                                   ".4g", "V")))
        for index, (mu, att) in enumerate(zip(link.get("mu_photons") or [], link.get("attenuation_db") or [])):
            rows.append(("link", f"<td>layer {index + 1}: mu, VOA</td>"
                         + cell(f"link.mu.{index + 1}", mu, ".4g", "photons/mode")
                         + cell(f"link.voa.{index + 1}", att, ".4g", "dB")))
    when = station.get("time_unix_s")
    said = (f"as the drivers last set or read them, after batch {station.get('batches_done')} "
            f"({_clock(when)})") if when else "no status stream yet (the session publishes it once set up)"
    return f'{STYLE}<div class="qs">{table("Station: " + said, rows)}</div>'


def calibrations_html(view: dict) -> str:
    rows = []
    for record in view.get("calibrations") or []:
        left = record.get("seconds_left")
        state = "-" if left is None else ("expired" if left <= 0 else f"{left / 60:.1f} min left")
        css = "bad" if left is not None and left <= 0 else ""
        rows.append((f"{record['kind']} / {record['instrument']}",
                     f"<td>{html.escape(record['id'])}</td><td>{html.escape(record.get('expires_utc') or 'expiry unknown')}"
                     f'</td><td class="{css}" data-key="expiry.{html.escape(record["id"])}">{state}</td>'))
    return f'{STYLE}<div class="qs">{table("Calibration records in use (valid until)", rows)}</div>'


def faults_html(view: dict) -> str:
    faults = view.get("faults") or {}
    rows = [("injected", f'<td data-key="faults_injected">{html.escape(", ".join(faults.get("injected") or []) or "none")}</td>'),
            ("fired on the bench", cell("faults_fired", len(faults.get("fired") or []), "d"))]
    for action in faults.get("actions") or []:
        where = f"batch {action.get('batch')}" if action.get("batch") else "set-up"
        rows.append((f"{where}: {action.get('action')}",
                     f"<td>{html.escape(str(action.get('instrument') or ''))}</td>"
                     f"<td>{html.escape(str(action.get('detail') or ''))}</td>"))
    return (f'{STYLE}<div class="qs" data-key="fault_actions" data-value="{len(faults.get("actions") or [])}">'
            f'{table("Faults and cures", rows)}</div>')


def final_html(view: dict) -> str:
    results = view.get("results")
    if not results:
        return f'{STYLE}<div class="qs"><h3>Final report</h3><p>when the session completes</p></div>'
    from qslab.sequences.commands.session import format_result

    verification = results.get("verification") or {}
    weight = (results.get("security_report") or {}).get("weight_leakage") or {}
    rows = [("accuracy", cell("final.accuracy", results.get("accuracy"), ".2%")
             + cell("final.accuracy_ci_low", (results.get("accuracy_ci95") or [None])[0], ".2%")
             + cell("final.accuracy_ci_high", (results.get("accuracy_ci95") or [None, None])[1], ".2%")),
            ("T (estimate, lower limit)", cell("final.transmittance_hat", verification.get("transmittance_hat"))
             + cell("final.transmittance_min", verification.get("transmittance_min"))),
            ("eps (estimate, upper limit)", cell("final.excess_noise_hat_snu", verification.get("excess_noise_hat_snu"))
             + cell("final.excess_noise_max_snu", verification.get("excess_noise_max_snu"))),
            ("weight leakage", cell("final.leakage_per_query", weight.get("per_query_bits_per_mode"), ".4g", "bit/mode")
             + cell("final.leakage_cumulative", weight.get("cumulative_bits_per_mode"), ".4g", "bit/mode in all")),
            ("verified", cell("final.verified", results.get("verified")))]
    try:
        text = format_result(results)
    except (KeyError, TypeError, ValueError) as error:  # results of another version: the table above still shows
        text = f"(the full report cannot be formatted: {type(error).__name__} {error})"
    return (f'{STYLE}<div class="qs">{table("Final report (the session results)", rows)}'
            f'<pre data-key="final_report">{html.escape(text)}</pre></div>')


def refresh_html(view: dict) -> str:
    timing = view.get("refresh") or {}
    return (f'{STYLE}<div class="qs"><p>last look {_clock(timing.get("time_unix_s"))}: read '
            f'{cell_inline("refresh_read_ms", _ms(timing.get("read_s")))} ms, analysis '
            f'{cell_inline("refresh_analysis_ms", _ms(timing.get("analysis_s")))} ms, in all '
            f'{cell_inline("refresh_total_ms", _ms(timing.get("total_s")))} ms</p></div>')


def cell_inline(key: str, value) -> str:
    return f'<span data-key="{key}" data-value="{html.escape(repr(value))}">{_number(value, ".1f")}</span>'


def _ms(seconds):
    return None if seconds is None else 1000.0 * seconds


def _clock(unix_s) -> str:
    if not unix_s:
        return "-"
    return dt.datetime.fromtimestamp(unix_s, dt.timezone.utc).strftime("%H:%M:%S UTC")


# --- the document ------------------------------------------------------------------------------------

class MonitorPage:
    """The models of one document, updated from the poller's latest view by a periodic callback."""

    PARTS = ("header", "progress", "numbers", "station", "calibrations", "faults", "final", "refresh")

    def __init__(self, doc, poller, refresh_ms: int):
        self.poller, self._seen = poller, -1
        self.divs = {name: Div(text="", sizing_mode="stretch_width", name=name) for name in self.PARTS}
        self.history = ColumnDataSource(data=_history_columns({}))
        self.batches = ColumnDataSource(data={"batch": [], "seconds": []})
        self.cap = Span(location=0, dimension="width", line_color=COLORS["cap"], line_dash="dashed", line_width=2,
                        visible=False)
        plots = self._plots()
        doc.title = "qslab monitor"
        doc.add_root(column(self.divs["header"], row(self.divs["progress"], self.divs["numbers"]),
                            gridplot(plots, ncols=3, sizing_mode="stretch_width", height=230),
                            row(self.divs["station"], self.divs["calibrations"]), self.divs["faults"],
                            self.divs["final"], self.divs["refresh"], sizing_mode="stretch_width"))
        self.update()
        doc.add_periodic_callback(self.update, refresh_ms)

    def _plots(self) -> list:
        tools = "pan,wheel_zoom,box_zoom,reset,save"
        accuracy = figure(title="accuracy so far, 95 % interval", x_axis_label="images", tools=tools, name="plot_accuracy")
        accuracy.varea(x="images", y1="ci_low", y2="ci_high", source=self.history, color=COLORS["band"],
                       legend_label="95 % interval")
        accuracy.line(x="images", y="accuracy", source=self.history, color=COLORS["accuracy"], line_width=3,
                      legend_label="accuracy")
        accuracy.scatter(x="images", y="accuracy", source=self.history, color=COLORS["accuracy"], size=7)
        transmittance = figure(title="verification: T", x_axis_label="images", tools=tools, name="plot_transmittance")
        eps = figure(title="verification: eps (SNU)", x_axis_label="images", tools=tools, name="plot_excess_noise")
        for plot, hat, limit, what in ((transmittance, "transmittance_hat", "transmittance_min", "lower limit"),
                                       (eps, "excess_noise_hat_snu", "excess_noise_max_snu", "upper limit")):
            plot.line(x="images", y=hat, source=self.history, color=COLORS["estimate"], line_width=3,
                      legend_label="estimate")
            plot.scatter(x="images", y=hat, source=self.history, color=COLORS["estimate"], size=7)
            plot.line(x="images", y=limit, source=self.history, color=COLORS["limit"], line_width=3,
                      line_dash="dashed", legend_label=what)
            plot.scatter(x="images", y=limit, source=self.history, color=COLORS["limit"], size=7)
        spent = figure(title="weight leakage spent (bit/mode)", x_axis_label="images", tools=tools, name="plot_leakage")
        spent.line(x="images", y="spent_bits_per_mode", source=self.history, color=COLORS["spent"], line_width=3,
                   legend_label="spent so far")
        spent.scatter(x="images", y="spent_bits_per_mode", source=self.history, color=COLORS["spent"], size=7)
        spent.add_layout(self.cap)
        batches = figure(title="time per batch (s)", x_axis_label="batch", tools=tools, name="plot_batches")
        batches.vbar(x="batch", top="seconds", source=self.batches, width=0.8, color=COLORS["batch"])
        for plot in (accuracy, transmittance, eps, spent):
            plot.legend.location = "bottom_right"
            plot.legend.background_fill_alpha = 0.6
        return [accuracy, transmittance, eps, spent, batches]

    def update(self) -> None:
        sequence, view = self.poller.latest()
        if sequence == self._seen or view is None:
            return
        self._seen = sequence
        for name, render in (("header", header_html), ("progress", progress_html), ("numbers", numbers_html),
                             ("station", station_html), ("calibrations", calibrations_html), ("faults", faults_html),
                             ("final", final_html), ("refresh", refresh_html)):
            text = render(view)
            if self.divs[name].text != text:
                self.divs[name].text = text
        columns = _history_columns(view.get("history") or {})
        if columns["images"] != list(self.history.data["images"]):
            self.history.data = columns
        seconds = view.get("batch_seconds") or []
        if len(seconds) != len(self.batches.data["seconds"]):
            self.batches.data = {"batch": list(range(2, len(seconds) + 2)), "seconds": seconds}
        cap = (view.get("leakage") or {}).get("cap_bits_per_mode")
        self.cap.visible, self.cap.location = cap is not None, cap or 0.0


def _history_columns(history: dict) -> dict:
    names = ("images", "accuracy", "ci_low", "ci_high", "transmittance_hat", "transmittance_min",
             "excess_noise_hat_snu", "excess_noise_max_snu", "spent_bits_per_mode")
    return {name: [float("nan") if v is None else v for v in history.get(name, [])] for name in names}
