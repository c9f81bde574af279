#!/usr/bin/env python3
"""Evaluates the shipped Grafana dashboards over an outage window in several receivers.

    central_view.py --scrape URL --push NAME=URL... --window START END [--before START END]
                    [--live START END] --var name=value... DASHBOARD.json...

For every panel expression (each target of each panel, the dashboard variables substituted
as Grafana would), runs query_range over the window with a 15 s step in each receiver and
counts the steps that have a value. Prints one line per check and ends with
"N passed, N failed":

- in the scrape (+ backfill) receiver, every ping, DNS, trace, TCP and HTTP expression has data for at
  least 95 % of the steps;
- the loss panel shows the loss injected during the outage (and none before it);
- in every push-only receiver, every expression that has data in the scrape receiver has
  data too: over the outage for the probe series (stored, so backfilled), and over the
  `--live` window (default: the outage) for the daemon's own series, which are pushed as they
  stand and not stored, so an outage rightly leaves a hole in them.

Panels titled "(scrape)" (the daemon's own series, live rather than backfilled), hop addresses
(never stored, hence never shipped), `up` and `ALERTS` (the scraping Prometheus' own) and
one-day baselines (more history than a test holds) are reported on a "note" line, not required.
"""
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

# Variable substitution is the dashboard checker's, so both read a panel as Grafana does.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "monitoring" / "tests"))
from check_dashboards import substitute  # noqa: E402

STEP = 15
COVERAGE = 0.95
PROBE_SERIES = re.compile(r"vantage_(ping|dns|trace|tcp|http|tls|probe)_|vantage_target:")
# Series never shipped: hop addresses are not stored (the path hash is); `up` and `ALERTS` are
# written by the Prometheus that scrapes and evaluates the rules (the push-only ones here do not).
SCRAPE_ONLY_SERIES = re.compile(r"vantage_trace_hop_info|\bup\{|\bALERTS\{")
# A baseline over a day of history, which a test of minutes cannot fill.
DAY_BASELINE = re.compile(r"\[1d:")


def builtin(range_s):
    """Grafana's own variables over a window of `range_s` seconds at this script's step."""
    return {"__rate_interval": "1m", "__interval": f"{STEP}s", "__range": f"{range_s}s",
            "__interval_ms": str(STEP * 1000), "__range_s": str(range_s)}


def expressions(dash):
    """(panel title, refId, expr) of every panel target, nested rows included."""
    def walk(panels):
        for p in panels:
            yield from walk(p.get("panels", []))
            for t in p.get("targets", []):
                if t.get("expr"):
                    yield p.get("title", ""), t.get("refId", ""), t["expr"]
    yield from walk(dash.get("panels", []))


def query_range(base, expr, start, end):
    """{step timestamp: [values]} over all series, or an error string."""
    params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": str(STEP)}
    url = f"{base}/api/v1/query_range?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            body = json.load(r)
    except urllib.error.HTTPError as e:
        try:
            body = json.load(e)
        except ValueError:
            return f"HTTP {e.code}"
    except (urllib.error.URLError, TimeoutError, ValueError) as e:
        return str(e)
    if body.get("status") != "success":
        return f"{body.get('errorType')}: {body.get('error')}"
    steps = {}
    for series in body["data"]["result"]:
        for t, v in series.get("values", []):
            try:
                f = float(v)
            except ValueError:
                continue
            if f == f:  # not NaN
                steps.setdefault(round(float(t)), []).append(f)
    return steps


def coverage(steps, start, end):
    total = int((end - start) // STEP) + 1
    have = sum(1 for i in range(total) if round(start + i * STEP) in steps)
    return have, total


def main(argv):
    scrape, push, window, before, live, variables, files = None, [], None, None, None, {}, []
    args = iter(argv)
    for a in args:
        if a == "--scrape":
            scrape = next(args).rstrip("/")
        elif a == "--push":
            name, _, url = next(args).partition("=")
            push.append((name, url.rstrip("/")))
        elif a == "--window":
            window = (float(next(args)), float(next(args)))
        elif a == "--before":
            before = (float(next(args)), float(next(args)))
        elif a == "--live":
            live = (float(next(args)), float(next(args)))
        elif a == "--var":
            k, _, v = next(args).partition("=")
            variables[k] = v
        else:
            files.append(a)
    # From one step into the outage: at its first instant no window holds an outage round yet,
    # so a panel that shows only losses (`> 0`) rightly has nothing to show there.
    start, end = window[0] + STEP, window[1]
    range_s = int(end - start)
    passed = failed = 0
    # Per receiver: (probe expressions, daemon expressions) without data.
    missing_in = {name: ([], []) for name, _ in push}
    loss_checked = False

    def result(ok, line):
        nonlocal passed, failed
        if ok:
            passed += 1
            print(f"ok   {line}")
        else:
            failed += 1
            print(f"FAIL {line}")

    for f in files:
        dash = json.load(open(f))
        uid = dash.get("uid", f)
        for title, ref, expr in expressions(dash):
            q = substitute(expr, variables, builtin(range_s))
            where = f"{uid}: {title!r} {ref}"
            got = query_range(scrape, q, start, end)
            if isinstance(got, str):
                result(False, f"{where}: query fails: {got}\n     {q}")
                continue
            have, total = coverage(got, start, end)
            # Panels that say they come from scrapes only, and series never shipped.
            scrape_only = "(scrape)" in title or SCRAPE_ONLY_SERIES.search(expr)
            if scrape_only or DAY_BASELINE.search(expr):
                why = "scrape-only" if scrape_only else "a one-day baseline"
                print(f"note {where}: {why}, data for {have}/{total} steps (not required)")
            elif PROBE_SERIES.search(expr):
                result(have >= COVERAGE * total,
                       f"{where}: data for {have}/{total} steps of the outage (scrape+backfill)"
                       + ("" if have >= COVERAGE * total else f"\n     {q}"))
            if title == "Loss" and have:
                loss_checked = True
                values = [v for vs in got.values() for v in vs]
                mean = sum(values) / len(values)
                quiet = 0.0
                if before:
                    pre = query_range(scrape, q, before[0], before[1])
                    pre_v = [v for vs in pre.values() for v in vs] if isinstance(pre, dict) else []
                    quiet = sum(pre_v) / len(pre_v) if pre_v else 0.0
                # A mean or a worst-round panel: either shows the loss, and none before.
                result(mean >= 0.05 and quiet < 0.02,
                       f"{where}: mean loss {mean:.3f} during the outage (injected 0.3), {quiet:.3f} before")
            if not have or scrape_only:
                continue
            kind = 0 if PROBE_SERIES.search(expr) else 1
            p_start, p_end = (start, end) if kind == 0 or not live else live
            for name, url in push:
                p = query_range(url, q, p_start, p_end)
                if isinstance(p, str) or not p:
                    missing_in[name][kind].append(f"{where}: {q}" + (f" ({p})" if isinstance(p, str) else ""))
    result(loss_checked, "the loss panel has data over the outage")
    for name, (probe, daemon) in missing_in.items():
        for what, missing, when in (("ping/DNS/trace/TCP/HTTP", probe, ""),
                                    ("device and fleet", daemon, " after the link's return" if live else "")):
            result(not missing, f"push-only {name}: every {what} expression with data in the scrape setup has data{when}"
                   + "".join(f"\n     no data: {m}" for m in missing))
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
