#!/usr/bin/env python3
"""Writes the Vantage Grafana dashboards (dashboards/*.json) from the panel lists below.

The JSON files are committed so Grafana can provision them by file; this script is their
source. `scripts/tests.d/40-fleet-monitoring.sh` checks that the committed files match it and
runs every panel's query against a real Prometheus scraping a daemon and against a push-only
one fed by the same daemon's remote_write.

Probe results (success, ping, DNS, trace, TCP, HTTP) are computed from the per-round gauges with
*_over_time functions, never from counters, histograms or recording rules: those exist only
in scrapes and cannot be backfilled, while the gauges are scraped, pushed and backfilled
alike. Panels that can only come from a scrape (build info, scheduler, store, uplink,
shipping) say so in their title and description.

    python3 monitoring/grafana/generate.py          # rewrite dashboards/*.json
    python3 monitoring/grafana/generate.py --check  # exit 1 if they differ
"""
import json
import os
import sys

DS = {"type": "prometheus", "uid": "${datasource}"}
HERE = os.path.dirname(os.path.abspath(__file__))


def var_datasource():
    return {"name": "datasource", "label": "Prometheus", "type": "datasource",
            "query": "prometheus", "current": {}, "hide": 0}


def var_query(name, label, definition, multi=False, include_all=False, all_value=None):
    """`all_value` None: "All" is the list of values found (so `job` never matches other
    exporters' jobs); ".*" where series without the label must match too (`site`)."""
    v = {"name": name, "label": label, "type": "query", "datasource": DS,
         "definition": definition, "query": {"query": definition, "refId": name},
         "refresh": 2, "sort": 1, "multi": multi, "includeAll": include_all,
         "current": {}, "hide": 0}
    if all_value:
        v["allValue"] = all_value
    return v


def target(expr, legend="", instant=False, fmt=None, ref="A"):
    t = {"datasource": DS, "expr": expr, "refId": ref, "legendFormat": legend}
    if instant:
        t["instant"] = True
        t["range"] = False
    if fmt:
        t["format"] = fmt
    return t


class Layout:
    """Places panels left to right, wrapping at 24 columns."""

    def __init__(self):
        self.x, self.y, self.row_h, self.next_id = 0, 0, 0, 1

    def place(self, panel, w, h):
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        panel["gridPos"] = {"x": self.x, "y": self.y, "w": w, "h": h}
        panel["id"] = self.next_id
        self.next_id += 1
        self.x += w
        self.row_h = max(self.row_h, h)
        return panel


def stat(title, expr, unit="none", thresholds=None, desc="", legend="", mappings=None):
    """A stat of one instant query. No `or vector(0)` and no noValue: a selection without data
    shows Grafana's "No data", never a made-up 0."""
    steps = thresholds or [{"color": "green", "value": None}]
    return {"type": "stat", "title": title, "description": desc, "datasource": DS,
            "targets": [target(expr, legend=legend, instant=True)],
            "fieldConfig": {"defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps},
                                         "mappings": mappings or []},
                            "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "background", "graphMode": "none", "textMode": "auto"}}


def timeseries(title, targets, unit="none", desc="", stack=False, bars=False, min_interval=None):
    """`min_interval`: the shortest step, for probes that run less often than a step would be
    ($__rate_interval follows it, so each step's window holds a round)."""
    custom = {"drawStyle": "bars" if bars else "line", "lineWidth": 1, "fillOpacity": 10,
              "showPoints": "never", "spanNulls": False}
    if stack:
        custom["stacking"] = {"mode": "normal", "group": "A"}
    panel = {"type": "timeseries", "title": title, "description": desc, "datasource": DS,
             "targets": targets,
             "fieldConfig": {"defaults": {"unit": unit, "custom": custom}, "overrides": []},
             "options": {"legend": {"displayMode": "table", "placement": "bottom",
                                    "calcs": ["mean", "max", "lastNotNull"]},
                         "tooltip": {"mode": "multi", "sort": "desc"}}}
    if min_interval:
        panel["interval"] = min_interval
    return panel


def table(title, targets, desc="", transformations=None, unit="none"):
    return {"type": "table", "title": title, "description": desc, "datasource": DS,
            "targets": targets, "transformations": transformations or [],
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"showHeader": True, "cellHeight": "sm"}}


