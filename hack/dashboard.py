#!/usr/bin/env python3
"""Writes manifests/monitoring/grafana-dashboard.json (the Meteor operator's Grafana dashboard).

Edit the panels here and run `hack/dashboard.py`; never edit the JSON by hand. A test checks that every metric
the dashboard queries is one the operator exports.
"""
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "manifests" / "monitoring" / "grafana-dashboard.json"

# (title, unit, [(legend, PromQL)], kind); a None title starts a row.
PANELS = [
    ("Operator", None, None, "row"),
    ("Reconciles per second", "ops", [("{{result}}", 'sum by (result) (rate(controller_runtime_reconcile_total{controller="meteor"}[5m]))')], "timeseries"),
    ("Reconcile errors per second", "ops", [("errors", 'sum(rate(controller_runtime_reconcile_errors_total{controller="meteor"}[5m]))')], "timeseries"),
    ("Reconcile latency", "s", [
        ("p50", 'histogram_quantile(0.5, sum by (le) (rate(controller_runtime_reconcile_time_seconds_bucket{controller="meteor"}[5m])))'),
        ("p99", 'histogram_quantile(0.99, sum by (le) (rate(controller_runtime_reconcile_time_seconds_bucket{controller="meteor"}[5m])))'),
    ], "timeseries"),
    ("Work queue depth", "short", [("depth", 'sum(workqueue_depth{name="meteor"})'), ("retries/s", 'sum(rate(workqueue_retries_total{name="meteor"}[5m]))')], "timeseries"),
    ("API requests by code", "reqps", [("{{code}}", "sum by (code) (rate(rest_client_requests_total[5m]))")], "timeseries"),
    ("Leader", "short", [("{{pod}}", "leader_election_master_status")], "stat"),
    ("Meteors (impact)", None, None, "row"),
    ("Meteors by phase", "short", [("{{phase}}", "sum by (phase) (meteor_meteors)")], "timeseries"),
    ("Created and expired (24 h)", "short", [("created", "sum(increase(meteor_created_total[24h]))"), ("expired", "sum(increase(meteor_expired_total[24h]))")], "stat"),
    ("Builds per result (1 h)", "short", [("{{pipeline}} {{result}}", "sum by (pipeline, result) (increase(meteor_pipeline_runs_total[1h]))")], "timeseries"),
    ("Build duration", "s", [
        ("{{pipeline}} p50", "histogram_quantile(0.5, sum by (le, pipeline) (rate(meteor_pipeline_duration_seconds_bucket[1h])))"),
        ("{{pipeline}} p90", "histogram_quantile(0.9, sum by (le, pipeline) (rate(meteor_pipeline_duration_seconds_bucket[1h])))"),
    ], "timeseries"),
    ("Time from Meteor to Ready", "s", [
        ("p50", "histogram_quantile(0.5, sum by (le) (rate(meteor_time_to_ready_seconds_bucket[1h])))"),
        ("p90", "histogram_quantile(0.9, sum by (le) (rate(meteor_time_to_ready_seconds_bucket[1h])))"),
    ], "timeseries"),
    ("Signature verifications (1 h)", "short", [("{{result}}", "sum by (result) (increase(meteor_signature_verifications_total[1h]))")], "timeseries"),
    ("Edge deployments by health", "short", [("{{health}}", "sum by (health) (meteor_edge_deployments)")], "timeseries"),
]


def build():
    panels, y, x, pid = [], 0, 0, 1
    for title, unit, targets, kind in PANELS:
        if kind == "row":
            if x:
                y, x = y + 8, 0
            panels.append({"id": pid, "type": "row", "title": title, "collapsed": False, "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
            y += 1
        else:
            panels.append({
                "id": pid, "type": kind, "title": title, "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [{"refId": chr(65 + i), "expr": expr, "legendFormat": legend} for i, (legend, expr) in enumerate(targets)],
            })
            x = 12 - x
            if x == 0:
                y += 8
        pid += 1
    return {
        "title": "Meteor operator",
        "uid": "meteor-operator",
        "tags": ["meteor", "tekton", "argocd"],
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"}]},
        "panels": panels,
    }


if __name__ == "__main__":
    out = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    out.write_text(json.dumps(build(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {out}")
