"""`trainyard delete` (finished jobs, by id or by filter) and `trainyard usage`. Registered on
the main parser by trainyard/cli.py."""

from __future__ import annotations

import argparse
import sys

from trainyard.client import ApiError, Client
from trainyard.dataset_commands import _size

FINISHED_STATES = ("succeeded", "failed", "cancelled", "pruned")


def _statuses(raw: list[str] | None) -> list[str] | None:
    if not raw:
        return None
    return [s.strip() for item in raw for s in item.split(",") if s.strip()]


def _confirm(count: int) -> bool:
    if not sys.stdin.isatty():
        print("error: not a terminal: add --yes to delete without asking", file=sys.stderr)
        return False
    answer = input(f"delete {count} jobs with their metrics, checkpoints and logs? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def _print_skipped(result: dict) -> None:
    for item in result.get("skipped", []):
        print(f"  kept job {item['id']}: {item['reason']}")


def cmd_delete(args: argparse.Namespace, client: Client) -> int:
    has_filter = any(v is not None for v in (args.status, args.model, args.older_than,
                                             args.sweep))
    if args.jobs and has_filter:
        print("error: give job ids or a filter, not both", file=sys.stderr)
        return 2
    if args.jobs:
        code = 0
        for job_id in args.jobs:
            try:
                done = client.delete_job(job_id)
                print(f"deleted job {job_id} ({done.get('seconds', 0):.2f} s)")
            except ApiError as exc:
                print(f"error: job {job_id}: {exc}", file=sys.stderr)
                code = 2
        return code
    if not has_filter:
        print("error: give job ids, or a filter: --status, --model, --older-than, --sweep",
              file=sys.stderr)
        return 2
    filters = dict(status=_statuses(args.status), model=args.model,
                   older_than_days=args.older_than, sweep_id=args.sweep)
    plan = client.delete_jobs(**filters, dry_run=True)
    print(f"{plan['matched']} finished jobs match; {plan['deleted']} can be deleted, "
          f"{len(plan['skipped'])} kept")
    _print_skipped(plan)
    if args.dry_run or plan["deleted"] == 0:
        return 0
    if not args.yes and not _confirm(plan["deleted"]):
        return 1
    done = client.delete_jobs(**filters)
    print(f"deleted {done['deleted']} jobs ({done.get('seconds', 0):.1f} s)")
    _print_skipped(done)
    return 0


def cmd_usage(args: argparse.Namespace, client: Client) -> int:
    found = client.usage(args.owner)
    print(f"{'owner':<16} {'jobs':>6} {'running':>7} {'metric pts':>11} {'checkpoints':>12} "
          f"{'datasets':>10} {'log lines':>9}")
    for user in found["users"]:
        jobs = user["jobs"]
        active = jobs.get("running", 0) + jobs.get("queued", 0)
        print(f"{user['owner']:<16} {user['jobs_total']:>6} {active:>7} "
              f"{user['metric_points']:>11,} {_size(user['checkpoint_bytes']):>12} "
              f"{_size(user['dataset_bytes']):>10} {user['log_lines']:>9,}")
    db = found.get("database") or {}
    if db:
        print(f"database file: {_size(db['page_count'] * db['page_size'])}, "
              f"{_size(db['freelist_count'] * db['page_size'])} free")
    return 0


def add_delete_commands(sub: argparse._SubParsersAction, run) -> None:
    p = sub.add_parser("delete", help="delete finished jobs (by id, or by filter) with "
                       "their metrics, checkpoints and logs")
    p.add_argument("jobs", nargs="*", type=int, metavar="JOB", help="job ids")
    p.add_argument("--status", action="append", metavar="STATUS",
                   help=f"finished state(s), repeat or comma-separate: "
                   f"{', '.join(FINISHED_STATES)}")
    p.add_argument("--model", help="only jobs of this model family")
    p.add_argument("--older-than", type=float, metavar="DAYS",
                   help="only jobs that finished more than DAYS days ago")
    p.add_argument("--sweep", type=int, metavar="N", help="only trials of sweep N")
    p.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask")
    p.set_defaults(func=run(cmd_delete))
    u = sub.add_parser("usage", help="what each user stores (jobs, metric points, "
                       "checkpoint, dataset bytes, log lines)")
    u.add_argument("--owner", help="admins: one user (default: every user; others see "
                   "only their own)")
    u.set_defaults(func=run(cmd_usage))