def row(title):
    """A panel row: the panels placed after it, up to the next row, are its."""
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def dashboard(uid, title, desc, variables, panels, links):
    return {"uid": uid, "title": title, "description": desc, "tags": ["vantage"],
            "timezone": "", "editable": True, "graphTooltip": 1, "refresh": "30s",
            "schemaVersion": 39, "version": 1, "time": {"from": "now-6h", "to": "now"},
            "templating": {"list": variables}, "annotations": {"list": []},
            "links": links, "panels": panels}


RED_AT = lambda v: [{"color": "green", "value": None}, {"color": "red", "value": v}]
GREEN_AT_1 = [{"color": "red", "value": None}, {"color": "green", "value": 1}]
LINKS = [{"type": "dashboards", "tags": ["vantage"], "asDropdown": True, "title": "Vantage",
          "includeVars": True, "keepTime": True}]
SEL = 'job=~"$job"'
FLEET = 'job=~"$job", site=~"$site"'
DEV = 'job=~"$job", instance="$instance"'
TGT = 'job=~"$job", instance="$instance", target="$target"'
# Windows. A panel reads every round in its step ($__rate_interval is at least four scrape
# intervals, so a window holds a round even when a probe runs less often than the step);
# the stats and tables read the last 5 minutes, or the whole time range where they say so.
W = "$__rate_interval"
# Said by every panel that reads series only a scrape of /metrics has: a push-only fleet shows
# "No data" there, and a gap in the scrapes stays a gap (counters and histograms cannot be
# backfilled).
SCRAPE = "From scrapes of the device's /metrics only: empty for push-only devices and for the time no scrape reached the device."
ROUNDS = "From the per-round gauges, so scraped, pushed and backfilled rounds all count."
RTT_AVG = 'vantage_ping_round_rtt_seconds{%s, stat="avg"}'
# Shortest step of the trace panels: traces run every minute by default.
TRACE_STEP = "1m"
# Shortest step of the HTTP panels: HTTP rounds run every 30 s by default.
HTTP_STEP = "30s"
CERT = "vantage_tls_cert_not_after_timestamp_seconds"
# Alerted on by VantageCertExpiringSoon (monitoring/alerts.yml): orange below it, red below a day.
CERT_STEPS = [{"color": "red", "value": None}, {"color": "orange", "value": 86400},
              {"color": "green", "value": 14 * 86400}]
# Device and target variables come from the one series every probe round carries, scraped or
# pushed alike (not from `up` or vantage_build_info, which a push-only Prometheus never has).
ROUND_SERIES = "vantage_probe_success"


def desc(*parts):
    return " ".join(p for p in parts if p)


def variables(*names):
    vs = [var_datasource(),
          var_query("job", "Job", f"label_values({ROUND_SERIES}, job)", multi=True, include_all=True)]
    if "site" in names:
        vs.append(var_query("site", "Site", f'label_values({ROUND_SERIES}{{job=~"$job"}}, site)', multi=True,
                            include_all=True, all_value=".*"))
    if "instance" in names:
        vs.append(var_query("instance", "Device", f'label_values({ROUND_SERIES}{{job=~"$job"}}, instance)'))
    if "target" in names:
        vs.append(var_query("target", "Target",
                            f'label_values({ROUND_SERIES}{{job=~"$job", instance="$instance"}}, target)'))
    return vs


def failing_targets(sel, by):
    """Targets whose last round (of any probe) within 5 minutes failed; 0 when none does, no
    data when the selection has no rounds at all (never a made-up 0)."""
    return (f"sum by ({by}) (max by ({by}, target) "
            f"(last_over_time(vantage_probe_success{{{sel}}}[5m]) == bool 0))")


