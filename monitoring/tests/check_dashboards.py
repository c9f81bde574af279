#!/usr/bin/env python3
"""Runs every PromQL expression of the Grafana dashboards against a Prometheus.

    check_dashboards.py --lint-only DASHBOARD.json...
    check_dashboards.py PROMETHEUS_URL DASHBOARD.json... [--var name=value ...]
                        [--require-data "UID:PANEL TITLE" ...]
                        [--save FILE] [--compare FILE [--min-coverage 0.95] [--compare-skip REGEX]]
                        [--start UNIX --end UNIX --step SECONDS] [--set __rate_interval=5s ...]
                        [--expect "UID:PANEL TITLE:REFID>=VALUE" ...]

Grafana's variables are replaced the way Grafana would ($__rate_interval, $__interval,
$__range, and the dashboard's own variables from --var, else ".*"). Each panel query runs as
a range query over the last 5 minutes with a 15 s step, or over --start..--end with --step
(instant panels as instant queries at the end); --set overrides Grafana's own variables. Any
error from Prometheus fails the check. Template variable definitions (label_values(...)) are checked
through their selector. Panels named with --require-data must also return series.

Before any query the dashboards are read for what the data model forbids: a panel query
that reads a recording rule (rules cannot see backfilled rounds), a stat with `or vector(0)`
(a made-up 0 for missing data), and a panel reading series that only a scrape of /metrics
has (anything but the per-round gauges) without saying "scrape" in its title or
description (--lint-only: only this, without a Prometheus). A query that reads only
per-round gauges is a probe-result query.

A value of NaN (a round without replies has no RTT) counts as no data. --save writes every
query's series count and the share of steps with data (JSON); --compare reads such a file
from another Prometheus (the scrape setup) and fails every probe-result query that had data
there and has none here (the push-only setup), or, with --min-coverage, has data at a share
of the steps more than 1 - min-coverage below the other's; queries whose "UID:TITLE:REFID"
matches a --compare-skip regex are left out. --expect requires a query to have
data and every value of it to be >= (or <=) VALUE. Prints one line per check, then "N passed, N failed".
"""
import json
import math
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

# The per-round gauges (the data model's canonical record of a round): in /metrics, in /probe
# and in remote_write alike.
ROUND_GAUGES = {
    "vantage_probe_success", "vantage_probe_duration_seconds", "vantage_ping_round_rtt_seconds",
    "vantage_ping_loss_ratio", "vantage_ping_round_packets_sent", "vantage_ping_round_packets_received",
    "vantage_ping_round_duplicates", "vantage_dns_phase_seconds", "vantage_dns_rcode",
    "vantage_dns_answer_records", "vantage_dns_authority_records", "vantage_dns_additional_records",
    "vantage_dns_round_lookup_seconds", "vantage_dns_round_validation_failed",
    "vantage_dns_round_truncated_retry", "vantage_dns_round_stray_datagrams", "vantage_trace_hops",
    "vantage_trace_hop_rtt_seconds", "vantage_trace_hop_loss_ratio", "vantage_trace_path_hash",
    "vantage_trace_paths", "vantage_trace_flows_reached_ratio", "vantage_trace_round_path_changed",
    "vantage_tcp_round_connect_seconds", "vantage_tcp_round_attempts_sent", "vantage_tcp_round_attempts_connected",
    "vantage_tcp_loss_ratio", "vantage_tls_handshake_seconds", "vantage_tls_cert_not_after_timestamp_seconds",
    "vantage_tcp_round_expect_matched", "vantage_http_status_code", "vantage_http_phase_seconds",
    "vantage_http_content_length_bytes", "vantage_http_redirects",
}
# Prometheus' own series about the rules it evaluates: neither scraped from a device nor pushed.
PROMETHEUS_OWN = {"ALERTS", "ALERTS_FOR_STATE"}

BUILTIN = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m", "__interval_ms": "15000",
           "__range_s": "300"}


def substitute(expr, variables, builtin=None):
    builtin = builtin or BUILTIN

    def repl(m):
        name = m.group(1) or m.group(2)
        if name in builtin:
            return builtin[name]
        return variables.get(name, ".*")
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", repl, expr)


