"""The Grafana dashboard (deploy/grafana/trainyard.json) and the Prometheus example
(deploy/prometheus/): every PromQL expression they hold is taken apart, and each metric name it
reads must be in a real GET /metrics answer of a service with jobs queued, running (with
points) and finished, a worker, and requests served. The dashboard must also show every
family the service exposes, and the scrape example must send the scrape token.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.main import create_app
from core.settings import Settings
from db.store import Store

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "trainyard.json"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
CPU = ["cpu", "auto"]
JOB = {"model": "mlp", "dataset": "digits", "hyperparameters": {"epochs": 1}, "device": "cpu"}
# Words of PromQL that look like names but are not metrics.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
            "or", "unless", "offset", "inf", "nan"}
# Series Prometheus makes itself for each target, not read from /metrics.
SCRAPE_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: its identifiers, once strings, label
    matchers, ranges, grouping clauses, function calls and keywords are taken out."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", expr):
        if expr[match.end():].lstrip().startswith("("):
            continue  # a function
        if match.group(0).lower() not in KEYWORDS:
            names.add(match.group(0))
    return names


def test_metric_names_are_taken_apart():
    expr = ('histogram_quantile(0.95, sum by (le, route) (rate(x_bucket{route!="/a/{id}"}'
            '[$__rate_interval]))) / on(route) group_left y_total > bool 1e-9 and z')
    assert metric_names(expr) == {"x_bucket", "y_total", "z"}


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]


def rule_exprs() -> list[str]:
    config = yaml.safe_load(PROMETHEUS.read_text())
    exprs = []
    for name in config.get("rule_files", []):
        rules = yaml.safe_load((PROMETHEUS.parent / name).read_text())
        exprs += [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    return exprs


@pytest.fixture
def exposed(store: Store, tmp_path: Path) -> tuple[set[str], set[str]]:
    """(sample names, family names) of a real /metrics with every figure populated."""
    settings = Settings(home=tmp_path / "home", broker_url=None, database_url=None,
                        data_dir=tmp_path / "data", reconcile_in_api=False,
                        metrics_probe_timeout_seconds=15.0)
    with TestClient(create_app(settings, store=store), raise_server_exceptions=False,
                    base_url="http://127.0.0.1:8000") as client:
        store.record_worker_seen("w1@box", "box", 1, CPU, starting=True)
        for _ in range(3):
            assert client.post("/jobs", json=JOB).status_code == 201
        finished = store.claim_next_job("w1@box", CPU)
        store.finish_job(finished.id, "succeeded")
        running = store.claim_next_job("w1@box", CPU)
        store.add_metrics(running.id, [(name, step, 1, 1.0, 1e9 + step) for step in (1, 2, 3)
                                       for name in ("train_loss", "samples_per_s")])
        client.get("/jobs/1")
        body = client.get("/metrics").text
    families = list(text_string_to_metric_families(body))
    return ({s.name for f in families for s in f.samples}, {f.name for f in families})


def test_every_metric_the_dashboard_uses_exists(exposed):
    samples, families = exposed
    exprs = dashboard_exprs()
    assert len(exprs) >= 15
    used = set().union(*map(metric_names, exprs))
    assert used - samples == set(), f"not in /metrics: {sorted(used - samples)}"
    # And the dashboard shows every family the service exposes.
    shown = {f for f in families if any(name == f or name.startswith(f + "_") for name in used)}
    assert families - shown == set(), f"not on the dashboard: {sorted(families - shown)}"


def test_every_metric_the_alert_rules_use_exists(exposed):
    samples, _ = exposed
    exprs = rule_exprs()
    assert len(exprs) >= 5
    used = set().union(*map(metric_names, exprs))
    assert used - samples - SCRAPE_SERIES == set(), sorted(used - samples)


def test_the_dashboard_imports_with_a_datasource_input():
    dashboard = json.loads(DASHBOARD.read_text())
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24


def test_the_scrape_example_sends_the_token_to_metrics():
    config = yaml.safe_load(PROMETHEUS.read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"]["type"] == "Bearer"
    assert job["authorization"]["credentials_file"]
    assert job["static_configs"][0]["targets"]
    assert "TRAINYARD_METRICS_TOKEN" in PROMETHEUS.read_text()