def fleet():
    L = Layout()
    by = "job, instance"
    p = [
        L.place(stat("Devices reporting", f"count(count by ({by}) (count_over_time({ROUND_SERIES}{{{FLEET}}}[5m])))",
                     desc=desc("Devices with a probe round in the last 5 minutes.", ROUNDS)), 4, 4),
        L.place(stat("Devices down (scrape)", f"sum(up{{{SEL}}} == bool 0)", thresholds=RED_AT(1),
                     desc=desc("Devices Prometheus cannot scrape now.", SCRAPE)), 4, 4),
        L.place(stat("Targets failing", f"sum({failing_targets(FLEET, by)})", thresholds=RED_AT(1),
                     desc=desc("Targets whose last round in the last 5 minutes failed.", ROUNDS)), 4, 4),
        L.place(stat("Uplinks down (scrape)", f"sum(vantage_uplink_gateway_up{{{FLEET}}} == bool 0)",
                     thresholds=RED_AT(1),
                     desc=desc("Devices whose default gateway does not answer ([uplink]).", SCRAPE)), 4, 4),
        L.place(stat("Unshipped samples (scrape)", f"sum(vantage_remote_write_backlog_samples{{{FLEET}}})",
                     unit="short", desc=desc("Rounds stored on the devices and not yet shipped.", SCRAPE)), 4, 4),
        L.place(stat("Firing alerts", 'count(ALERTS{alertname=~"Vantage.*", alertstate="firing"})',
                     thresholds=RED_AT(1),
                     desc="Vantage alerts firing now. No data: none fires (or the rules are not loaded)."), 4, 4),
        L.place(table("Devices", [
            target(f"count by ({by}) (count by ({by}, target) (last_over_time({ROUND_SERIES}{{{FLEET}}}[5m])))",
                   instant=True, fmt="table", ref="A"),
            target(failing_targets(FLEET, by), instant=True, fmt="table", ref="B"),
            target(f"time() - max by ({by}) (timestamp({ROUND_SERIES}{{{FLEET}}}))", instant=True, fmt="table",
                   ref="C"),
            target(f"up{{{SEL}}}", instant=True, fmt="table", ref="D"),
            target(f"max by ({by}, version, arch) (vantage_build_info{{{FLEET}}})", instant=True, fmt="table",
                   ref="E"),
            target(f"max by ({by}) (time() - vantage_start_time_seconds{{{FLEET}}})", instant=True, fmt="table",
                   ref="F"),
        ], desc=desc("One row per device: targets, failing targets and the age of its last round (from the "
                     "per-round gauges); scrape state, version and uptime come from scrapes only and stay empty "
                     "for push-only devices."),
            transformations=[{"id": "merge", "options": {}},
                             {"id": "organize", "options": {"excludeByName": {"Time": True, "__name__": True,
                                                                             "Value #E": True},
                                                            "renameByName": {"Value #A": "targets",
                                                                             "Value #B": "failing",
                                                                             "Value #C": "last round (s ago)",
                                                                             "Value #D": "up (scrape)",
                                                                             "Value #F": "uptime (s)"}}}]), 24, 8),
        L.place(table("Worst targets by loss (5m)", [
            target(f"topk(10, avg_over_time(vantage_ping_loss_ratio{{{FLEET}}}[5m]) > 0)", instant=True, fmt="table")],
            unit="percentunit", desc=desc("Mean loss of the rounds of the last 5 minutes.", ROUNDS)), 12, 8),
        L.place(table("Worst targets by RTT p95 (5m)", [
            target(f"topk(10, quantile_over_time(0.95, {RTT_AVG % FLEET}[5m]))", instant=True, fmt="table")],
            unit="s", desc=desc("95th percentile of the rounds' mean RTT over the last 5 minutes.", ROUNDS)), 12, 8),
        L.place(table("Certificates expiring soonest", [
            target(f"bottomk(10, min by ({by}, target) (last_over_time({CERT}{{{FLEET}}}[1h])) - time())",
                   instant=True, fmt="table")],
            unit="s", desc=desc("Time left until the earliest expiry of each TLS target's certificate chain, as "
                                "its last TCP or HTTP round within an hour saw it (negative: expired).", ROUNDS)),
                12, 8),
        L.place(timeseries("Targets with failed rounds per device", [
            target(f"sum by ({by}) (max by ({by}, target) (min_over_time({ROUND_SERIES}{{{FLEET}}}[{W}]) == bool 0))",
                   "{{instance}}")], stack=True,
            desc=desc("Targets with at least one failed round in the step.", ROUNDS)), 12, 8),
        L.place(timeseries("Gateway RTT per device (scrape)", [
            target(f"vantage_uplink_gateway_rtt_seconds{{{FLEET}}}", "{{instance}} {{family}}")], unit="s",
            desc=SCRAPE), 12, 8),
        L.place(timeseries("Unshipped backlog per device (scrape)", [
            target(f"sum by ({by}) (vantage_remote_write_backlog_samples{{{FLEET}}})", "{{instance}}")],
            unit="short", desc=SCRAPE), 12, 8),
        L.place(timeseries("Stored samples dropped (scrape)", [
            target(f"sum by ({by}) (increase(vantage_store_dropped_samples_total{{{FLEET}}}[$__rate_interval]))",
                   "{{instance}}")], unit="short", bars=True, desc=SCRAPE), 12, 8),
    ]
    return dashboard("vantage-fleet", "Vantage / Fleet overview",
                     "Every Vantage device: reporting or not, failing targets, uplinks, shipping.",
                     variables("site"), p, LINKS)


