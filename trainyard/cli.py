"""The `trainyard` command: run the service (up, api, worker) and use it (submit, list, watch, ...)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import httpx

from core.logging_setup import LOG_LEVELS, configure_logging
from core.settings import Settings, get_settings
from trainyard.client import FINISHED, ApiError, Client
from trainyard.dataset_commands import add_dataset_commands
from trainyard.delete_commands import add_delete_commands
from trainyard.log_commands import add_log_commands
from trainyard.model_commands import add_model_commands
from trainyard.serve_commands import _positive_int, cmd_api, cmd_keys, cmd_up, cmd_worker
from trainyard.sweep_commands import add_sweep_commands
from trainyard.webhook_commands import add_webhook_commands


# ---------------------------------------------------------------- using the service
def _client(settings: Settings) -> Client:
    key = settings.api_key.get_secret_value() if settings.api_key else None
    return Client(settings.resolved_api_url, api_key=key)


def _with_client(command):
    """A command that takes (args, client) as one that takes (args, settings)."""
    def run(args, settings) -> int:
        with _client(settings) as client:
            return command(args, client)
    return run


def _parse_value(raw: str):
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw  # bare words such as relu or lstm


def _parse_hyperparameters(pairs: list[str]) -> dict:
    hp = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects key=value, got {pair!r}")
        hp[key.strip()] = _parse_value(value.strip())
    return hp


def _fmt_eta(seconds) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _parse_fork(raw: str | None, resume_optimizer: bool) -> dict | None:
    """--from JOB[:CHECKPOINT] (and --resume-optimizer) as POST /jobs' from_checkpoint."""
    if raw is None:
        if resume_optimizer:
            raise SystemExit("--resume-optimizer needs --from JOB[:CHECKPOINT]")
        return None
    job, sep, checkpoint = raw.partition(":")
    try:
        fork = {"job": int(job)}
        if sep:
            fork["checkpoint"] = int(checkpoint)
    except ValueError:
        raise SystemExit(f"--from expects JOB or JOB:CHECKPOINT (ids), got {raw!r}") from None
    if resume_optimizer:
        fork["resume_optimizer"] = True
    return fork


def cmd_submit(args, settings) -> int:
    hp = _parse_hyperparameters(args.set or [])
    fork = _parse_fork(args.from_checkpoint, args.resume_optimizer)
    with _client(settings) as client:
        job = client.submit(args.model, args.dataset, hp, name=args.name, device=args.device,
                            priority=args.priority, from_checkpoint=fork, gpus=args.gpus)
        print(f"job {job['id']} queued: {job['model']} on {job['dataset']}, priority "
              f"{job['priority']}" + (f", {job['gpus']} GPUs" if job.get("gpus", 1) > 1 else ""))
        parent = job.get("parent")
        if parent:
            print(f"forked from job {parent['job']} (checkpoint {parent['checkpoint']}, epoch "
                  f"{parent['epoch']}, step {parent['step']})")
        if args.watch:
            return _watch(client, job["id"])
    return 0


def cmd_priority(args, settings) -> int:
    with _client(settings) as client:
        job = client.set_priority(args.job_id, args.priority)
    print(f"job {job['id']} ({job['status']}): priority {job['priority']}")
    return 0


def cmd_list(args, settings) -> int:
    from rich.console import Console
    from rich.table import Table

    with _client(settings) as client:
        page = client.jobs(status=args.status, model=args.model, limit=args.limit)
    table = Table(title=f"{page['total']} jobs")
    # Narrow terminals wrap the long columns (name, best), never a status or a number.
    for column in ("id", "name", "model", "dataset", "status", "priority", "epoch", "best",
                   "created"):
        table.add_column(column, no_wrap=column in ("id", "status", "priority", "epoch"))
    for job in page["items"]:
        progress = job.get("progress") or {}
        best = job.get("best_metric") or {}
        table.add_row(
            str(job["id"]), job.get("name") or "", job["model"], job["dataset"],
            job["status"] + (f" #{job['queue_position']}" if job.get("queue_position") else ""),
            str(job.get("priority", 0)),
            f"{progress.get('epoch') or 0}/{progress.get('total_epochs') or '?'}",
            f"{best['name']} {best['value']:.4g}" if best.get("value") is not None else "-",
            (job.get("created_at") or "")[:16].replace("T", " "),
        )
    Console().print(table)
    return 0


def _queue_lines(job: dict) -> list[str]:
    """A queued job's place in line, why it waits and when it should start, for people."""
    queue = job.get("queue")
    if not queue:
        return []
    ahead = queue["jobs_ahead"]
    start = queue.get("estimated_start_seconds")
    return [
        f"queued: #{queue['position']} in queue, {ahead} job{'' if ahead == 1 else 's'} ahead",
        f"why: {queue['reason']['message']} ({queue['reason']['code']})",
        "estimated start: " + ("unknown" if start is None else f"in {_fmt_eta(start)}"),
    ]


