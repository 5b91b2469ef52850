"""`trainyard logs JOB [-f]`: a job's log (what its worker did, what its training logged), read
with GET /jobs/{id}/logs; -f follows it until the job ends. Registered by trainyard/cli.py."""

from __future__ import annotations

import argparse
import sys
import time

from trainyard.client import Client

PAGE = 1000  # lines per request
ACTIVE = ("queued", "running")


def format_line(line: dict) -> str:
    """One log line as the terminal shows it: time (UTC), level, attempt, source, message."""
    when = str(line.get("time", ""))[:19].replace("T", " ")
    attempt = line.get("attempt")
    source = str(line.get("source", "")).removeprefix("trainyard.")
    where = f"#{attempt} {source}" if attempt is not None else source
    return f"{when} {line.get('level', ''):<7} {where}: {line.get('message', '')}"


def follow_logs(client: Client, job_id: int, *, after: int = 0, follow: bool = False,
                interval: float = 1.0, out=None) -> str:
    """Print the job's lines after `after`; with `follow`, keep polling until the job has
    ended (and one read after that brought nothing new). Returns the job's status."""
    out = out or sys.stdout
    ended_reads = 0
    while True:
        page = client.logs(job_id, after=after, limit=PAGE)
        for line in page["lines"]:
            print(format_line(line), file=out, flush=True)
        after = page["next_after"]
        if len(page["lines"]) == PAGE:
            continue  # more already waiting
        if not follow:
            return page["job_status"]
        if page["job_status"] not in ACTIVE:
            ended_reads += 1
            # one more read after the end: a cancelled job's worker says how it stopped
            # a moment after the cancel ended the job
            if ended_reads > 1:
                return page["job_status"]
        time.sleep(interval)


def cmd_logs(args: argparse.Namespace, client: Client) -> int:
    try:
        status = follow_logs(client, args.job_id, after=args.after, follow=args.follow,
                             interval=args.interval)
    except KeyboardInterrupt:
        return 130
    if args.follow:
        print(f"job {args.job_id} {status}", file=sys.stderr)
    return 0


def add_log_commands(sub: argparse._SubParsersAction, run) -> None:
    p = sub.add_parser("logs", help="a job's log: what its worker did and what its training "
                       "logged (-f: follow it until the job ends)")
    p.add_argument("job_id", type=int, metavar="JOB")
    p.add_argument("-f", "--follow", action="store_true",
                   help="keep printing new lines until the job has ended")
    p.add_argument("--after", type=int, default=0, metavar="ID",
                   help="only lines after this line id")
    p.add_argument("--interval", type=float, default=1.0, metavar="S",
                   help="with -f: seconds between reads (default 1)")
    p.set_defaults(func=run(cmd_logs))