def device():
    L = Layout()
    p = [
        L.place(stat("Last round", f"time() - max(timestamp({ROUND_SERIES}{{{DEV}}}))", unit="s",
                     desc=desc("Seconds since the device's latest round (within 5 minutes).", ROUNDS)), 4, 4),
        L.place(stat("Targets", f"count(count by (target) (last_over_time({ROUND_SERIES}{{{DEV}}}[5m])))",
                     desc=desc("Targets with a round in the last 5 minutes.", ROUNDS)), 4, 4),
        L.place(stat("Failing", f"sum({failing_targets(DEV, 'job, instance')})", thresholds=RED_AT(1),
                     desc=desc("Targets whose last round in the last 5 minutes failed.", ROUNDS)), 4, 4),
        L.place(stat("Scrape up", f"up{{{DEV}}}", thresholds=GREEN_AT_1, desc=SCRAPE), 4, 4),
        L.place(stat("Config reload OK (scrape)", f"vantage_config_last_reload_successful{{{DEV}}}",
                     thresholds=GREEN_AT_1, desc=SCRAPE), 4, 4),
        L.place(stat("Uptime (scrape)", f"time() - vantage_start_time_seconds{{{DEV}}}", unit="s", desc=SCRAPE),
                4, 4),
        L.place(table("Targets", [
            target(f"min by (target) (last_over_time({ROUND_SERIES}{{{DEV}}}[5m]))", instant=True, fmt="table",
                   ref="A"),
            target(f"max by (target) (avg_over_time(vantage_ping_loss_ratio{{{DEV}}}[5m]))", instant=True,
                   fmt="table", ref="B"),
            target(f"max by (target) (quantile_over_time(0.5, {RTT_AVG % DEV}[5m]))", instant=True, fmt="table",
                   ref="C"),
        ], desc=desc("One row per target: 1 if the last round of every probe succeeded, and the loss and median "
                     "RTT of the last 5 minutes' ping rounds.", ROUNDS),
            transformations=[{"id": "merge", "options": {}},
                             {"id": "organize", "options": {"excludeByName": {"Time": True, "__name__": True},
                                                            "renameByName": {"Value #A": "success", "Value #B": "loss",
                                                                             "Value #C": "median RTT (s)"}}}]), 24, 9),
        L.place(timeseries("Success per target", [
            target(f"avg_over_time({ROUND_SERIES}{{{DEV}}}[{W}])", "{{target}} {{probe}}")], unit="percentunit",
            desc=desc("Share of successful rounds in the step, per target and probe.", ROUNDS)), 6, 8),
        L.place(timeseries("Loss per target", [
            target(f"avg_over_time(vantage_ping_loss_ratio{{{DEV}}}[{W}])", "{{target}}")], unit="percentunit",
            desc=desc("Mean loss of the ping rounds in the step.", ROUNDS)), 6, 8),
        L.place(timeseries("Median RTT per target", [
            target(f"quantile_over_time(0.5, {RTT_AVG % DEV}[{W}])", "{{target}}")], unit="s",
            desc=desc("Median of the ping rounds' mean RTT in the step.", ROUNDS)), 6, 8),
        L.place(timeseries("Round duration per target", [
            target(f"max_over_time(vantage_probe_duration_seconds{{{DEV}}}[{W}])", "{{target}} {{probe}}")],
            unit="s", desc=desc("The longest round in the step, per target and probe: a round that nears its "
                                "interval makes the next one late.", ROUNDS)), 6, 8),
        L.place(timeseries("Uplink: gateway and upstream up (scrape)", [
            target(f"vantage_uplink_gateway_up{{{DEV}}}", "gateway {{family}}", ref="A"),
            target(f"vantage_uplink_upstream_up{{{DEV}}}", "upstream {{upstream}}", ref="B")], desc=SCRAPE), 12, 8),
        L.place(timeseries("Uplink RTT (scrape)", [
            target(f"vantage_uplink_gateway_rtt_seconds{{{DEV}}}", "gateway {{family}}", ref="A"),
            target(f"vantage_uplink_upstream_rtt_seconds{{{DEV}}}", "upstream {{upstream}}", ref="B")],
            unit="s", desc=SCRAPE), 12, 8),
        L.place(timeseries("Scheduler lag p99 (scrape)", [
            target(f"histogram_quantile(0.99, sum by (le, probe) (rate(vantage_scheduler_lag_seconds_bucket{{{DEV}}}[$__rate_interval])))",
                   "{{probe}}")], unit="s",
            desc=desc("How late probe rounds start: the device's own distortion of the figures.", SCRAPE)), 12, 8),
        L.place(timeseries("Skipped rounds (scrape)", [
            target(f"sum by (target, probe) (increase(vantage_scheduler_skipped_rounds_total{{{DEV}}}[$__rate_interval]))",
                   "{{target}} {{probe}}")], bars=True, desc=SCRAPE), 12, 8),
        L.place(timeseries("Store (scrape)", [
            target(f"vantage_store_bytes{{{DEV}}}", "bytes", ref="A"),
            target(f"vantage_store_samples{{{DEV}}}", "samples", ref="B")], unit="short", desc=SCRAPE), 8, 8),
        L.place(timeseries("Shipping backlog and failures (scrape)", [
            target(f"vantage_remote_write_backlog_samples{{{DEV}}}", "backlog {{endpoint}}", ref="A"),
            target(f"increase(vantage_remote_write_failures_total{{{DEV}}}[$__rate_interval])", "failures {{endpoint}}",
                   ref="B")], unit="short", desc=SCRAPE), 8, 8),
        L.place(timeseries("Since last shipped (scrape)", [
            target(f"time() - vantage_remote_write_last_success_timestamp_seconds{{{DEV}}}", "{{endpoint}}")],
            unit="s", desc=SCRAPE), 8, 8),
    ]
    return dashboard("vantage-device", "Vantage / Device",
                     "One device: its targets' rounds, its uplink, scheduler, store and shipping.",
                     variables("instance"), p, LINKS)