def cmd_show(args, settings) -> int:
    with _client(settings) as client:
        job = client.job(args.job_id)
    print(json.dumps(job, indent=2))
    # The JSON stays alone on stdout (for jq and scripts); the summary goes to the terminal.
    for line in _queue_lines(job):
        print(line, file=sys.stderr)
    return 0


def _watch(client: Client, job_id: int) -> int:
    from rich.progress import BarColumn, Progress, TextColumn

    with Progress(TextColumn("job {task.fields[job]}"), BarColumn(),
                  TextColumn("epoch {task.completed:.0f}/{task.total:.0f}"),
                  TextColumn("{task.fields[status]}"), TextColumn("loss {task.fields[loss]}"),
                  TextColumn("ETA {task.fields[eta]}")) as progress:
        task = progress.add_task("train", total=1, job=job_id, status="", loss="-", eta="-")
        while True:
            job = client.job(job_id)
            p = job.get("progress") or {}
            metrics = job.get("latest_metrics") or {}
            loss = metrics.get("train_loss")
            progress.update(
                task, total=p.get("total_epochs") or 1,
                completed=(p.get("step") or 0) / max(1, p.get("total_steps") or 1)
                * (p.get("total_epochs") or 1),
                status=job["status"], loss=f"{loss:.4f}" if loss is not None else "-",
                eta=_fmt_eta(p.get("eta_seconds")),
            )
            if job["status"] in FINISHED:
                break
            time.sleep(1.0)
    summary = ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items())
                        if v is not None and (k == "train_loss" or k.startswith("val_")))
    print(f"job {job_id} {job['status']}" + (f": {summary}" if summary else ""))
    if job.get("error"):
        print(job["error"], file=sys.stderr)
    return 0 if job["status"] == "succeeded" else 1


def cmd_watch(args, settings) -> int:
    with _client(settings) as client:
        return _watch(client, args.job_id)


def cmd_cancel(args, settings) -> int:
    with _client(settings) as client:
        job = client.cancel(args.job_id)
    print(f"job {job['id']} {job['status']}")
    return 0


def cmd_compare(args, settings) -> int:
    from rich.console import Console
    from rich.table import Table

    with _client(settings) as client:
        result = client.compare(args.job_ids)
    runs, differing = result["runs"], result["differing"]
    metric_names = sorted({m for run in runs for m in run["final"] if not m.startswith("grad_norm/")
                           and m not in ("lr", "samples_per_s", "tokens_per_s")})
    table = Table(title="differing: " + (", ".join(differing) or "nothing"))
    table.add_column("run")
    for key in differing:
        table.add_column(key)
    for name in metric_names:
        table.add_column(f"{name} final/best")
    for run in runs:
        config = {"model": run["model"], "dataset": run.get("dataset"), **run["hyperparameters"]}
        row = [f"{run['id']} {run.get('name') or ''}".strip()]
        row += [json.dumps(config.get(key)) for key in differing]
        for name in metric_names:
            final, best = run["final"].get(name), run["best"].get(name)
            row.append("-" if final is None else f"{final:.4g} / {best:.4g}")
        table.add_row(*row)
    Console().print(table)
    return 0


def cmd_models(args, settings) -> int:
    with _client(settings) as client:
        print(json.dumps(client.models(), indent=2))
    return 0


def _hardware(worker: dict) -> str:
    """The worker's device class, with its GPU and the GPU's memory where it has one."""
    if not worker.get("gpu_name"):
        return worker["device_class"]
    memory = worker.get("gpu_memory_bytes")
    size = f" ({memory / 2**30:.0f} GiB)" if memory else ""
    return f"{worker['device_class']}: {worker['gpu_name']}{size}"


def cmd_workers(args, settings) -> int:
    from rich.console import Console
    from rich.table import Table

    with _client(settings) as client:
        if args.drain:
            worker = client.drain_worker(args.drain)
            job = (f"; job {worker['job_id']} goes back to the queue at its next step"
                   if worker.get("job_id") else "")
            print(f"worker {worker['name']} is draining: it takes no new job{job}; it serves "
                  "again once its process restarts")
            return 0
        workers = client.workers()
    table = Table(title=f"{len(workers)} workers")
    for column in ("name", "state", "job", "device", "torch", "heartbeat", "jobs done",
                   "infra failures", "queues"):
        table.add_column(column)
    for w in workers:
        table.add_row(
            w["name"], w["state"], str(w["job_id"]) if w.get("job_id") else "-", _hardware(w),
            w.get("torch_version") or "-", f"{_fmt_eta(w['seen_seconds_ago'])} ago",
            str(w["jobs_done"]), str(w["infra_failures"]), ",".join(w["queues"]))
    Console().print(table)
    return 0


