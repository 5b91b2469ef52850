"""The dashboard's server side, on SQLite and PostgreSQL: the page and its static files,
plotly.js served from the installed package, keyset pages of GET /jobs with each job's best metric,
and GET /compare/series (many runs' curves in one request), checked against a plain-Python
reference of its downsampling.

The browser itself is driven in tests/e2e/test_dashboard.py.
"""

from __future__ import annotations

import gzip
import math
import random
import re
from pathlib import Path

import pytest

from db.store import Store
from db.tables import COARSE_BLOCK_STEPS, ROLLUP_BLOCK_STEPS

DASHBOARD = Path(__file__).resolve().parents[2] / "api" / "dashboard"
HP = {"epochs": 2, "hidden_sizes": [32, 32]}


# ---- the page and its files ------------------------------------------------------------


def test_page_has_no_inline_script_and_names_versioned_plotly(client):
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    # Every <script> has a src (a later CSP forbids inline scripts), and no on* attributes.
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts and all("src=" in tag for tag in scripts)
    assert not re.search(r"\son[a-z]+\s*=", html)
    match = re.search(r'name="plotly-url" content="([^"]+)"', html)
    assert match and re.fullmatch(r"static/vendor/plotly\.min\.js\?v=[0-9a-f]{16}", match.group(1))
    # The empty state tells what to do.
    assert "no jobs yet" in html.lower() and "trainyard submit" in html and "curl" in html


def test_own_javascript_never_builds_markup_from_strings(client):
    files = sorted((DASHBOARD / "static").rglob("*.js"))
    assert {f.name for f in files} >= {"app.js", "api.js", "dom.js", "charts.js", "job.js",
                                       "compare.js", "submit.js"}
    for path in files:
        source = path.read_text()
        for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert banned not in source, f"{path.name} uses {banned}"
        relative = path.relative_to(DASHBOARD).as_posix()
        served = client.get(f"/{relative}")
        assert served.status_code == 200, relative
        assert "javascript" in served.headers["content-type"]
    assert client.get("/static/style.css").status_code == 200