def trace_panels(L):
    """The target dashboard's trace panels: traces run every minute by default, so their
    steps are at least TRACE_STEP."""
    return [
        L.place(table("Path (per hop)", [
            target(f"max by (hop, address) (vantage_trace_hop_info{{{TGT}}})", instant=True, fmt="table", ref="A"),
            target(f"max by (hop) (quantile_over_time(0.5, vantage_trace_hop_rtt_seconds{{{TGT}}}[$__range]))",
                   instant=True, fmt="table", ref="B"),
            target(f"max by (hop) (avg_over_time(vantage_trace_hop_loss_ratio{{{TGT}}}[$__range]))", instant=True,
                   fmt="table", ref="C"),
        ], desc=desc("Every hop over the dashboard's time range: median RTT and mean loss of its traces. The "
                     "responder addresses (vantage_trace_hop_info) come from scrapes of /metrics only."),
            transformations=[{"id": "merge", "options": {}},
                             {"id": "organize", "options": {
                                 "excludeByName": {"Time": True, "__name__": True, "Value #A": True},
                                 "renameByName": {"Value #B": "median RTT (s)", "Value #C": "loss"}}},
                             {"id": "sortBy", "options": {"sort": [{"field": "hop"}]}}]), 12, 10),
        L.place(timeseries("Path changes", [
            target(f"max_over_time(vantage_trace_round_path_changed{{{TGT}}}[{W}])", "changed", ref="A"),
            target(f"max_over_time(vantage_trace_hops{{{TGT}}}[{W}])", "hops", ref="B"),
            target(f"max_over_time(vantage_trace_paths{{{TGT}}}[{W}])", "paths known", ref="C")], bars=True,
            desc=desc("1 in a step with a trace that followed a new path (ECMP flips between known branches do "
                      "not count), the hops to the destination and the distinct paths within path_window.",
                      ROUNDS), min_interval=TRACE_STEP), 12, 10),
        L.place(timeseries("Hop RTT", [
            target(f"quantile_over_time(0.5, vantage_trace_hop_rtt_seconds{{{TGT}}}[{W}])", "hop {{hop}}")],
            unit="s", desc=desc("Median RTT of each hop's traces in the step.", ROUNDS), min_interval=TRACE_STEP),
                12, 8),
        L.place(timeseries("Hop loss", [
            target(f"avg_over_time(vantage_trace_hop_loss_ratio{{{TGT}}}[{W}])", "hop {{hop}}")],
            unit="percentunit", desc=desc("Mean loss of each hop's traces in the step.", ROUNDS),
            min_interval=TRACE_STEP), 12, 8),
    ]