# ---------------------------------------------------------------- argument parsing
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainyard", description=__doc__)
    parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS,
                        help="least severe log lines shown (default INFO, or "
                        "TRAINYARD_LOG_LEVEL); TRAINYARD_LOG_FORMAT=json for JSON lines")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("up", help="embedded mode: API, dashboard and a worker on this machine")
    p.add_argument("--port", type=int)
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("api", help="run the HTTP API and dashboard")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=_positive_int, default=1,
                   help="API processes serving the same port (default 1)")
    p.set_defaults(func=cmd_api)

    p = sub.add_parser("keys", help="create, list or revoke API keys (on the database directly)")
    keys = p.add_subparsers(dest="keys_command", required=True)
    k = keys.add_parser("create", help="make a key for a user; it is printed once")
    k.add_argument("--name", required=True, help="the user the key acts for")
    k.add_argument("--admin", action="store_true", help="may see and cancel everyone's jobs")
    keys.add_parser("list", help="every key: owner, prefix, admin, last use, revoked")
    k = keys.add_parser("revoke", help="revoke a key by id (see keys list)")
    k.add_argument("key_id", type=int)
    p.set_defaults(func=cmd_keys)

    p = sub.add_parser("worker", help="run a training worker (joins the service in your settings)")
    p.add_argument("--queues", help="comma-separated: cpu,cuda,auto (default: what this machine can run)")
    p.add_argument("--name", help="node name (default worker-<pid>@<host>); with --jobs N the "
                   "processes are <name>-0 ... <name>-(N-1)")
    p.add_argument("--jobs", type=_positive_int, default=1, metavar="N",
                   help="run N jobs at once, each in its own worker process (default 1); GPUs "
                   "are shared out between them")
    p.add_argument("--gpus", metavar="0,1,...",
                   help="the GPUs this worker uses (default: every visible one); with --jobs "
                   "N each process gets its share")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("submit", help="queue a training job")
    p.add_argument("model", help="mlp, cnn or rnn_lm")
    p.add_argument("--dataset", required=True)
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a hyperparameter; values are JSON (lr=1e-3, hidden_sizes=[64,64]) or words")
    p.add_argument("--name")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--priority", type=int, default=0,
                   help="-100 to 100, higher runs first (users: at most 10 unless admin)")
    p.add_argument("--gpus", type=_positive_int, default=1, metavar="K",
                   help="train on K GPUs at once (DistributedDataParallel; on a CPU worker, K "
                   "processes); default 1")
    p.add_argument("--from", dest="from_checkpoint", metavar="JOB[:CHECKPOINT]",
                   help="fork a run: start from that job's checkpoint (default: its newest); "
                   "--set only what changes, the rest is the parent's")
    p.add_argument("--resume-optimizer", action="store_true",
                   help="with --from: take the parent's optimizer state too")
    p.add_argument("--watch", action="store_true", help="follow the job until it ends")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("priority", help="change a queued or running job's priority")
    p.add_argument("job_id", type=int)
    p.add_argument("priority", type=int, help="-100 to 100, higher runs first")
    p.set_defaults(func=cmd_priority)

    p = sub.add_parser("list", help="list jobs, newest first")
    p.add_argument("--status")
    p.add_argument("--model")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_list)

    for name, func, text in (("show", cmd_show, "a job as JSON"),
                             ("watch", cmd_watch, "a live progress bar until the job ends"),
                             ("cancel", cmd_cancel, "cancel a queued or running job")):
        p = sub.add_parser(name, help=text)
        p.add_argument("job_id", type=int)
        p.set_defaults(func=func)

    p = sub.add_parser("compare", help="compare runs: differing hyperparameters, final/best metrics")
    p.add_argument("job_ids", type=int, nargs="+")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("workers", help="list the workers: state, job, GPU, last heartbeat")
    p.add_argument("--drain", metavar="NAME",
                   help="admin: the worker gives its job back at the next step (it resumes "
                   "elsewhere) and takes no new one")
    p.set_defaults(func=cmd_workers)

    p = sub.add_parser("models", help="the model catalogue with every hyperparameter's range")
    p.set_defaults(func=cmd_models)

    add_sweep_commands(sub, _with_client)
    add_model_commands(sub, _with_client)
    add_dataset_commands(sub, _with_client)
    add_delete_commands(sub, _with_client)
    add_webhook_commands(sub, _with_client)
    add_log_commands(sub, _with_client)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.log_level:
        # Through the environment, so the processes this one starts (up's worker) log alike.
        os.environ["TRAINYARD_LOG_LEVEL"] = args.log_level.upper()
        get_settings.cache_clear()
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        code = args.func(args, settings)
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    except httpx.TransportError as exc:  # connection refused and friends: say where we looked
        print(f"error: cannot reach the API at {settings.resolved_api_url} ({exc}); "
              "start it with `trainyard up` or set TRAINYARD_API_URL", file=sys.stderr)
        code = 2
    sys.exit(code)