def metric_names(expr):
    """Metric names an expression selects (every dashboard selector has braces)."""
    return set(re.findall(r"([a-zA-Z_:][\w:]*)\s*\{", expr)) | set(re.findall(r"\bvantage_[\w:]+", expr))


def is_probe_result(expr):
    names = metric_names(expr)
    return bool(names) and names <= ROUND_GAUGES


def lint(dash):
    """What the data model forbids in a panel; yields (where, problem)."""
    def walk(panels):
        for p in panels:
            yield from walk(p.get("panels", []))
            where = f"{dash.get('uid')}:{p.get('title')}"
            said = (p.get("title", "") + " " + p.get("description", "")).lower()
            for t in p.get("targets", []):
                expr = t.get("expr", "")
                names = metric_names(expr)
                if any(":" in n for n in names):
                    yield where, f"reads a recording rule, which never sees backfilled rounds: {expr}"
                if p.get("type") == "stat" and re.search(r"\bvector\s*\(\s*0", expr):
                    yield where, f"stat with vector(0) shows a made-up 0 for missing data: {expr}"
                if names - ROUND_GAUGES - PROMETHEUS_OWN and "scrape" not in said:
                    yield where, ("reads series only a scrape has (" + ", ".join(sorted(names - ROUND_GAUGES))
                                  + ") but its title and description do not say so")
    yield from walk(dash.get("panels", []))


def queries(dash):
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v.get("query"), dict) else v.get("query", "")
            m = re.match(r"^\s*label_values\((.*),\s*(\w+)\)\s*$", q)
            if m:
                yield f"variable {v['name']}", m.group(1), True, None, None
            else:
                yield f"variable {v['name']}", q, True, None, None
    def walk(panels):
        for p in panels:
            yield from walk(p.get("panels", []))
            for t in p.get("targets", []):
                if t.get("expr"):
                    yield (f"panel {p.get('id')} {p.get('title')!r} {t.get('refId')}", t["expr"],
                           bool(t.get("instant")), f"{dash.get('uid')}:{p.get('title')}", t.get("refId"))
    yield from walk(dash.get("panels", []))