def tcp_http_panels(L):
    """The target dashboard's TCP and HTTP row: TCP runs every 10 s and HTTP every 30 s by
    default, so the HTTP panels' steps are at least HTTP_STEP."""
    connect = 'vantage_tcp_round_connect_seconds{%s, stat="%s"}'
    return [
        L.place(row("TCP and HTTP"), 24, 1),
        L.place(stat("HTTP status (last round)", f"last_over_time(vantage_http_status_code{{{TGT}}}[5m])",
                     thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 300},
                                 {"color": "red", "value": 400}],
                     desc=desc("Status of the last response of the last HTTP round within 5 minutes (after the "
                               "redirects followed). No data: no HTTP probe, or no response.", ROUNDS)), 6, 4),
        L.place(stat("TCP connect (5m median)", f"quantile_over_time(0.5, {connect % (TGT, 'avg')}[5m])", unit="s",
                     desc=desc("Median of the last 5 minutes' TCP rounds' mean connect time.", ROUNDS)), 6, 4),
        L.place(stat("TCP loss (5m)", f"avg_over_time(vantage_tcp_loss_ratio{{{TGT}}}[5m])", unit="percentunit",
                     thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 0.05}],
                     desc=desc("Mean share of connection attempts that did not connect in time, over the last 5 "
                               "minutes' TCP rounds.", ROUNDS)), 6, 4),
        L.place(stat("Certificate expires in", f"min(last_over_time({CERT}{{{TGT}}}[1h])) - time()", unit="s",
                     thresholds=CERT_STEPS,
                     desc=desc("Time left until the earliest expiry of the certificate chain the server sent, as "
                               "the last TCP (tls = true) or HTTPS round within an hour saw it; VantageCertExpiringSoon "
                               "fires below 14 days.", ROUNDS)), 6, 4),
        L.place(timeseries("TCP connect time", [
            target(f"min_over_time({connect % (TGT, 'min')}[{W}])", "min", ref="A"),
            target(f"quantile_over_time(0.5, {connect % (TGT, 'avg')}[{W}])", "median", ref="B"),
            target(f"max_over_time({connect % (TGT, 'max')}[{W}])", "max", ref="C"),
            target(f"max_over_time(vantage_tls_handshake_seconds{{{TGT}}}[{W}])", "TLS handshake (slowest)",
                   ref="D")],
            unit="s", desc=desc("SYN to established: the fastest attempt, the median of the rounds' means and the "
                                "slowest attempt in the step; and the slowest TLS handshake (tls = true).",
                                ROUNDS)), 12, 8),
        L.place(timeseries("TCP connection loss", [
            target(f"avg_over_time(vantage_tcp_loss_ratio{{{TGT}}}[{W}])", "mean", ref="A"),
            target(f"max_over_time(vantage_tcp_loss_ratio{{{TGT}}}[{W}])", "worst round", ref="B")],
            unit="percentunit", desc=desc("Share of connection attempts that did not connect within the timeout "
                                          "(refused, filtered or slow), per step.", ROUNDS)), 12, 8),
        L.place(timeseries("HTTP phases", [
            target(f"avg_over_time(vantage_http_phase_seconds{{{TGT}}}[{W}])", "{{phase}}")], unit="s", stack=True,
            desc=desc("Mean time of each phase of the HTTP rounds in the step, stacked to the round's total: "
                      "resolve, connect, TLS, processing (request sent to the first response byte), transfer.",
                      ROUNDS), min_interval=HTTP_STEP), 12, 8),
        L.place(timeseries("HTTP status and redirects", [
            target(f"max_over_time(vantage_http_status_code{{{TGT}}}[{W}])", "status (highest)", ref="A"),
            target(f"min_over_time(vantage_http_status_code{{{TGT}}}[{W}])", "status (lowest)", ref="B"),
            target(f"max_over_time(vantage_http_redirects{{{TGT}}}[{W}])", "redirects (most)", ref="C")],
            desc=desc("The highest and lowest status of the step's last responses (they differ in a step "
                      "where the status changed, as VantageHttpStatusChanged reads it), and the most redirects a "
                      "round followed.", ROUNDS), min_interval=HTTP_STEP), 12, 8),
        L.place(timeseries("HTTP body size", [
            target(f"min_over_time(vantage_http_content_length_bytes{{{TGT}}}[{W}])", "smallest", ref="A"),
            target(f"max_over_time(vantage_http_content_length_bytes{{{TGT}}}[{W}])", "largest", ref="B")],
            unit="bytes", desc=desc("Bytes of the last response's body read by the HTTP rounds in the step (up "
                                    "to max_body).", ROUNDS), min_interval=HTTP_STEP), 12, 8),
        L.place(timeseries("Certificate time left", [
            target(f"min_over_time({CERT}{{{TGT}}}[{W}]) - time()", "{{probe}}")], unit="s",
            desc=desc("Time left until the earliest expiry of the certificate chain the server sent, per step and "
                      "probe (TCP with tls = true, HTTPS): a renewed certificate shows as a jump up.", ROUNDS), min_interval=HTTP_STEP), 12, 8),
    ]


