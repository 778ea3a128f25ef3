"""Lint of the Grafana dashboards (monitoring/dashboards/*.json) and of the metric names
used by the dashboards and the Prometheus rules. No Grafana or Prometheus needed; the
queries are run against a real Prometheus by tests/integration/test_monitoring.py.

Contract checked per dashboard: stable uid (unique, [a-z0-9-]), pinned schemaVersion,
no import placeholders (__inputs, ${DS_...}), a `datasource` template variable of type
datasource used by every panel and target, unique panel ids, a unit on every panel,
every range selector is [$__rate_interval], every variable used is defined, and every
tocsin_* metric is one the C++ sources export.
"""
import copy
import glob
import json
import os
import re
import sys
import unittest

SOURCE_DIR = os.environ.get("TOCSIN_SOURCE_DIR",
                            os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
DASHBOARDS = os.path.join(SOURCE_DIR, "monitoring", "dashboards")
RULES = os.path.join(SOURCE_DIR, "monitoring", "prometheus", "tocsin-rules.yml")

# Grafana unit ids the dashboards may use (a typo would silently show raw numbers).
UNITS = {"short", "none", "percentunit", "percent", "s", "ms", "ops", "cps", "cpm", "opm", "reqps",
         "bytes", "dateTimeAsIso", "dtdurations"}
PANEL_TYPES = {"row", "timeseries", "stat", "table", "heatmap", "bargauge", "gauge"}
BUILTIN_VARS = {"__rate_interval", "__interval", "__range", "__interval_ms", "__range_s", "__range_ms"}
DS_REF = {"type": "prometheus", "uid": "${datasource}"}


def exported_metrics():
    """Metric names written as string literals in the C++ sources, with histogram series."""
    names = set()
    for path in glob.glob(os.path.join(SOURCE_DIR, "*", "**", "*.cc"), recursive=True):
        rel = os.path.relpath(path, SOURCE_DIR)
        if rel.split(os.sep)[0] in ("tests", "bench") or rel.startswith("build"):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            names.update(re.findall(r'"(tocsin_[a-z0-9_]+)"', f.read()))
    for n in list(names):
        if n.endswith("_seconds") or n.endswith("_bytes"):
            names.update({n + "_bucket", n + "_sum", n + "_count"})
    return names


def flat_panels(dashboard):
    for p in dashboard.get("panels", []):
        yield p
        for q in p.get("panels", []):  # collapsed rows hold their panels
            yield q


def variables_used(text):
    return set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text))


def lint(dashboard, name, metrics, seen_uids):
    """Returns a list of problems (empty: fine)."""
    errs = []
    raw = json.dumps(dashboard)
    uid = dashboard.get("uid")
    if not isinstance(uid, str) or not re.fullmatch(r"[a-z0-9-]{1,40}", uid):
        errs.append(f"{name}: uid {uid!r} must be a stable [a-z0-9-]{{1,40}} string")
    elif uid in seen_uids:
        errs.append(f"{name}: uid {uid} is also used by {seen_uids[uid]}")
    else:
        seen_uids[uid] = name
    for key in ("title", "schemaVersion", "time", "refresh", "tags"):
        if key not in dashboard:
            errs.append(f"{name}: missing top-level {key!r}")
    if "__inputs" in dashboard or "${DS_" in raw:
        errs.append(f"{name}: import placeholders (__inputs / ${{DS_...}}) are not resolved by file provisioning")
    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        errs.append(f"{name}: needs a template variable 'datasource' of type datasource, query prometheus")
    for v in variables.values():
        if v.get("type") == "query" and v.get("datasource") != DS_REF:
            errs.append(f"{name}: variable {v.get('name')} must query the ${{datasource}} variable")
    undefined = variables_used(raw) - set(variables) - BUILTIN_VARS
    if undefined:
        errs.append(f"{name}: undefined template variables {sorted(undefined)}")
    ids = {}
    for p in flat_panels(dashboard):
        pid, title = p.get("id"), p.get("title", "?")
        where = f"{name}: panel {pid} ({title})"
        if not isinstance(pid, int):
            errs.append(f"{where}: id must be an integer")
        elif pid in ids:
            errs.append(f"{where}: id {pid} is also panel '{ids[pid]}'")
        else:
            ids[pid] = title
        if p.get("type") not in PANEL_TYPES:
            errs.append(f"{where}: type {p.get('type')!r} not in {sorted(PANEL_TYPES)}")
        g = p.get("gridPos", {})
        if not all(isinstance(g.get(k), int) for k in "xywh") or g.get("x", 0) + g.get("w", 0) > 24:
            errs.append(f"{where}: gridPos must have integer x, y, w, h within 24 columns")
        if p.get("type") == "row":
            continue
        if p.get("datasource") != DS_REF:
            errs.append(f"{where}: datasource must be {DS_REF}")
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit")
        if unit not in UNITS:
            errs.append(f"{where}: unit {unit!r} is not one of {sorted(UNITS)}")
        targets = p.get("targets") or []
        if not targets:
            errs.append(f"{where}: no targets")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs):
            errs.append(f"{where}: duplicate refIds {refs}")
        for t in targets:
            expr = t.get("expr", "")
            if not expr.strip():
                errs.append(f"{where}: target {t.get('refId')} has no expr")
                continue
            if t.get("datasource", DS_REF) != DS_REF:
                errs.append(f"{where}: target {t.get('refId')} datasource must be {DS_REF}")
            # Every range selector (so every rate/increase) uses $__rate_interval.
            for rng in re.findall(r"\[([^\]]*)\]", expr):
                if rng != "$__rate_interval":
                    errs.append(f"{where}: range [{rng}] must be [$__rate_interval]: {expr}")
            for m in set(re.findall(r"\b(tocsin_[a-z0-9_]+)", expr)) - metrics:
                errs.append(f"{where}: metric {m} is not exported by Tocsin")
    return errs


