"""`trainyard webhooks`: register a webhook, list yours, see a webhook's deliveries, delete one.
Registered on the main parser by trainyard/cli.py."""

from __future__ import annotations

import argparse

from trainyard.client import Client


def cmd_webhooks(args: argparse.Namespace, client: Client) -> int:
    if args.action == "add":
        events = [e.strip() for e in args.events.split(",") if e.strip()]
        hook = client.add_webhook(args.url, events, secret=args.secret)
        print(f"webhook {hook['id']} -> {hook['url']} for {', '.join(hook['events'])}")
        print(f"secret: {hook['secret']}  (shown once: verify X-Trainyard-Signature with it)")
        return 0
    if args.action == "delete":
        client.delete_webhook(args.id)
        print(f"deleted webhook {args.id}")
        return 0
    if args.action == "deliveries":
        rows = client.webhook_deliveries(args.id, limit=args.limit)
        for d in rows:
            answer = d.get("last_status_code") or d.get("last_error") or ""
            print(f"{d['created_at'][:19]}  {d['event_type']:<15} {d['subject']:<12} "
                  f"{d['status']:<9} attempts {d['attempts']:<3} {answer}  {d['event_id']}")
        if not rows:
            print("no deliveries yet")
        return 0
    for hook in client.webhooks():
        print(f"{hook['id']:>4}  {hook['url']}  {','.join(hook['events'])}")
    return 0


def add_webhook_commands(sub: argparse._SubParsersAction, run) -> None:
    p = sub.add_parser("webhooks", help="be told when your jobs and sweeps end (webhooks)")
    actions = p.add_subparsers(dest="action")
    add = actions.add_parser("add", help="register a webhook (prints its secret once)")
    add.add_argument("url", help="http(s) URL the events are POSTed to")
    add.add_argument("--events", required=True,
                     help="comma-separated, e.g. job.succeeded,job.failed,sweep.finished")
    add.add_argument("--secret", help="signing key (16+ characters); default: generated")
    actions.add_parser("list", help="your webhooks")
    delete = actions.add_parser("delete", help="delete a webhook")
    delete.add_argument("id", type=int)
    deliveries = actions.add_parser("deliveries", help="a webhook's recent deliveries")
    deliveries.add_argument("id", type=int)
    deliveries.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=run(cmd_webhooks), action="list")
