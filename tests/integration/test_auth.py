"""Authentication and ownership against the real app on SQLite and Postgres.

Keys are made the way `trainyard keys create` makes them; the app checks them on every
endpoint but /healthz (and the dashboard's static shell, which holds no data); one user's
jobs, datasets and checkpoints are a 404 to another; the dashboard's cookie needs its CSRF
token for anything that changes state.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.security import SESSION_COOKIE, new_api_key
from db.store import Store
from core.settings import Settings

PUBLIC_PATHS = {"/healthz", "/auth/session"}
CORPUS = ("the quick brown fox jumps over the lazy dog. " * 40).encode()


def make_key(store: Store, owner: str, admin: bool = False) -> str:
    key, prefix, digest = new_api_key()
    store.add_api_key(owner, prefix, digest, is_admin=admin)
    return key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def secured_settings(tmp_path: Path, **extra) -> Settings:
    return Settings(home=tmp_path / "home", broker_url=None, database_url=None,
                    data_dir=tmp_path / "data", require_keys=True, **extra)


@pytest.fixture
def keys(store: Store) -> dict[str, str]:
    return {"alice": make_key(store, "alice"), "bob": make_key(store, "bob"),
            "root": make_key(store, "root", admin=True)}


@pytest.fixture
def secured(store: Store, keys, tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(secured_settings(tmp_path, max_queued_jobs_per_user=3), store=store)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def submit(client: TestClient, key: str, **body):
    body = {"model": "mlp", "dataset": "digits", "hyperparameters": {"epochs": 1}, **body}
    return client.post("/jobs", json=body, headers=bearer(key))


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


# ---- who may call what ---------------------------------------------------------------------


def test_every_endpoint_but_healthz_needs_a_key(secured):
    paths = secured.app.openapi()["paths"]
    endpoints = [(method.upper(), path) for path, ops in paths.items() for method in ops]
    endpoints += [("GET", "/openapi.json"), ("GET", "/docs")]
    checked = 0
    for method, path in endpoints:
        if path in PUBLIC_PATHS:
            continue
        response = secured.request(method, _concrete(path))
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        assert "API key" in response.json()["detail"]
        checked += 1
    assert checked >= 12  # jobs, metrics, checkpoints, compare, models, datasets, docs, schema
    assert secured.get("/healthz").status_code == 200
    assert secured.get("/auth/session").status_code == 401
    # the dashboard's shell loads (it holds no data) and shows the sign-in form
    assert secured.get("/").status_code == 200


def test_wrong_revoked_and_malformed_credentials_are_refused(secured, store, keys):
    assert secured.get("/jobs", headers=bearer(keys["alice"])).status_code == 200
    for headers in (bearer("ty_" + "x" * 43), bearer(keys["alice"] + "x"),
                    {"Authorization": f"Basic {keys['alice']}"}, {"Authorization": "Bearer "}):
        response = secured.get("/jobs", headers=headers)
        assert response.status_code == 401, headers
        assert keys["alice"] not in response.text
    alice_id = next(k.id for k in store.list_api_keys() if k.owner == "alice")
    store.revoke_api_key(alice_id)
    response = secured.get("/jobs", headers=bearer(keys["alice"]))
    assert response.status_code == 401 and "revoked" in response.json()["detail"]


def test_keys_are_stored_hashed(store, keys):
    listed = store.list_api_keys()
    assert {k.owner for k in listed} == {"alice", "bob", "root"}
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT * FROM api_keys").fetchall()
    dumped = repr(rows)
    for key in keys.values():
        assert key not in dumped
        assert key[len("ty_") + 6:] not in dumped  # not even the secret part


def test_keyless_on_loopback_acts_as_the_local_admin(client):
    """The api_settings fixture binds 127.0.0.1 without TRAINYARD_REQUIRE_KEYS."""
    me = client.get("/auth/session").json()
    assert me == {"owner": "local", "is_admin": True, "via": "local", "keys_required": False,
                  "csrf_token": None}
    assert client.post("/jobs", json={"model": "mlp", "dataset": "digits"}).status_code == 201


def test_keyless_access_is_for_local_programs_not_web_pages(store, client):
    """DNS rebinding (a foreign host name resolving to 127.0.0.1) and cross-site requests from
    pages the user visits are refused; the dashboard's own requests pass."""
    job = client.post("/jobs", json={"model": "mlp", "dataset": "digits"}).json()
    rebound = client.get("/jobs", headers={"Host": "evil.example:8000"})
    assert rebound.status_code == 403 and "loopback" in rebound.json()["detail"]
    cross = client.post(f"/jobs/{job['id']}/cancel",
                        headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403 and "cross-site" in cross.json()["detail"]
    assert store.get_job(job["id"]).status == "queued"
    own = client.post(f"/jobs/{job['id']}/cancel", headers={"Origin": "http://127.0.0.1:8000"})
    assert own.status_code == 200
    for host in ("localhost:8000", "localhost", "[::1]:8000", "[::1]", "127.0.0.1"):
        assert client.get("/jobs", headers={"Host": host}).status_code == 200, host
    assert client.get("/jobs", headers={"Host": "[::2]:80"}).status_code == 403
    # a stale dashboard cookie on a keyless service is ignored, not a dead end
    client.cookies.set("trainyard_session", "stale")
    assert client.get("/jobs").status_code == 200


def test_a_key_sent_to_a_keyless_api_still_counts(store, client):
    key = make_key(store, "carol")
    assert client.get("/auth/session", headers=bearer(key)).json()["owner"] == "carol"
    assert client.get("/jobs", headers=bearer("ty_wrong")).status_code == 401


# ---- refusing to start -------------------------------------------------------------------


@pytest.mark.parametrize("extra", [{"api_host": "0.0.0.0"}, {"require_keys": True},
                                   {"api_host": "10.1.2.3"}])
def test_no_start_without_keys_where_they_are_required(store, tmp_path, extra):
    settings = Settings(home=tmp_path / "home", broker_url=None, database_url=None, **extra)
    with pytest.raises(RuntimeError, match="trainyard keys create"):
        with TestClient(create_app(settings, store=store)):
            pass


def test_no_start_on_a_public_address_with_keys_switched_off(store, tmp_path):
    make_key(store, "alice")
    settings = Settings(home=tmp_path / "home", broker_url=None, database_url=None,
                        api_host="0.0.0.0", require_keys=False)
    with pytest.raises(RuntimeError, match="refusing to serve 0.0.0.0 without API keys"):
        with TestClient(create_app(settings, store=store)):
            pass


def test_admin_key_from_the_environment(store, tmp_path):
    admin_key = "k" * 40
    settings = Settings(home=tmp_path / "home", broker_url=None, database_url=None,
                        api_host="0.0.0.0", admin_key=admin_key)
    for _ in range(2):  # a restart registers it once
        with TestClient(create_app(settings, store=store)) as client:
            me = client.get("/auth/session", headers=bearer(admin_key)).json()
            assert me["owner"] == "admin" and me["is_admin"] is True
    assert len(store.list_api_keys()) == 1
    assert admin_key not in repr(settings) and admin_key not in str(settings.model_dump())
    short = Settings(home=tmp_path / "home", api_host="0.0.0.0", admin_key="short")
    with pytest.raises(RuntimeError, match="too short"):
        with TestClient(create_app(short, store=store)):
            pass


# ---- ownership ---------------------------------------------------------------------------


def test_another_users_jobs_are_not_found(secured, keys, store):
    job = submit(secured, keys["alice"], name="alice-run").json()
    jid = job["id"]
    other = submit(secured, keys["alice"]).json()["id"]
    store.add_metrics(jid, [("train_loss", 1, 1, 0.5, None)])
    store.add_text(jid, 1, 1, "sample", "hello")
    ck = store.add_checkpoint(jid, 1, 1, b"weights", {})
    missing = secured.get("/jobs/999999", headers=bearer(keys["bob"]))
    assert missing.status_code == 404
    paths = [f"/jobs/{jid}", f"/jobs/{jid}/metrics", f"/jobs/{jid}/texts",
             f"/jobs/{jid}/checkpoints", f"/jobs/{jid}/checkpoints/{ck.id}/download",
             f"/compare?ids={jid},{other}", f"/compare/series?ids={jid}"]
    for path in paths:
        assert secured.get(path, headers=bearer(keys["alice"])).status_code == 200, path
        response = secured.get(path, headers=bearer(keys["bob"]))
        assert response.status_code == 404, path
        assert "alice" not in response.text
    cancel = secured.post(f"/jobs/{jid}/cancel", headers=bearer(keys["bob"]))
    assert cancel.status_code == 404
    assert store.get_job(jid).status == "queued"
    assert secured.get("/jobs", headers=bearer(keys["bob"])).json()["items"] == []
    # the admin sees and may cancel everyone's
    listed = secured.get("/jobs", headers=bearer(keys["root"])).json()["items"]
    assert [j["id"] for j in listed] == [other, jid]
    assert {j["owner"] for j in listed} == {"alice"}
    assert secured.post(f"/jobs/{jid}/cancel", headers=bearer(keys["root"])).status_code == 200


def test_not_found_answers_do_not_reveal_existence(secured, keys):
    jid = submit(secured, keys["alice"]).json()["id"]
    theirs = secured.get(f"/jobs/{jid}", headers=bearer(keys["bob"]))
    nobody = secured.get(f"/jobs/{jid + 1000}", headers=bearer(keys["bob"]))
    assert theirs.status_code == nobody.status_code == 404
    assert theirs.json()["detail"].replace(str(jid), "N") == \
        nobody.json()["detail"].replace(str(jid + 1000), "N")


def test_datasets_belong_to_their_uploader(secured, keys):
    def upload(key):
        return secured.post("/datasets", data={"name": "mine"}, headers=bearer(key),
                            files={"file": ("c.txt", CORPUS, "text/plain")})

    assert upload(keys["alice"]).status_code == 201
    names = lambda key: {d["name"] for d in  # noqa: E731
                         secured.get("/datasets", headers=bearer(key)).json()}
    assert "mine" in names(keys["alice"])
    assert "mine" not in names(keys["bob"])
    lm = {"model": "rnn_lm", "dataset": "mine", "hyperparameters": {"epochs": 1}}
    refused = secured.post("/jobs", json=lm, headers=bearer(keys["bob"]))
    assert refused.status_code == 422 and "unknown dataset" in refused.text
    assert secured.post("/jobs", json=lm, headers=bearer(keys["alice"])).status_code == 201
    # bob may pick the same name: names are per user, so a taken name reveals nothing
    assert upload(keys["bob"]).json()["ref"] == "mine@1"
    assert upload(keys["bob"]).json()["ref"] == "mine@2"  # his next version, not alice's


def test_idempotency_keys_are_per_user(secured, keys):
    a = secured.post("/jobs", json={"model": "mlp", "dataset": "digits"},
                     headers={**bearer(keys["alice"]), "Idempotency-Key": "k1"})
    b = secured.post("/jobs", json={"model": "mlp", "dataset": "digits"},
                     headers={**bearer(keys["bob"]), "Idempotency-Key": "k1"})
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"]


def test_queued_jobs_per_user_are_capped(secured, keys):
    for _ in range(3):
        assert submit(secured, keys["alice"]).status_code == 201
    refused = submit(secured, keys["alice"])
    assert refused.status_code == 429
    assert "3 queued jobs" in refused.json()["detail"]
    assert "TRAINYARD_MAX_QUEUED_JOBS_PER_USER" in refused.json()["detail"]
    assert submit(secured, keys["bob"]).status_code == 201  # a cap per user, not global


# ---- the dashboard's session -------------------------------------------------------------


def test_dashboard_session_cookie_and_csrf(secured, keys, store):
    assert secured.post("/auth/session", json={"key": "ty_nope"}).status_code == 401
    signed = secured.post("/auth/session", json={"key": keys["alice"]})
    assert signed.status_code == 201
    cookie = signed.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert keys["alice"] not in cookie
    csrf = signed.json()["csrf_token"]
    assert signed.json()["owner"] == "alice"
    # reads need only the cookie
    assert secured.get("/jobs").status_code == 200
    assert secured.get("/auth/session").json()["csrf_token"] == csrf
    # writes need the CSRF token too
    body = {"model": "mlp", "dataset": "digits"}
    no_token = secured.post("/jobs", json=body)
    assert no_token.status_code == 403 and "X-CSRF-Token" in no_token.json()["detail"]
    wrong = secured.post("/jobs", json=body, headers={"X-CSRF-Token": "x" * 43})
    assert wrong.status_code == 403
    made = secured.post("/jobs", json=body, headers={"X-CSRF-Token": csrf})
    assert made.status_code == 201 and store.get_job(made.json()["id"]).owner == "alice"
    # signing out ends the session (with the token, like any write)
    assert secured.delete("/auth/session").status_code == 403
    assert secured.delete("/auth/session", headers={"X-CSRF-Token": csrf}).status_code == 204
    secured.cookies.clear()
    assert secured.get("/jobs").status_code == 401


def test_revoking_a_key_ends_its_sessions(secured, keys, store):
    assert secured.post("/auth/session", json={"key": keys["bob"]}).status_code == 201
    assert secured.get("/jobs").status_code == 200
    store.revoke_api_key(next(k.id for k in store.list_api_keys() if k.owner == "bob"))
    assert secured.get("/jobs").status_code == 401


# ---- headers and body caps ---------------------------------------------------------------


def test_security_headers(secured, keys):
    for path, headers in (("/", {}), ("/jobs", bearer(keys["alice"])), ("/healthz", {})):
        response = secured.get(path, headers=headers)
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
        assert "frame-ancestors 'none'" in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
    assert secured.get("/jobs", headers=bearer(keys["alice"])).headers["cache-control"] == "no-store"


def test_request_bodies_are_capped(secured, keys):
    limit = secured.app.state.settings.max_request_bytes
    big = {"model": "mlp", "dataset": "digits", "name": "x" * (limit + 10)}
    declared = secured.post("/jobs", json=big, headers=bearer(keys["alice"]))
    assert declared.status_code == 413 and "request size limit" in declared.json()["detail"]

    def chunks():  # no Content-Length: counted as it arrives
        yield b'{"model": "mlp", "dataset": "digits", "name": "'
        for _ in range(limit // 1024 + 2):
            yield b"y" * 1024
        yield b'"}'

    streamed = secured.post("/jobs", content=chunks(), headers={
        **bearer(keys["alice"]), "Content-Type": "application/json"})
    assert streamed.status_code == 413
