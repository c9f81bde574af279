#!/usr/bin/env python3
"""Runs every PromQL expression of the Grafana dashboards against a Prometheus.

    check_dashboards.py PROMETHEUS_URL DASHBOARD.json... [--var name=value ...]
                        [--require-data "UID:PANEL TITLE" ...]

Grafana's variables are replaced the way Grafana would ($__rate_interval, $__interval,
$__range, and the dashboard's own variables from --var, else ".*"). Each panel query runs as
a range query over the last 5 minutes (instant panels as instant queries); any error from
Prometheus fails the check. Template variable definitions (label_values(...)) are checked
through their selector. Panels named with --require-data must also return series. Prints one line per query, then "N passed, N failed".
"""
import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

BUILTIN = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m", "__interval_ms": "15000",
           "__range_s": "300"}


def substitute(expr, variables):
    def repl(m):
        name = m.group(1) or m.group(2)
        if name in BUILTIN:
            return BUILTIN[name]
        return variables.get(name, ".*")
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", repl, expr)


def queries(dash):
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v.get("query"), dict) else v.get("query", "")
            m = re.match(r"^\s*label_values\((.*),\s*(\w+)\)\s*$", q)
            if m:
                yield f"variable {v['name']}", m.group(1), True, None
            else:
                yield f"variable {v['name']}", q, True, None
    def walk(panels):
        for p in panels:
            yield from walk(p.get("panels", []))
            for t in p.get("targets", []):
                if t.get("expr"):
                    yield (f"panel {p.get('id')} {p.get('title')!r} {t.get('refId')}", t["expr"],
                           bool(t.get("instant")), f"{dash.get('uid')}:{p.get('title')}")
    yield from walk(dash.get("panels", []))


def run(prom, expr, instant):
    now = time.time()
    if instant:
        params = {"query": expr, "time": f"{now:.3f}"}
        url = f"{prom}/api/v1/query?" + urllib.parse.urlencode(params)
    else:
        params = {"query": expr, "start": f"{now - 300:.3f}", "end": f"{now:.3f}", "step": "15"}
        url = f"{prom}/api/v1/query_range?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
    except urllib.error.HTTPError as e:
        body = json.load(e)
    if body.get("status") != "success":
        return None, f"{body.get('errorType')}: {body.get('error')}"
    return len(body["data"]["result"]), None


def main(argv):
    prom, files, variables, required, series = None, [], {}, set(), {}
    args = iter(argv)
    for a in args:
        if a == "--require-data":
            required.add(next(args))
        elif a == "--var":
            k, _, v = next(args).partition("=")
            variables[k] = v
        elif prom is None:
            prom = a.rstrip("/")
        else:
            files.append(a)
    passed = failed = 0
    for f in files:
        dash = json.load(open(f))
        for where, expr, instant, key in queries(dash):
            q = substitute(expr, variables)
            n, err = run(prom, q, instant)
            if err:
                failed += 1
                print(f"FAIL {f}: {where}: {q}\n     {err}")
            else:
                passed += 1
                series[key] = series.get(key, 0) + n
                print(f"ok   {f}: {where}: {n} series")
    for key in sorted(required):
        if key not in series:
            failed += 1
            print(f"FAIL --require-data {key}: no such panel (or its queries failed)")
        elif series[key] == 0:
            failed += 1
            print(f"FAIL --require-data {key}: none of its queries returned series")
        else:
            passed += 1
            print(f"ok   --require-data {key}: {series[key]} series")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