def target_dash():
    L = Layout()
    rtt = RTT_AVG % TGT
    p = [
        L.place(stat("Success (last round)", f"last_over_time({ROUND_SERIES}{{{TGT}}}[5m])", legend="{{probe}}",
                     thresholds=GREEN_AT_1, desc=desc("Each probe's last round within 5 minutes.", ROUNDS)), 6, 4),
        L.place(stat("Loss (5m)", f"avg_over_time(vantage_ping_loss_ratio{{{TGT}}}[5m])", unit="percentunit",
                     thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 0.01},
                                 {"color": "red", "value": 0.05}],
                     desc=desc("Mean loss of the last 5 minutes' ping rounds.", ROUNDS)), 6, 4),
        L.place(stat("RTT p95 (5m)", f"quantile_over_time(0.95, {rtt}[5m])", unit="s",
                     desc=desc("95th percentile of the last 5 minutes' round mean RTTs.", ROUNDS)), 6, 4),
        L.place(stat("Path changed (24h)", f"max_over_time(vantage_trace_round_path_changed{{{TGT}}}[24h])",
                     thresholds=RED_AT(1), mappings=[{"type": "value", "options": {
                         "0": {"text": "stable", "index": 0}, "1": {"text": "changed", "index": 1}}}],
                     desc=desc("Whether a trace in the last day followed a path none of the paths seen before "
                               "matches (ECMP flips between known branches do not count).", ROUNDS)), 6, 4),
        L.place(timeseries("RTT", [
            target(f"min_over_time(vantage_ping_round_rtt_seconds{{{TGT}, stat=\"min\"}}[{W}])", "min", ref="A"),
            target(f"quantile_over_time(0.5, {rtt}[{W}])", "median", ref="B"),
            target(f"quantile_over_time(0.95, {rtt}[{W}])", "p95", ref="C"),
            target(f"max_over_time(vantage_ping_round_rtt_seconds{{{TGT}, stat=\"max\"}}[{W}])", "max", ref="D"),
            target(f"quantile_over_time(0.5, quantile_over_time(0.5, {rtt}[5m])[1d:5m])", "baseline (1d median)",
                   ref="E")],
            unit="s", desc=desc("The fastest and slowest reply, and the median and 95th percentile of the rounds' "
                                "mean RTT, per step; the baseline is the median of the day's 5-minute medians, "
                                "as VantageTargetLatencyHigh uses it.", ROUNDS)), 24, 9),
        L.place(timeseries("Loss", [
            target(f"avg_over_time(vantage_ping_loss_ratio{{{TGT}}}[{W}])", "mean", ref="A"),
            target(f"max_over_time(vantage_ping_loss_ratio{{{TGT}}}[{W}])", "worst round", ref="B")],
            unit="percentunit", desc=desc("Share of echo requests without a reply, per step.", ROUNDS)), 12, 8),
        L.place(timeseries("Ping replies", [
            target(f"max_over_time(vantage_ping_round_packets_sent{{{TGT}}}[{W}])", "sent per round", ref="A"),
            target(f"min_over_time(vantage_ping_round_packets_received{{{TGT}}}[{W}])", "received (fewest)", ref="B"),
            target(f"max_over_time(vantage_ping_round_duplicates{{{TGT}}}[{W}])", "duplicates (most)", ref="C")],
            desc=desc("Echo requests per round, the fewest replies and the most duplicates of a round in the "
                      "step.", ROUNDS)), 12, 8),
        L.place(timeseries("DNS lookup time", [
            target(f"quantile_over_time(0.95, vantage_dns_round_lookup_seconds{{{TGT}}}[{W}])", "p95", ref="A"),
            target(f"max_over_time(vantage_dns_round_lookup_seconds{{{TGT}}}[{W}])", "max", ref="B"),
            target(f"avg_over_time(vantage_dns_phase_seconds{{{TGT}}}[{W}])", "{{phase}}", ref="C")], unit="s",
            desc=desc("Lookup time of the rounds with an answer (p95 and slowest), and the mean time of each "
                      "phase.", ROUNDS)), 12, 8),
        L.place(timeseries("DNS rcode and answers", [
            target(f"max_over_time(vantage_dns_rcode{{{TGT}}}[{W}]) == 1", "rcode {{rcode}}", ref="A"),
            target(f"min_over_time(vantage_dns_answer_records{{{TGT}}}[{W}])", "answer records (fewest)", ref="B"),
            target(f"max_over_time(vantage_dns_round_validation_failed{{{TGT}}}[{W}])", "validation failed", ref="C"),
            target(f"max_over_time(vantage_dns_round_truncated_retry{{{TGT}}}[{W}])", "retried over TCP", ref="D"),
            target(f"max_over_time(vantage_dns_round_stray_datagrams{{{TGT}}}[{W}])", "stray datagrams (most)",
                   ref="E")],
            desc=desc("Every rcode seen in the step, the smallest answer, and whether a round failed its answer "
                      "checks, was truncated and retried over TCP, or saw stray datagrams.", ROUNDS)), 12, 8),
    ] + trace_panels(L) + tcp_http_panels(L)
    return dashboard("vantage-target", "Vantage / Target",
                     "One target seen from one device: RTT, loss, DNS, per-hop path and path changes, TCP connect "
                     "and HTTP phases, status and certificate expiry, all from its rounds.", variables("instance", "target"), p, LINKS)


def main():
    out = {"fleet.json": fleet(), "device.json": device(), "target.json": target_dash()}
    check = "--check" in sys.argv
    bad = 0
    for name, d in out.items():
        path = os.path.join(HERE, "dashboards", name)
        text = json.dumps(d, indent=2, sort_keys=True) + "\n"
        if check:
            if not os.path.exists(path) or open(path).read() != text:
                print(f"{path} differs from generate.py's output; run monitoring/grafana/generate.py")
                bad = 1
        else:
            with open(path, "w") as f:
                f.write(text)
    return bad


if __name__ == "__main__":
    sys.exit(main())