def run(prom, expr, instant, window):
    """(series with data, share of the window's steps where one has a value, the values), or
    (None, error, None)."""
    start, end, step = window
    if instant:
        params = {"query": expr, "time": f"{end:.3f}"}
        url = f"{prom}/api/v1/query?" + urllib.parse.urlencode(params)
    else:
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": str(step)}
        url = f"{prom}/api/v1/query_range?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
    except urllib.error.HTTPError as e:
        body = json.load(e)
    if body.get("status") != "success":
        return None, f"{body.get('errorType')}: {body.get('error')}", None
    points = [[(v[0], float(v[1])) for v in (r["values"] if "values" in r else [r["value"]])
               if not math.isnan(float(v[1]))] for r in body["data"]["result"]]
    points = [p for p in points if p]
    steps = 1 if instant else int((end - start) // step) + 1
    seen = {t for p in points for t, _ in p}
    return len(points), len(seen) / steps, [v for p in points for _, v in p]


def parse(argv):
    now = time.time()
    opts = {"prom": None, "files": [], "vars": {}, "required": set(), "save": None, "compare": None,
            "builtin": dict(BUILTIN), "start": now - 300, "end": now, "step": 15.0, "min_coverage": None,
            "expect": [], "compare_skip": [], "lint_only": False}
    args = iter(argv)
    for a in args:
        if a == "--lint-only":
            opts["lint_only"] = True
        elif a == "--require-data":
            opts["required"].add(next(args))
        elif a == "--compare-skip":
            opts["compare_skip"].append(re.compile(next(args)))
        elif a == "--expect":
            key, op, value = re.fullmatch(r"(.+?)(>=|<=)(.+)", next(args)).groups()
            opts["expect"].append((key, op, float(value)))
        elif a in ("--var", "--set"):
            k, _, v = next(args).partition("=")
            opts["vars" if a == "--var" else "builtin"][k] = v
        elif a in ("--save", "--compare"):
            opts[a[2:]] = next(args)
        elif a in ("--start", "--end", "--step", "--min-coverage"):
            opts[a[2:].replace("-", "_")] = float(next(args))
        elif opts["prom"] is None:
            opts["prom"] = a.rstrip("/")
        else:
            opts["files"].append(a)
    if opts["lint_only"] and opts["prom"]:
        opts["files"].insert(0, opts["prom"])
    return opts


def compare(results, opts):
    """Probe-result queries with series in the other setup must have series here (at
    min_coverage of the steps, if given)."""
    passed = failed = 0
    path, min_coverage = opts["compare"], opts["min_coverage"]
    other = json.load(open(path))
    for key, o in sorted(other.items()):
        if not o["probe_result"] or o["series"] == 0 or any(r.search(key) for r in opts["compare_skip"]):
            continue
        here = results.get(key, {"series": 0, "coverage": 0.0})
        n, cov = here["series"], here["coverage"]
        if n > 0 and (min_coverage is None or cov >= o["coverage"] - (1 - min_coverage)):
            passed += 1
            print(f"ok   --compare {key}: {o['series']} series there, {n} here, data at {cov:.0%} of the steps")
        else:
            failed += 1
            print(f"FAIL --compare {key}: {o['series']} series in {path} (data at {o['coverage']:.0%} of the "
                  f"steps), {n} here (data at {cov:.0%})\n     {o['expr']}")
    return passed, failed


class Tally:
    def __init__(self):
        self.passed = self.failed = 0

    def ok(self, line):
        self.passed += 1
        print(f"ok   {line}")

    def bad(self, line):
        self.failed += 1
        print(f"FAIL {line}")


def check_file(f, opts, tally, series, results):
    """Lints one dashboard, runs its queries, and notes their results by "UID:TITLE:REFID"."""
    dash = json.load(open(f))
    problems = list(lint(dash))
    for where, problem in problems:
        tally.bad(f"{f}: {where}: {problem}")
    if not problems:
        tally.ok(f"{f}: no recording rules, no vector(0) stats, scrape-only panels say so")
    if opts["lint_only"]:
        return
    window = (opts["start"], opts["end"], opts["step"])
    for where, expr, instant, key, ref in queries(dash):
        q = substitute(expr, opts["vars"], opts["builtin"])
        n, cov, values = run(opts["prom"], q, instant, window)
        if n is None:
            tally.bad(f"{f}: {where}: {q}\n     {cov}")
            continue
        tally.ok(f"{f}: {where}: {n} series, data at {cov:.0%} of the steps")
        if key:
            series[key] = series.get(key, 0) + n
            results[f"{key}:{ref}"] = {"series": n, "coverage": cov, "probe_result": is_probe_result(expr),
                                       "expr": q, "values": values}


def check_required(opts, tally, series, results):
    for key in sorted(opts["required"]):
        if key not in series:
            tally.bad(f"--require-data {key}: no such panel (or its queries failed)")
        elif series[key] == 0:
            tally.bad(f"--require-data {key}: none of its queries returned series")
        else:
            tally.ok(f"--require-data {key}: {series[key]} series")
    for key, op, value in opts["expect"]:
        got = results.get(key, {}).get("values", [])
        wrong = [v for v in got if not (v >= value if op == ">=" else v <= value)]
        if got and not wrong:
            tally.ok(f"--expect {key}{op}{value}: all {len(got)} values")
        else:
            tally.bad(f"--expect {key}{op}{value}: {len(wrong)} of {len(got)} values are not (e.g. {wrong[:3]})")


def main(argv):
    opts = parse(argv)
    tally = Tally()
    series, results = {}, {}
    for f in opts["files"]:
        check_file(f, opts, tally, series, results)
    check_required(opts, tally, series, results)
    if opts["save"]:
        with open(opts["save"], "w") as out:
            json.dump(results, out, indent=1, sort_keys=True)
    if opts["compare"]:
        p, f_ = compare(results, opts)
        tally.passed, tally.failed = tally.passed + p, tally.failed + f_
    print(f"{tally.passed} passed, {tally.failed} failed")
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
