"""Running the service: `trainyard up` (embedded), `trainyard api`, `trainyard worker`, and the
operator's `trainyard keys` (on the database directly)."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys

from core.logging_setup import configure_logging
from core.settings import Settings, get_settings
from trainyard.worker_pool import SUPERVISED_ENV


def _store(settings: Settings):
    """The database of these settings, migrated to the newest schema."""
    from db.store import Store

    store = Store(settings.resolved_database_url)
    store.migrate()
    return store


def _migrate(settings: Settings) -> None:
    _store(settings).close()


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from api.main import create_app

    host = args.host or settings.api_host
    port = args.port or settings.api_port
    # The app decides whether keys are required from the address it is bound to.
    settings = settings.model_copy(update={"api_host": host})
    log_level = getattr(args, "server_log_level", None) or settings.log_level.lower()
    # uvicorn's loggers write through ours (core/logging_setup.py): log_config=None. A line
    # per request only where asked for: `trainyard api` yes, `up` (a person's terminal) at DEBUG.
    access_log = getattr(args, "access_log", True)
    if args.workers == 1:
        uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level,
                    log_config=None, access_log=access_log)
        return 0
    # Several processes on one socket. Each builds its app from TRAINYARD_* (uvicorn starts
    # them from an import string), so what the command line chose goes through the
    # environment. Migrating and registering TRAINYARD_ADMIN_KEY happen here, once, before
    # any of them starts: N lifespans doing it at once would race to insert the same key, and
    # a refusal to start (open to the network without keys) must stop the command rather
    # than have uvicorn restart dying workers. Each process's lifespan then finds the schema
    # at head and the key present; each runs its own reconciler, safe together as the
    # workers' are, and keeps its own caches (finished curves only, which never change).
    os.environ["TRAINYARD_API_HOST"] = host
    os.environ["TRAINYARD_API_PORT"] = str(port)
    from api.security import prepare_auth

    store = _store(settings)
    try:
        prepare_auth(settings, store)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    # GET /metrics sums the request figures of every process from files in this folder.
    from api.request_metrics import prepare_multiprocess_dir
    prepare_multiprocess_dir(settings.home, port)
    uvicorn.run("trainyard.serve_commands:api_worker_app", factory=True, workers=args.workers, host=host,
                port=port, log_level=log_level, log_config=None, access_log=access_log)
    return 0


def api_worker_app():
    """The app of one `trainyard api --workers N` process (uvicorn's factory): the same as
    `trainyard api` builds, from the environment, with the command's log format."""
    from api.main import create_app

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)


# ---------------------------------------------------------------- API keys (operator)


def cmd_keys(args: argparse.Namespace, settings: Settings) -> int:
    """Keys are managed on the database directly: whoever can run this is the operator."""
    import re

    from api.security import OWNER_PATTERN, new_api_key

    store = _store(settings)
    try:
        if args.keys_command == "create":
            if not re.fullmatch(OWNER_PATTERN, args.name):
                print("error: --name must be 1-100 characters of letters, digits, '.', '_', "
                      "'@' or '-', starting with a letter or digit", file=sys.stderr)
                return 2
            key, prefix, digest = new_api_key()
            record = store.add_api_key(args.name, prefix, digest, is_admin=args.admin)
            role = "admin key" if args.admin else "key"
            print(f"created {role} {record.id} for {record.owner}; it is shown only this once:")
            print(key)
            print("use it as: export TRAINYARD_API_KEY=<key>  (or Authorization: Bearer <key>)",
                  file=sys.stderr)
        elif args.keys_command == "list":
            print(f"{'id':>4}  {'owner':<20} {'prefix':<10} {'admin':<5}  {'created':<20} "
                  f"{'last used':<20} revoked")
            for k in store.list_api_keys():
                when = lambda t: t.strftime("%Y-%m-%d %H:%M:%S") if t else "-"  # noqa: E731
                print(f"{k.id:>4}  {k.owner:<20} {k.prefix:<10} {'yes' if k.is_admin else 'no':<5}"
                      f"  {when(k.created_at):<20} {when(k.last_used_at):<20} "
                      f"{when(k.revoked_at)}")
        else:  # revoke
            from db.store import NotFound

            try:
                record = store.revoke_api_key(args.key_id)
            except NotFound as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            print(f"revoked key {record.id} of {record.owner}; its dashboard sessions ended")
    finally:
        store.close()
    return 0