def load_dashboards():
    files = sorted(glob.glob(os.path.join(DASHBOARDS, "*.json")))
    out = []
    for f in files:
        with open(f, encoding="utf-8") as fh:
            out.append((os.path.basename(f), json.load(fh)))
    return out


class DashboardLint(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.metrics = exported_metrics()
        cls.dashboards = load_dashboards()

    def test_the_four_dashboards_exist(self):
        self.assertEqual({n for n, _ in self.dashboards},
                         {"pipeline-health.json", "anti-fraud.json", "heating.json", "hotline-sla.json"})

    def test_dashboards_pass_the_lint(self):
        seen = {}
        errs = []
        for name, d in self.dashboards:
            errs += lint(d, name, self.metrics, seen)
        self.assertEqual(errs, [], "\n".join(errs))

    def test_rules_use_exported_metrics(self):
        with open(RULES, encoding="utf-8") as f:
            text = f.read()
        exprs = " ".join(re.findall(r"expr:\s*(\|[\s\S]*?(?=\n\s+(?:for|labels):)|.*)", text))
        used = set(re.findall(r"\b(tocsin_[a-z0-9_]+)", exprs))
        self.assertTrue(used)
        self.assertEqual(used - self.metrics, set())

    def test_provisioning_points_at_the_dashboards(self):
        prov = os.path.join(SOURCE_DIR, "monitoring", "provisioning")
        with open(os.path.join(prov, "dashboards", "tocsin.yaml")) as f:
            text = f.read()
        self.assertRegex(text, r"(?m)^apiVersion: 1$")
        self.assertRegex(text, r"type: file")
        self.assertRegex(text, r"path: \S+")
        with open(os.path.join(prov, "datasources", "tocsin-prometheus.yaml")) as f:
            text = f.read()
        self.assertRegex(text, r"type: prometheus")

    # The linter itself: each known-bad change to a good dashboard is reported.
    def broken(self, mutate):
        name, d = self.dashboards[0]
        d = copy.deepcopy(d)
        mutate(d)
        return lint(d, name, self.metrics, {})

    def first_panel(self, d):
        return next(p for p in flat_panels(d) if p["type"] != "row")

    def test_linter_catches_duplicate_panel_ids(self):
        def m(d):
            ps = [p for p in flat_panels(d) if p["type"] != "row"]
            ps[1]["id"] = ps[0]["id"]
        self.assertTrue(any("also panel" in e for e in self.broken(m)))

    def test_linter_catches_import_placeholders(self):
        def m(d):
            self.first_panel(d)["datasource"] = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        self.assertTrue(any("placeholders" in e for e in self.broken(m)))

    def test_linter_catches_a_missing_unit(self):
        self.assertTrue(any("unit" in e for e in self.broken(lambda d: self.first_panel(d)["fieldConfig"]["defaults"].pop("unit"))))

    def test_linter_catches_a_fixed_rate_range(self):
        def m(d):
            t = self.first_panel(d)["targets"][0]
            t["expr"] = "sum(rate(tocsin_events_consumed_total[5m]))"
        self.assertTrue(any("[5m]" in e for e in self.broken(m)))

    def test_linter_catches_an_unknown_metric(self):
        def m(d):
            self.first_panel(d)["targets"][0]["expr"] = "sum(rate(tocsin_no_such_thing_total[$__rate_interval]))"
        self.assertTrue(any("tocsin_no_such_thing_total" in e for e in self.broken(m)))

    def test_linter_catches_a_missing_datasource_variable(self):
        def m(d):
            d["templating"]["list"] = [v for v in d["templating"]["list"] if v["name"] != "datasource"]
        self.assertTrue(any("'datasource'" in e for e in self.broken(m)))

    def test_linter_catches_an_unstable_uid(self):
        self.assertTrue(any("uid" in e for e in self.broken(lambda d: d.pop("uid"))))


if __name__ == "__main__":
    unittest.main(verbosity=2)