def test_plotly_comes_from_the_installed_package_gzipped_and_cached(client):
    from api.routes.dashboard import plotly_js_path

    path = plotly_js_path()
    assert path is not None and path.parts[-3:] == ("plotly", "package_data", "plotly.min.js")
    raw = path.read_bytes()
    url = re.search(r'name="plotly-url" content="([^"]+)"', client.get("/").text).group(1)

    plain = client.get(f"/{url}", headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200 and plain.content == raw
    assert plain.headers["content-type"].startswith("text/javascript")
    assert "immutable" in plain.headers["cache-control"]
    assert "max-age=31536000" in plain.headers["cache-control"]

    zipped = client.get(f"/{url}", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert len(zipped.content) == len(raw)  # httpx has decoded it
    assert int(zipped.headers["content-length"]) < len(raw) / 2

    etag = plain.headers["etag"]
    again = client.get(f"/{url}", headers={"If-None-Match": etag})
    assert again.status_code == 304
    # Not a copy in the repository: the only plotly code served is the package's.
    assert not list(DASHBOARD.rglob("plotly*.js"))
    assert gzip.decompress(gzip.compress(raw)) == raw


# ---- GET /jobs: keyset pages and the best metric ----------------------------------------


def _make_jobs(store: Store, n: int) -> list[int]:
    ids = []
    for i in range(n):
        model = ("mlp", "cnn", "rnn_lm")[i % 3]
        job = store.create_job(model, "digits" if model != "rnn_lm" else "pydocs", HP)
        ids.append(job.id)
        if i % 4 == 0:
            store.claim_job(job.id, "w")
    return ids


def test_keyset_pages_walk_every_job_once_in_both_directions(client, store):
    ids = _make_jobs(store, 23)
    seen, before, offsets = [], None, []
    while True:
        query = {"limit": 5} | ({"before": before} if before else {})
        body = client.get("/jobs", params=query).json()
        assert body["total"] == 23
        offsets.append(body["offset"])
        seen += [j["id"] for j in body["items"]]
        if body["offset"] + len(body["items"]) >= body["total"]:
            break
        before = body["items"][-1]["id"]
    assert seen == sorted(ids, reverse=True)
    assert offsets == [0, 5, 10, 15, 20]
    # Back towards the newest with after=: the same pages, newest first within each.
    after, back = seen[-3], []  # the last page holds 3 jobs: start just above it
    while True:
        body = client.get("/jobs", params={"limit": 5, "after": after}).json()
        back.append([j["id"] for j in body["items"]])
        if body["offset"] == 0:
            break
        after = body["items"][0]["id"]
    assert back == [seen[15:20], seen[10:15], seen[5:10], seen[0:5]]
    assert [client.get("/jobs", params={"limit": 5, "after": p[0]}).json()["offset"]
            for p in back[:-1]] == [10, 5, 0]


def test_keyset_pages_with_filters_match_offset_pages(client, store):
    _make_jobs(store, 30)
    for params in ({"status": "running"}, {"model": "cnn"}, {"status": "queued", "model": "mlp"}):
        everything = client.get("/jobs", params={**params, "limit": 200}).json()
        expected = [j["id"] for j in everything["items"]]
        assert expected, params
        first = client.get("/jobs", params={**params, "limit": 3}).json()
        second = client.get("/jobs", params={**params, "limit": 3,
                                             "before": first["items"][-1]["id"]}).json()
        assert [j["id"] for j in first["items"] + second["items"]] == expected[:6]
        assert second["offset"] == 3 and second["total"] == everything["total"]
        for job in second["items"]:
            if "status" in params:
                assert job["status"] == params["status"]
            if "model" in params:
                assert job["model"] == params["model"]


def test_keyset_edge_cases_and_bad_combinations(client, store):
    ids = _make_jobs(store, 4)
    empty = client.get("/jobs", params={"before": min(ids)}).json()
    assert empty["items"] == [] and empty["total"] == 4 and empty["offset"] == 4
    newest = client.get("/jobs", params={"after": max(ids)}).json()
    assert newest["items"] == [] and newest["offset"] == 0
    for params, field in (({"before": 3, "after": 1}, "after"), ({"before": 3, "offset": 2}, "offset")):
        response = client.get("/jobs", params=params)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["query", field]
    assert client.get("/jobs", params={"before": 0}).status_code == 422


def test_each_listed_job_carries_its_best_headline_metric(client, store):
    mlp, lm, fresh = (store.create_job(m, d, HP).id for m, d in
                      (("mlp", "digits"), ("rnn_lm", "pydocs"), ("cnn", "digits")))
    store.add_metrics(mlp, [("val_accuracy", 10, 1, 0.80, None), ("val_accuracy", 20, 2, 0.93, None),
                            ("val_accuracy", 30, 3, 0.91, None), ("val_loss", 30, 3, 0.2, None),
                            ("train_loss", 30, 3, 0.01, None)])
    store.add_metrics(lm, [("val_perplexity", 10, 1, 40.0, None), ("val_perplexity", 20, 2, 31.5, None),
                           ("val_perplexity", 30, 3, 33.0, None)])
    items = {j["id"]: j for j in client.get("/jobs").json()["items"]}
    assert items[mlp]["best_metric"] == {"name": "val_accuracy", "value": 0.93}
    assert items[lm]["best_metric"] == {"name": "val_perplexity", "value": 31.5}
    assert items[fresh]["best_metric"] is None


# ---- GET /compare/series -------------------------------------------------------------------


def reference_series(points: list[tuple[int, int, float | None]], max_points: int) -> dict:
    """The documented downsampling, in plain Python: buckets of equal step ranges; for a series
    in more than max_points - 1 rollup rows (16-step blocks per epoch), of whole blocks: of
    128 steps when its step range spans at least max_points - 1 of those, else of 16."""
    points = sorted(points)
    lo, hi = points[0][0], points[-1][0]
    rollup_rows = len({(step // ROLLUP_BLOCK_STEPS, epoch) for step, epoch, _ in points})
    if rollup_rows <= max_points - 1:
        width = max(1, math.ceil((hi - lo) / (max_points - 1)))
        bucket_of = lambda step: (step - lo) // width  # noqa: E731
    else:
        block = ROLLUP_BLOCK_STEPS
        if hi // COARSE_BLOCK_STEPS - lo // COARSE_BLOCK_STEPS + 1 >= max_points - 1:
            block = COARSE_BLOCK_STEPS
        lo_b, hi_b = lo // block, hi // block
        width = max(1, math.ceil((hi_b - lo_b + 1) / (max_points - 1)))
        bucket_of = lambda step: (step // block - lo_b) // width  # noqa: E731
    buckets: dict[int, list] = {}
    for step, epoch, value in points:
        buckets.setdefault(-1 if step == hi else bucket_of(step), []).append((step, epoch, value))
    out = []
    for rows in buckets.values():
        values = [v for _, _, v in rows if v is not None]
        last = max(rows)
        out.append((last[0], last[1], sum(values) / len(values) if values else None))
    out.sort()
    by_epoch: dict[int, list] = {}
    for _, epoch, value in points:
        by_epoch.setdefault(epoch, [])
        if value is not None:
            by_epoch[epoch].append(value)
    values = [v for _, _, v in points if v is not None]
    return {
        "step": [p[0] for p in out], "epoch": [p[1] for p in out], "value": [p[2] for p in out],
        "final": points[-1][2], "min": min(values) if values else None,
        "max": max(values) if values else None,
        "epochs": {"epoch": sorted(by_epoch),
                   "mean": [sum(v) / len(v) if v else None for _, v in sorted(by_epoch.items())]},
    }


def assert_series_equal(got: dict, want: dict) -> None:
    assert got["step"] == want["step"]
    assert got["epoch"] == want["epoch"]
    assert len(got["value"]) == len(want["value"])
    for a, b in zip(got["value"], want["value"], strict=True):
        assert (a is None and b is None) or a == pytest.approx(b, rel=1e-9, abs=1e-12)
    assert got["epochs"]["epoch"] == want["epochs"]["epoch"]
    for a, b in zip(got["epochs"]["mean"], want["epochs"]["mean"], strict=True):
        assert (a is None and b is None) or a == pytest.approx(b, rel=1e-9, abs=1e-12)


def _random_runs(store: Store, rng: random.Random, n_runs: int) -> dict[int, dict[str, list]]:
    """Runs of different lengths, starting steps and epoch sizes, with NaN (stored as NULL)
    values, a series whose last value is NaN, and sparse per-epoch series."""
    truth: dict[int, dict[str, list]] = {}
    for r in range(n_runs):
        job = store.create_job("mlp", "digits", {**HP, "lr": 10 ** -(1 + r % 3), "seed": r})
        start, steps, per_epoch = rng.randint(0, 5), rng.randint(1, 3000), rng.randint(7, 400)
        series: dict[str, list] = {"train_loss": [], "val_loss": [], "val_accuracy": []}
        for s in range(start, start + steps):
            epoch = (s - start) // per_epoch + 1
            value = 3 * math.exp(-s / 500) + rng.random() / 10
            if rng.random() < 0.02:
                value = float("nan")
            series["train_loss"].append((s, epoch, value))
            if (s - start + 1) % per_epoch == 0 or s == start + steps - 1:
                series["val_loss"].append((s, epoch, 2 * math.exp(-s / 600)))
                series["val_accuracy"].append((s, epoch, 1 - math.exp(-s / 600)))
        if r == 1:  # a run that diverged at its very end
            series["train_loss"][-1] = (series["train_loss"][-1][0], series["train_loss"][-1][1],
                                        float("nan"))
        store.add_metrics(job.id, [(name, s, e, v, None) for name, pts in series.items()
                                   for s, e, v in pts])
        truth[job.id] = {name: [(s, e, None if isinstance(v, float) and math.isnan(v) else v)
                                for s, e, v in pts] for name, pts in series.items()}
    return truth


@pytest.mark.parametrize("max_points", [2, 3, 50, 200, 5000])
def test_bulk_series_matches_the_reference_downsampling(store, max_points):
    rng = random.Random(max_points)
    truth = _random_runs(store, rng, 7)
    got = store.bulk_series(truth, ["train_loss", "val_loss", "val_accuracy", "missing"], max_points)
    assert set(got) == set(truth)
    for job_id, by_name in truth.items():
        assert set(got[job_id]) == set(by_name)  # "missing" exists nowhere: absent
        for name, points in by_name.items():
            want = reference_series(points, max_points)
            series = got[job_id][name]
            assert_series_equal(series, want)
            assert len(series["step"]) <= max_points
            assert series["step"][-1] == points[-1][0]  # ends on the exact final point
            assert series["final"] == want["final"]
            expected_best = want["min"] if name != "val_accuracy" else want["max"]
            assert series["best"] == pytest.approx(expected_best)
            if len({p[0] for p in points}) <= max_points - 1:
                # no bucket holds two points: the series comes back exactly
                assert series["value"] == [v for _, _, v in points]


@pytest.mark.parametrize("max_points", [3, 50])  # from the coarse and from the fine rollups
def test_rollups_follow_rewritten_points(store, max_points):
    """A resumed run writes some steps again with other values (and a later epoch split):
    the block summaries are recomputed from the points, so the curve matches the points."""
    rng = random.Random(7)
    truth = _random_runs(store, rng, 3)
    for job_id, by_name in truth.items():
        points = by_name["train_loss"]
        start = len(points) // 3
        redo = [(s, e, rng.random()) for s, e, _ in points[start:start + 200]]
        store.add_metrics(job_id, [("train_loss", s, e, v, None) for s, e, v in redo])
        points = points[:start] + redo + points[start + 200:]
        # a resumed run: its first batch repeats the last steps (one now NaN) and goes on past
        last_step, last_epoch = points[-1][0], points[-1][1]
        tail = [(s, e, rng.random()) for s, e, _ in points[-25:]]
        tail[3] = (tail[3][0], tail[3][1], None)
        tail += [(last_step + i, last_epoch + 1, rng.random()) for i in range(1, 40)]
        store.add_metrics(job_id, [("train_loss", s, e, float("nan") if v is None else v, None)
                                   for s, e, v in tail])
        by_name["train_loss"] = points[:-25] + tail
    got = store.bulk_series(truth, ["train_loss"], max_points)
    for job_id, by_name in truth.items():
        assert_series_equal(got[job_id]["train_loss"],
                            reference_series(by_name["train_loss"], max_points))


def test_upgrading_keeps_the_points_and_summarises_them(sqlite_url):
    """Upgrading a database that already holds metrics keeps them (SQLite rebuilds `jobs` in
    0005: with foreign keys on, that would cascade-delete every metric) and fills
    metric_rollups from them (0004), and metric_rollups_coarse from those (0007)."""
    from alembic import command
    from alembic.config import Config

    from db.store import MIGRATIONS_DIR

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", sqlite_url)
    command.upgrade(config, "0003")
    points = [(s, s // 100 + 1, 1.0 / (s + 1) if s % 37 else None) for s in range(1000)]
    with Store(sqlite_url) as old:
        with old.engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO jobs (name, model, dataset, hyperparameters, device, status, created_at,"
                " updated_at, epoch, step, attempts, infra_failures) VALUES ('old', 'mlp', 'digits',"
                " '{}', 'cpu', 'succeeded', '2026-01-01', '2026-01-01', 0, 0, 1, 0)"
            )
            conn.exec_driver_sql(
                "INSERT INTO metrics (job_id, name, step, epoch, value, time)"
                " VALUES (1, 'train_loss', ?, ?, ?, 0)", points,
            )
    with Store(sqlite_url) as store:
        store.migrate()
        for max_points in (20, 4):  # from the 16-step rollups (0004), from the coarse (0007)
            got = store.bulk_series([1], ["train_loss"], max_points)[1]["train_loss"]
            assert_series_equal(got, reference_series(points, max_points))


def test_bulk_series_is_the_same_through_http_and_labels_runs_by_what_differs(client, store):
    rng = random.Random(3)
    truth = _random_runs(store, rng, 4)
    ids = sorted(truth)
    body = client.get("/compare/series", params={
        "ids": f"{ids[0]}-{ids[-1]}", "names": "train_loss,val_accuracy", "max_points": 100}).json()
    assert [r["id"] for r in body["runs"]] == ids
    assert body["names"] == ["train_loss", "val_accuracy"] and body["max_points"] == 100
    assert body["differing"] == ["lr", "seed"]
    run = body["runs"][0]
    assert run["label"] == f"lr={run['hyperparameters']['lr']}, seed={run['hyperparameters']['seed']}"
    assert run["metric_names"] == ["train_loss", "val_accuracy", "val_loss"]
    for job_id in ids:
        for name in ("train_loss", "val_accuracy"):
            assert_series_equal(body["series"][str(job_id)][name],
                                reference_series(truth[job_id][name], 100))
    default = client.get("/compare/series", params={"ids": ",".join(map(str, ids))}).json()
    assert default["names"] == ["train_loss", "val_loss", "val_accuracy", "val_perplexity"]
    assert set(default["series"][str(ids[0])]) == {"train_loss", "val_loss", "val_accuracy"}


def test_compare_series_of_one_run_and_runs_without_metrics(client, store):
    lonely = store.create_job("mlp", "digits", HP, name="<b>bold</b>")
    one = client.get("/compare/series", params={"ids": str(lonely.id)}).json()
    assert one["differing"] == [] and one["series"] == {}
    assert one["runs"][0]["label"] == "<b>bold</b>"  # escaped by the page, not mangled here


def test_compare_series_rejects_bad_input(client, store):
    job = store.create_job("mlp", "digits", HP)
    cases = [
        ({"ids": "abc"}, "ids"), ({"ids": ""}, "ids"), ({"ids": "5-2"}, "ids"),
        ({"ids": "1-5000"}, "ids"), ({"ids": str(job.id), "names": ","}, "names"),
        ({"ids": str(job.id), "names": "a\x00b"}, "names"),
        ({"ids": str(job.id), "max_points": 1}, "max_points"),
    ]
    for params, field in cases:
        response = client.get("/compare/series", params=params)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["detail"][0]["loc"][-1] == field
    missing = client.get("/compare/series", params={"ids": f"{job.id},99999,2147483648"})
    assert missing.status_code == 404
    assert "99999" in missing.json()["detail"]


# ---- store helpers the pages use ------------------------------------------------------------


def test_metric_names_many_matches_a_plain_distinct(store):
    rng = random.Random(5)
    truth = _random_runs(store, rng, 3)
    extra = store.create_job("rnn_lm", "pydocs", HP).id
    store.add_metrics(extra, [("grad_norm/layers.0", 1, 1, 0.1, None), ("tokens_per_s", 1, 1, 5.0, None),
                              ("val_perplexity", 1, 1, 9.0, None), ("Zeta", 1, 1, 1.0, None)])
    empty = store.create_job("cnn", "digits", HP).id
    names = store.metric_names_many([*truth, extra, empty, 10**6])
    for job_id in [*truth, extra, empty]:
        assert names[job_id] == store.metric_names(job_id)
    assert names[empty] == [] and names[10**6] == []


def test_get_jobs_and_best_metrics(store):
    a, b = store.create_job("mlp", "digits", HP), store.create_job("rnn_lm", "pydocs", HP)
    got = store.get_jobs([a.id, b.id, 10**6, a.id])
    assert set(got) == {a.id, b.id} and got[a.id] == store.get_job(a.id)
    store.add_metrics(a.id, [("val_loss", 1, 1, 0.5, None), ("val_loss", 2, 2, float("nan"), None),
                             ("val_loss", 3, 3, 0.7, None)])
    assert store.best_metrics([a.id, b.id], ["val_loss", "lr"]) == {a.id: {"val_loss": 0.5}}
    assert store.get_jobs([]) == {} and store.best_metrics([], ["val_loss"]) == {}


# ---- GET /compare/series at scale: hundreds of runs, thousands of series ---------------------


def _seed_many_runs(store: Store, n_runs: int, names: dict[str, str],
                    rng: random.Random) -> dict[int, dict[str, list]]:
    """`n_runs` finished MLP runs in one INSERT, their points in one more, and the block
    summaries add_metrics keeps derived from the points in SQL (add_metrics would take one
    transaction per run). `names`: name -> "step" (a point at every step, 40 to 120 steps,
    some NULL, as a NaN is stored) or "epoch" (one per 20-step epoch). Every run's values are its
    own."""
    from sqlalchemy import insert, select, text

    from db.tables import Job, Metric

    jobs = [{"name": f"scale-{r}", "model": "mlp", "dataset": "digits", "device": "cpu",
             "status": "succeeded", "hyperparameters": {**HP, "lr": 10 ** -(1 + r % 3), "seed": r}}
            for r in range(n_runs)]
    with store.engine.begin() as conn:
        conn.execute(insert(Job.__table__), jobs)
        ids = list(conn.scalars(select(Job.id).order_by(Job.id)))
    truth: dict[int, dict[str, list]] = {}
    rows = []
    for job_id in ids:
        steps = rng.randint(40, 120)
        by_name: dict[str, list] = {}
        for name, kind in names.items():
            points = []
            for step in range(1, steps + 1):
                if kind == "epoch" and step % 20 and step != steps:
                    continue
                value = None if rng.random() < 0.03 else job_id + rng.random()
                points.append((step, (step - 1) // 20 + 1, value))
            by_name[name] = points
            rows += [{"job_id": job_id, "name": name, "step": s, "epoch": e, "value": v,
                      "time": 0.0} for s, e, v in points]
        truth[job_id] = by_name
    with store.engine.begin() as conn:
        conn.execute(insert(Metric.__table__), rows)
        conn.execute(text(
            f"INSERT INTO metric_rollups (job_id, name, block, epoch, last_step, n, total, low,"
            f" high) SELECT job_id, name, step / {ROLLUP_BLOCK_STEPS}, epoch, max(step),"
            f" count(value), sum(value), min(value), max(value) FROM metrics"
            f" GROUP BY job_id, name, step / {ROLLUP_BLOCK_STEPS}, epoch"))
    return truth


def _assert_curves(body: dict, truth: dict[int, dict[str, list]], max_points: int) -> None:
    """Every run's every series is its own, downsampled as documented, ending on its final
    value."""
    assert sorted(int(i) for i in body["series"]) == sorted(truth)
    for job_id, by_name in truth.items():
        got = body["series"][str(job_id)]
        assert set(got) == set(by_name)
        for name, points in by_name.items():
            series = got[name]
            assert_series_equal(series, reference_series(points, max_points))
            assert series["step"][-1] == points[-1][0]
            assert series["value"][-1] == series["final"] == points[-1][2]


def test_compare_series_of_600_runs_x_3_names(client, store):
    """1,800 series in one request (the page's three default curves of 600 MLP runs): once a
    500 on SQLite ("too many terms in compound SELECT" past 500 series) and seconds of planning
    and gigabytes on Postgres. Short series (from points) and long ones (from block summaries)
    are mixed in it."""
    rng = random.Random(600)
    names = {"train_loss": "step", "val_loss": "epoch", "val_accuracy": "epoch"}
    truth = _seed_many_runs(store, 600, names, rng)
    ids = sorted(truth)
    max_points = 8
    paths = {len({(s // ROLLUP_BLOCK_STEPS, e) for s, e, _ in points}) > max_points - 1
             for by_name in truth.values() for points in by_name.values()}
    assert paths == {True, False}  # both ways of reading a series are in the request
    response = client.get("/compare/series", params={
        "ids": f"{ids[0]}-{ids[-1]}", "names": ",".join(names), "max_points": max_points})
    assert response.status_code == 200, response.text[:500]
    body = response.json()
    assert [run["id"] for run in body["runs"]] == ids
    _assert_curves(body, truth, max_points)


def test_compare_series_caps_runs_x_names_with_a_422_naming_the_field(client, store,
                                                                      api_settings):
    """The cap on runs x names (TRAINYARD_MAX_COMPARE_SERIES, 5,000) is answered in full:
    250 runs x 20 names (once a 500 on SQLite, and a minute and a half on Postgres). 400 runs x
    20 names is over it (once "stack depth limit exceeded", a 500, on Postgres) and answered 422
    at `names` with the most names allowed; more points per series than the cap's 200 lower
    the series allowed."""
    cap = api_settings.max_compare_series
    names = [f"grad_norm/layers.{i}" for i in range(18)] + ["val_loss", "val_accuracy"]
    assert 400 * len(names) > cap >= 4 * 1000  # the page's 4 names x 1000 runs fit
    truth = _seed_many_runs(store, 400, dict.fromkeys(names, "epoch"), random.Random(400))
    ids = sorted(truth)

    runs = cap // len(names)  # just at the cap
    at_cap = {"ids": f"{ids[0]}-{ids[runs - 1]}", "names": ",".join(names), "max_points": 200}
    response = client.get("/compare/series", params=at_cap)
    assert response.status_code == 200, response.text[:300]
    _assert_curves(response.json(), {i: truth[i] for i in ids[:runs]}, 200)

    over = client.get("/compare/series", params={
        "ids": f"{ids[0]}-{ids[-1]}", "names": ",".join(names)})
    assert over.status_code == 422, over.text[:300]
    detail = over.json()["detail"][0]
    assert detail["loc"] == ["query", "names"]
    assert f"at most {cap:,}" in detail["msg"] and "TRAINYARD_MAX_COMPARE_SERIES" in detail["msg"]
    assert f"at most {cap // 400} metric names with 400 runs" in detail["msg"]

    more_points = client.get("/compare/series", params={**at_cap, "max_points": 201})
    assert more_points.status_code == 422
    detail = more_points.json()["detail"][0]
    assert detail["loc"] == ["query", "max_points"] and "max_points <= 200" in detail["msg"]


def test_compare_series_cap_names_ids_when_names_are_the_default(store, api_settings):
    from fastapi.testclient import TestClient

    from api.main import create_app

    settings = api_settings.model_copy(update={"max_compare_series": 10})
    ids = [store.create_job("mlp", "digits", HP).id for _ in range(3)]
    with TestClient(create_app(settings, store=store),
                    base_url="http://127.0.0.1:8000") as small_cap:
        # the default names are four: 3 runs x 4 names = 12 series, over 10
        response = small_cap.get("/compare/series", params={"ids": f"{ids[0]}-{ids[-1]}"})
        assert response.status_code == 422
        detail = response.json()["detail"][0]
        assert detail["loc"] == ["query", "ids"]
        assert "compare at most 2 runs with 4 names" in detail["msg"]
        fits = small_cap.get("/compare/series", params={"ids": f"{ids[0]}-{ids[1]}"})
        assert fits.status_code == 200
