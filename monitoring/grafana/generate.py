#!/usr/bin/env python3
"""Writes the Vantage Grafana dashboards (dashboards/*.json) from the panel lists below.

The JSON files are committed so Grafana can provision them by file; this script is their
source. `scripts/tests.d/40-fleet-monitoring.sh` checks that the committed files match it and
runs every panel's query against a real Prometheus.

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


def var_query(name, label, definition, multi=False, include_all=False):
    v = {"name": name, "label": label, "type": "query", "datasource": DS,
         "definition": definition, "query": {"query": definition, "refId": name},
         "refresh": 2, "sort": 1, "multi": multi, "includeAll": include_all,
         "current": {}, "hide": 0}
    if include_all:
        v["allValue"] = ".*"
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


def stat(title, expr, unit="none", thresholds=None, desc=""):
    steps = thresholds or [{"color": "green", "value": None}]
    return {"type": "stat", "title": title, "description": desc, "datasource": DS,
            "targets": [target(expr, instant=True)],
            "fieldConfig": {"defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}},
                            "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "background", "graphMode": "none", "textMode": "auto"}}


def timeseries(title, targets, unit="none", desc="", stack=False, bars=False):
    custom = {"drawStyle": "bars" if bars else "line", "lineWidth": 1, "fillOpacity": 10,
              "showPoints": "never", "spanNulls": False}
    if stack:
        custom["stacking"] = {"mode": "normal", "group": "A"}
    return {"type": "timeseries", "title": title, "description": desc, "datasource": DS,
            "targets": targets,
            "fieldConfig": {"defaults": {"unit": unit, "custom": custom}, "overrides": []},
            "options": {"legend": {"displayMode": "table", "placement": "bottom",
                                   "calcs": ["mean", "max", "lastNotNull"]},
                        "tooltip": {"mode": "multi", "sort": "desc"}}}


def table(title, targets, desc="", transformations=None, unit="none"):
    return {"type": "table", "title": title, "description": desc, "datasource": DS,
            "targets": targets, "transformations": transformations or [],
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"showHeader": True, "cellHeight": "sm"}}


def heatmap(title, expr, desc=""):
    return {"type": "heatmap", "title": title, "description": desc, "datasource": DS,
            "targets": [target(expr, legend="{{le}}", fmt="heatmap")],
            "options": {"calculate": False, "yAxis": {"unit": "s"},
                        "cellGap": 1, "color": {"mode": "scheme", "scheme": "Spectral", "steps": 64},
                        "rowsFrame": {"layout": "auto"}, "tooltip": {"show": True, "yHistogram": True}},
            "fieldConfig": {"defaults": {}, "overrides": []}}


def dashboard(uid, title, desc, variables, panels, links):
    return {"uid": uid, "title": title, "description": desc, "tags": ["vantage"],
            "timezone": "", "editable": True, "graphTooltip": 1, "refresh": "30s",
            "schemaVersion": 39, "version": 1, "time": {"from": "now-6h", "to": "now"},
            "templating": {"list": variables}, "annotations": {"list": []},
            "links": links, "panels": panels}


RED_AT = lambda v: [{"color": "green", "value": None}, {"color": "red", "value": v}]
LINKS = [{"type": "dashboards", "tags": ["vantage"], "asDropdown": True, "title": "Vantage",
          "includeVars": True, "keepTime": True}]
SEL = 'job=~"$job"'
DEV = 'job=~"$job", instance="$instance"'
TGT = 'job=~"$job", instance="$instance", target="$target"'


def fleet():
    L = Layout()
    p = [
        L.place(stat("Devices up", f"count(up{{{SEL}}} == 1) or vector(0)"), 4, 4),
        L.place(stat("Devices down", f"count(up{{{SEL}}} == 0) or vector(0)", thresholds=RED_AT(1)), 4, 4),
        L.place(stat("Targets failing", f"sum(vantage_device:targets_failing:count{{{SEL}}}) or vector(0)",
                     thresholds=RED_AT(1)), 4, 4),
        L.place(stat("Uplinks down", f"count(vantage_uplink_gateway_up{{{SEL}}} == 0) or vector(0)",
                     thresholds=RED_AT(1)), 4, 4),
        L.place(stat("Unshipped samples", f"sum(vantage_remote_write_backlog_samples{{{SEL}}}) or vector(0)",
                     unit="short"), 4, 4),
        L.place(stat("Firing alerts", 'count(ALERTS{alertname=~"Vantage.*", alertstate="firing"}) or vector(0)',
                     thresholds=RED_AT(1)), 4, 4),
        L.place(table("Devices", [
            target(f"up{{{SEL}}}", instant=True, fmt="table", ref="A"),
            target(f"vantage_build_info{{{SEL}}}", instant=True, fmt="table", ref="B"),
            target(f"vantage_device:targets:count{{{SEL}}}", instant=True, fmt="table", ref="C"),
            target(f"vantage_device:targets_failing:count{{{SEL}}}", instant=True, fmt="table", ref="D"),
            target(f"time() - vantage_start_time_seconds{{{SEL}}}", instant=True, fmt="table", ref="E"),
        ], desc="One row per device: scrape state, version, targets and failing targets, uptime.",
            transformations=[{"id": "merge", "options": {}},
                             {"id": "organize", "options": {"excludeByName": {"Time": True, "__name__": True},
                                                            "renameByName": {"Value #A": "up", "Value #C": "targets",
                                                                             "Value #D": "failing",
                                                                             "Value #E": "uptime (s)"}}}]), 24, 8),
        L.place(table("Worst targets by loss (5m)", [
            target(f"topk(10, vantage_target:ping_loss:ratio_rate5m{{{SEL}}} > 0)", instant=True, fmt="table")],
            unit="percentunit"), 12, 8),
        L.place(table("Worst targets by RTT p95 (5m)", [
            target(f"topk(10, vantage_target:ping_rtt_seconds:p95_5m{{{SEL}}})", instant=True, fmt="table")],
            unit="s"), 12, 8),
        L.place(timeseries("Failing targets per device", [
            target(f"vantage_device:targets_failing:count{{{SEL}}}", "{{instance}}")], stack=True), 12, 8),
        L.place(timeseries("Gateway RTT per device", [
            target(f"vantage_uplink_gateway_rtt_seconds{{{SEL}}}", "{{instance}} {{family}}")], unit="s"), 12, 8),
        L.place(timeseries("Unshipped backlog per device", [
            target(f"sum by (instance) (vantage_remote_write_backlog_samples{{{SEL}}})", "{{instance}}")],
            unit="short"), 12, 8),
        L.place(timeseries("Stored samples dropped", [
            target(f"sum by (instance) (increase(vantage_store_dropped_samples_total{{{SEL}}}[$__rate_interval]))",
                   "{{instance}}")], unit="short", bars=True), 12, 8),
    ]
    variables = [var_datasource(),
                 var_query("job", "Job", "label_values(vantage_build_info, job)", multi=True, include_all=True),
                 var_query("site", "Site", 'label_values(vantage_build_info{job=~"$job"}, site)', multi=True,
                           include_all=True)]
    return dashboard("vantage-fleet", "Vantage / Fleet overview",
                     "Every Vantage device: up or down, failing targets, uplinks, shipping.", variables, p, LINKS)


def device():
    L = Layout()
    p = [
        L.place(stat("Scrape up", f"up{{{DEV}}}", thresholds=[{"color": "red", "value": None},
                                                               {"color": "green", "value": 1}]), 4, 4),
        L.place(stat("Uptime", f"time() - vantage_start_time_seconds{{{DEV}}}", unit="s"), 4, 4),
        L.place(stat("Targets", f"vantage_targets{{{DEV}}}"), 4, 4),
        L.place(stat("Failing", f"vantage_device:targets_failing:count{{{DEV}}} or vector(0)",
                     thresholds=RED_AT(1)), 4, 4),
        L.place(stat("Config reload OK", f"vantage_config_last_reload_successful{{{DEV}}}",
                     thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}]), 4, 4),
        L.place(stat("Provisioning OK", f"vantage_provisioning_last_fetch_successful{{{DEV}}}",
                     thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}]), 4, 4),
        L.place(timeseries("Uplink: gateway and upstream up", [
            target(f"vantage_uplink_gateway_up{{{DEV}}}", "gateway {{family}}", ref="A"),
            target(f"vantage_uplink_upstream_up{{{DEV}}}", "upstream {{upstream}}", ref="B")]), 12, 8),
        L.place(timeseries("Uplink RTT", [
            target(f"vantage_uplink_gateway_rtt_seconds{{{DEV}}}", "gateway {{family}}", ref="A"),
            target(f"vantage_uplink_upstream_rtt_seconds{{{DEV}}}", "upstream {{upstream}}", ref="B")],
            unit="s"), 12, 8),
        L.place(table("Targets", [
            target(f"vantage_probe_success{{{DEV}}}", instant=True, fmt="table", ref="A"),
            target(f"vantage_target:ping_loss:ratio_rate5m{{{DEV}}}", instant=True, fmt="table", ref="B"),
            target(f"vantage_target:ping_rtt_seconds:mean5m{{{DEV}}}", instant=True, fmt="table", ref="C"),
        ], desc="Last round's success, 5-minute loss and mean RTT of every target.",
            transformations=[{"id": "merge", "options": {}},
                             {"id": "organize", "options": {"excludeByName": {"Time": True, "__name__": True},
                                                            "renameByName": {"Value #A": "success", "Value #B": "loss",
                                                                             "Value #C": "mean RTT (s)"}}}]), 24, 9),
        L.place(timeseries("Loss per target (5m)", [
            target(f"vantage_target:ping_loss:ratio_rate5m{{{DEV}}}", "{{target}}")], unit="percentunit"), 12, 8),
        L.place(timeseries("Mean RTT per target (5m)", [
            target(f"vantage_target:ping_rtt_seconds:mean5m{{{DEV}}}", "{{target}}")], unit="s"), 12, 8),
        L.place(timeseries("Scheduler lag p99", [
            target(f"histogram_quantile(0.99, sum by (le, probe) (rate(vantage_scheduler_lag_seconds_bucket{{{DEV}}}[$__rate_interval])))",
                   "{{probe}}")], unit="s",
            desc="How late probe rounds start: the device's own distortion of the figures."), 12, 8),
        L.place(timeseries("Skipped rounds", [
            target(f"sum by (target, probe) (increase(vantage_scheduler_skipped_rounds_total{{{DEV}}}[$__rate_interval]))",
                   "{{target}} {{probe}}")], bars=True), 12, 8),
        L.place(timeseries("Store", [
            target(f"vantage_store_bytes{{{DEV}}}", "bytes", ref="A"),
            target(f"vantage_store_samples{{{DEV}}}", "samples", ref="B")], unit="short"), 8, 8),
        L.place(timeseries("Shipping backlog and failures", [
            target(f"vantage_remote_write_backlog_samples{{{DEV}}}", "backlog {{endpoint}}", ref="A"),
            target(f"increase(vantage_remote_write_failures_total{{{DEV}}}[$__rate_interval])", "failures {{endpoint}}",
                   ref="B")], unit="short"), 8, 8),
        L.place(timeseries("Since last shipped", [
            target(f"time() - vantage_remote_write_last_success_timestamp_seconds{{{DEV}}}", "{{endpoint}}")],
            unit="s"), 8, 8),
    ]
    variables = [var_datasource(),
                 var_query("job", "Job", "label_values(vantage_build_info, job)", multi=True, include_all=True),
                 var_query("instance", "Device", 'label_values(vantage_build_info{job=~"$job"}, instance)')]
    return dashboard("vantage-device", "Vantage / Device",
                     "One device: its uplink, its targets, its scheduler, store and shipping.", variables, p, LINKS)


def target_dash():
    L = Layout()
    p = [
        L.place(stat("Success (last round)", f"vantage_probe_success{{{TGT}}}",
                     thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}]), 6, 4),
        L.place(stat("Loss (5m)", f"vantage_target:ping_loss:ratio_rate5m{{{TGT}}}", unit="percentunit",
                     thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 0.01},
                                 {"color": "red", "value": 0.05}]), 6, 4),
        L.place(stat("RTT p95 (5m)", f"vantage_target:ping_rtt_seconds:p95_5m{{{TGT}}}", unit="s"), 6, 4),
        L.place(stat("Path changes (24h)", f"increase(vantage_trace_path_changes_total{{{TGT}}}[24h])",
                     thresholds=RED_AT(1)), 6, 4),
        L.place(heatmap("RTT distribution", f"sum by (le) (increase(vantage_ping_rtt_seconds_bucket{{{TGT}}}[$__rate_interval]))",
                        desc="Every echo reply, bucketed: a second mode or a widening band shows before the mean moves."),
                24, 10),
        L.place(timeseries("RTT", [
            target(f"vantage_target:ping_rtt_seconds:p50_5m{{{TGT}}}", "p50", ref="A"),
            target(f"vantage_target:ping_rtt_seconds:p95_5m{{{TGT}}}", "p95", ref="B"),
            target(f"vantage_target:ping_rtt_seconds:mean5m{{{TGT}}}", "mean", ref="C"),
            target(f"vantage_target:ping_rtt_seconds:baseline1d{{{TGT}}}", "baseline (1d median)", ref="D")],
            unit="s"), 12, 8),
        L.place(timeseries("Loss", [
            target(f"vantage_target:ping_loss:ratio_rate5m{{{TGT}}}", "5m", ref="A"),
            target(f"vantage_ping_loss_ratio{{{TGT}}}", "last round", ref="B")], unit="percentunit"), 12, 8),
        L.place(timeseries("DNS lookup time", [
            target(f"vantage_target:dns_lookup_seconds:p95_5m{{{TGT}}}", "p95", ref="A"),
            target(f"vantage_dns_phase_seconds{{{TGT}}}", "{{phase}}", ref="B")], unit="s"), 12, 8),
        L.place(timeseries("DNS rcode and answers", [
            target(f"vantage_dns_rcode{{{TGT}}} == 1", "rcode {{rcode}}", ref="A"),
            target(f"vantage_dns_answer_records{{{TGT}}}", "answer records", ref="B"),
            target(f"increase(vantage_dns_validation_failures_total{{{TGT}}}[$__rate_interval])",
                   "validation failures", ref="C")]), 12, 8),
        L.place(table("Path (per hop)", [
            target(f"vantage_trace_hop_info{{{TGT}}}", instant=True, fmt="table", ref="A"),
            target(f"vantage_trace_hop_rtt_seconds{{{TGT}}}", instant=True, fmt="table", ref="B"),
            target(f"vantage_trace_hop_loss_ratio{{{TGT}}}", instant=True, fmt="table", ref="C"),
        ], desc="The last trace: responder, RTT and loss of every hop.",
            transformations=[{"id": "merge", "options": {}},
                             {"id": "organize", "options": {
                                 "excludeByName": {"Time": True, "__name__": True, "Value #A": True},
                                 "renameByName": {"Value #B": "RTT (s)", "Value #C": "loss"}}},
                             {"id": "sortBy", "options": {"sort": [{"field": "hop"}]}}]), 12, 10),
        L.place(timeseries("Path changes", [
            target(f"increase(vantage_trace_path_changes_total{{{TGT}}}[$__rate_interval])", "changes", ref="A"),
            target(f"vantage_trace_hops{{{TGT}}}", "hops", ref="B")], bars=True,
            desc="Counted only when the set of paths seen changes, not on ECMP flips between known branches."),
                12, 10),
    ]
    variables = [var_datasource(),
                 var_query("job", "Job", "label_values(vantage_build_info, job)", multi=True, include_all=True),
                 var_query("instance", "Device", 'label_values(vantage_build_info{job=~"$job"}, instance)'),
                 var_query("target", "Target", 'label_values(vantage_probe_success{job=~"$job", instance="$instance"}, target)')]
    return dashboard("vantage-target", "Vantage / Target",
                     "One target seen from one device: RTT distribution, loss, DNS, per-hop path and path changes.",
                     variables, p, LINKS)


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