def _default_queues() -> str:
    import torch

    # A worker serves the queues its hardware can run.
    return "cpu,cuda,auto" if torch.cuda.is_available() else "cpu,auto"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _exit_with_parent() -> None:
    """Ask Linux to send this process SIGTERM (a drain) when its parent, `up`, dies."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() == 1:  # the parent died before we asked
        raise SystemExit("trainyard worker: the process that started it is gone")


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    import worker.lifecycle  # noqa: F401  (starts the reconciler and presence beat with it)
    import worker.tasks  # noqa: F401  (registers the task with whichever app runs)
    from worker.celery_app import make_celery

    if args.gpus is not None:
        # Before anything initialises CUDA: this process (or its children) see only these.
        os.environ["CUDA_VISIBLE_DEVICES"] = args.gpus
    # torch.compile's kernels, kept on disk: a later job of the same shapes, in any worker
    # process of this host, reuses them (a digits MLP: 45 s of compiling became 3 s on a CPU).
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(settings.home / "compile-cache"))
    if os.environ.get(SUPERVISED_ENV):
        _exit_with_parent()
    _migrate(settings)
    queues = args.queues or settings.worker_queues or _default_queues()
    # A unique node name per process, so several workers on one host can join the same service.
    name = args.name or f"worker-{os.getpid()}@{socket.gethostname()}"
    if args.jobs > 1:
        from trainyard.worker_pool import WorkerPool, visible_gpus

        gpus = visible_gpus(args.gpus) if "cuda" in queues.split(",") else []
        return WorkerPool(args.jobs, name, gpus, ["--queues", queues],
                          settings.torch_threads).run()
    if settings.torch_threads > 0:
        import torch

        torch.set_num_threads(settings.torch_threads)
    argv = [
        # -q: no banner (the line printed below says what a person needs), except at DEBUG
        *(["-q"] if settings.log_level != "DEBUG" else []),
        "worker",
        "--pool=solo",  # one job per worker process: scale with more workers, not threads
        "--concurrency=1",
        f"--queues={queues}",
        f"--hostname={name}",
        f"--loglevel={settings.log_level}",
        "--without-mingle",
        "--without-gossip",
    ]
    if settings.embedded_broker:
        argv.append("--without-heartbeat")
    print(f"trainyard worker {name}: queues {queues}, broker "
          f"{'embedded file-system queue at ' + str(settings.broker_dir) if settings.embedded_broker else 'redis'}",
          flush=True)
    # The reconciler and the presence beat start with the consumer (worker/lifecycle.py).
    make_celery(settings).worker_main(argv)
    return 0


def up_banner(settings: Settings) -> str:
    """What a person needs from `trainyard up`: where to go, whether keys are needed, where
    everything is kept."""
    from api.lifespan import redacted_url
    from api.security import keys_required

    url = settings.resolved_api_url
    if keys_required(settings):
        keys = "required: sign in on the dashboard, or send Authorization: Bearer <key>"
    else:
        keys = (f"not required: the API listens on {settings.api_host} only, so anyone on "
                "this machine can use it")
    broker = (f"embedded, in {settings.broker_dir}" if settings.embedded_broker
              else "redis")
    rows = [
        ("dashboard", f"{url}/"),
        ("API docs", f"{url}/docs"),
        ("keys", keys),
        ("database", redacted_url(settings.resolved_database_url)),
        ("queue", broker),
        ("state", f"{settings.home} (datasets cache, broker, compiled kernels)"),
        ("job logs", "`trainyard logs JOB -f`, or the job's page"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"  {name:<{width}}  {value}" for name, value in rows]
    return "\n".join(["Trainyard is up (embedded): API, dashboard and one worker", *lines,
                      "  stop with Ctrl-C"])


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    """Embedded mode: API + dashboard in this process, one supervised worker beside it."""
    from trainyard.supervisor import Supervisor

    settings.home.mkdir(parents=True, exist_ok=True)
    if args.port:
        settings = settings.model_copy(update={"api_port": args.port})
    _migrate(settings)
    env = dict(os.environ, TRAINYARD_HOME=str(settings.home))
    # A worker that dies (a crash, the OOM killer, kill -9) is started again.
    # Its own session: Ctrl-C reaches only this process, which then drains the worker (SIGTERM)
    # instead of racing the supervisor; TRAINYARD_SUPERVISED makes it exit if we die.
    env[SUPERVISED_ENV] = "1"
    worker = Supervisor("worker", lambda: subprocess.Popen(
        [sys.executable, "-m", "trainyard", "worker"], env=env, start_new_session=True)).start()
    print(up_banner(settings), flush=True)
    try:
        # uvicorn's start-up lines repeat the banner: below DEBUG, only its warnings.
        debugging = settings.log_level == "DEBUG"
        return cmd_api(argparse.Namespace(host=None, port=settings.api_port, workers=1,
                                          access_log=debugging,
                                          server_log_level=None if debugging else "warning"),
                       settings)
    finally:
        worker.stop()
