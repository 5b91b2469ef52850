"""`trainyard sweep ...`: create a sweep from a YAML or JSON spec, follow it live, list and
cancel sweeps. Registered on the main parser by trainyard/cli.py (`add_sweep_commands`)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from trainyard.client import Client

ENDED = ("succeeded", "failed", "cancelled")


def read_spec(path: str) -> dict[str, Any]:
    """A sweep spec from a YAML or JSON file (`-`: standard input); JSON is YAML too."""
    raw = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    try:
        spec = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise SystemExit(f"{path}: not YAML or JSON: {exc}") from exc
    if not isinstance(spec, dict):
        raise SystemExit(f"{path}: a sweep spec is a mapping (model, dataset, space, ...)")
    return spec


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def sweep_table(sweep: dict[str, Any], limit: int = 30):
    """The sweep as rich renderables: a progress bar of its trials and a table of the best
    `limit` trials by objective (then the running ones)."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    goal, metric = sweep["objective"]["goal"], sweep["objective"]["metric"]
    counts = ", ".join(f"{n} {status}" for status, n in sorted(sweep["counts"].items()))
    done = sum(n for status, n in sweep["counts"].items() if status not in ("queued", "running"))
    head = Text(f"sweep {sweep['id']} {sweep['name']}: {sweep['status']}, "
                f"{done}/{sweep['max_trials']} trials done ({counts or 'none yet'}); "
                f"{goal} {metric}")
    bar = ProgressBar(total=sweep["max_trials"], completed=done, width=50)
    sign = -1 if goal == "max" else 1
    trials = sorted(sweep.get("trials", []), key=lambda t: (
        t["objective"] is None, sign * (t["objective"] or 0), t["number"]))
    params = list(sweep["space"])
    table = Table()
    for column in ("trial", "job", "status", *params, metric, "epoch"):
        table.add_column(column, no_wrap=column in ("trial", "job", "status", "epoch"))
    for t in trials[:limit]:
        objective = t["objective"] if t["objective"] is not None else t["last_objective"]
        shown = "-" if objective is None else f"{objective:.4f}"
        if t["objective"] is None and objective is not None:
            shown += " (so far)"
        table.add_row(str(t["number"]), str(t["job_id"]), t["status"],
                      *(_value(t["params"].get(p)) for p in params), shown,
                      str(t["pruned_at_epoch"] or t["epoch"]))
    parts = [head, bar, table]
    best = sweep.get("best")
    if best:
        parts.append(Text(f"best: trial {best['number']} (job {best['job_id']}) {metric} "
                          f"{best['objective']:.4f} with " + ", ".join(
                              f"{k}={_value(v)}" for k, v in best["params"].items())))
    if sweep.get("error"):
        parts.append(Text(f"error: {sweep['error']}", style="red"))
    return Group(*parts)


def follow(client: Client, sweep_id: int, watch: bool, poll: float = 2.0) -> int:
    from rich.console import Console
    from rich.live import Live

    sweep = client.sweep_status(sweep_id)
    if not watch:
        Console().print(sweep_table(sweep))
    else:
        with Live(sweep_table(sweep), refresh_per_second=2) as live:
            while sweep["status"] not in ENDED:
                time.sleep(poll)
                sweep = client.sweep_status(sweep_id)
                live.update(sweep_table(sweep))
    return 1 if sweep["status"] == "failed" else 0


def cmd_sweep_create(args, client: Client) -> int:
    sweep = client.sweep(**read_spec(args.spec))
    print(f"sweep {sweep['id']} created: {sweep['method']}, {sweep['max_trials']} trials, "
          f"{sweep['launched']} launched", file=sys.stderr)
    return follow(client, sweep["id"], args.watch) if args.watch else 0


def cmd_sweep_show(args, client: Client) -> int:
    if args.json:
        print(json.dumps(client.sweep_status(args.sweep_id), indent=2))
        return 0
    return follow(client, args.sweep_id, args.watch)


def cmd_sweep_list(args, client: Client) -> int:
    from rich.console import Console
    from rich.table import Table

    page = client.sweeps(status=args.status)
    table = Table(title=f"{page['total']} sweeps")
    for column in ("id", "name", "model", "method", "status", "trials", "best"):
        table.add_column(column, no_wrap=column != "name")
    for s in page["items"]:
        best = s.get("best")
        table.add_row(str(s["id"]), s["name"], s["model"], s["method"], s["status"],
                      f"{s['launched']}/{s['max_trials']}",
                      f"{s['objective']['metric']} {best['objective']:.4f}" if best else "-")
    Console().print(table)
    return 0


def cmd_sweep_cancel(args, client: Client) -> int:
    sweep = client.cancel_sweep(args.sweep_id)
    print(f"sweep {sweep['id']} {sweep['status']}")
    return 0


def add_sweep_commands(sub: argparse._SubParsersAction, run) -> None:
    """`trainyard sweep create|show|list|cancel`; `run(func)` wraps a command that takes
    (args, client) into one that takes (args, settings)."""
    p = sub.add_parser("sweep", help="hyperparameter sweeps: create, show (live), list, cancel")
    sweep = p.add_subparsers(dest="sweep_command", required=True)
    c = sweep.add_parser("create", help="create a sweep from a YAML or JSON spec (- = stdin)")
    c.add_argument("spec")
    c.add_argument("--watch", action="store_true", help="then follow it live until it ends")
    c.set_defaults(func=run(cmd_sweep_create))
    c = sweep.add_parser("show", help="a sweep's trials, best first, with a progress bar")
    c.add_argument("sweep_id", type=int)
    c.add_argument("--watch", action="store_true", help="refresh live until the sweep ends")
    c.add_argument("--json", action="store_true", help="the whole answer as JSON")
    c.set_defaults(func=run(cmd_sweep_show))
    c = sweep.add_parser("list", help="sweeps, newest first")
    c.add_argument("--status", choices=ENDED + ("running",))
    c.set_defaults(func=run(cmd_sweep_list))
    c = sweep.add_parser("cancel", help="cancel a sweep and its queued and running trials")
    c.add_argument("sweep_id", type=int)
    c.set_defaults(func=run(cmd_sweep_cancel))
