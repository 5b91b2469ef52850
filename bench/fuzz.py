"""API fuzzing at scale: schemathesis against the service's own OpenAPI document.

    .venv/bin/python bench/fuzz.py                          # 1000 generated cases per operation
    .venv/bin/python bench/fuzz.py --examples 200 --seed 7  # a quicker run, another seed
    .venv/bin/python bench/fuzz.py --no-stateful            # each operation alone only

The larger sibling of tests/integration/test_fuzz.py, built by the same function
(`build_fuzz_app`): `create_app` on a SQLite file and the embedded file-system broker under a
temporary home (no worker, so submitted jobs stay queued), API keys required, every request
signed in with a non-admin user's key, that user's jobs 1-3 (metrics, a text, a checkpoint) and
uploaded dataset seeded, plus another user's job 4. The same four checks on every answer: no
server error (no 5xx, no exception out of the app), a declared status code, a declared
Content-Type, a body that validates against the declared schema. The requests go in-process
over ASGI, as in the test: the figures are about what the API answers, not about HTTP parsing,
and no job would be trained meanwhile.

The run is schemathesis's own engine (what `schemathesis run` drives), phase by phase:
examples (those the schema gives), coverage (boundaries, missing and mistyped parameters,
unsupported methods), fuzzing (--examples generated cases per operation, valid and invalid,
steered by what earlier answers returned, e.g. ids that exist) and stateful (sequences of calls
along links the engine infers, e.g. POST /jobs then GET /jobs/{job_id}). It keeps going after a
failure, so a run counts every failing case. Reproducible for a given --seed and version.

Prints, per operation, the cases tried in each phase, the status codes answered, failures and
seconds; writes bench/results/fuzz.json (or --out NAME); exits 1 when anything failed.
The dashboard's page and static files are not in the schema (`include_in_schema=False`), so
they are not fuzzed; no route streams forever.
"""

from __future__ import annotations

import argparse
import collections
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (puts the repository root on sys.path)

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)
PHASES = ("examples", "coverage", "fuzzing")


def build_app(home: Path) -> tuple[Any, dict[str, str]]:
    """The test's app and the headers that sign a request in (an API key)."""
    from tests.integration.test_fuzz import build_fuzz_app

    return build_fuzz_app(home)


def engine_config(args: argparse.Namespace, headers: dict[str, str]) -> Any:
    import schemathesis

    checks: dict[str, Any] = {"enabled": False}
    checks.update({name: {"enabled": True} for name in CHECKS})
    data: dict[str, Any] = {
        "seed": args.seed,
        "generation": {"max-examples": args.examples, "database": "none"},
        "phases": {"stateful": {"enabled": args.stateful}},
        "checks": checks,
        "continue-on-failure": True,
        "workers": 1,
        "cache": {"enabled": False},
    }
    if headers:
        data["headers"] = headers
    return schemathesis.Config.from_dict(data)


class Tally:
    """What the engine's events say, per operation and in total."""

    def __init__(self) -> None:
        self.operations: dict[str, dict[str, Any]] = {}
        self.stateful = {"scenarios": 0, "cases": 0, "statuses": collections.Counter(),
                         "failures": 0, "seconds": 0.0}
        self.failures: dict[tuple, dict[str, Any]] = {}
        self.errors: list[dict[str, Any]] = []

    def operation(self, label: str) -> dict[str, Any]:
        return self.operations.setdefault(label, {
            "cases": dict.fromkeys(PHASES, 0), "statuses": collections.Counter(),
            "failures": 0, "seconds": 0.0,
        })

    def scenario(self, event: Any) -> None:
        recorder = event.recorder
        phase = str(event.phase)
        statuses = collections.Counter(
            interaction.response.status_code
            for interaction in recorder.interactions.values()
            if interaction.response is not None
        )
        failing = []
        for case_id, nodes in recorder.checks.items():
            for node in nodes:
                if node.failure_info is not None:
                    failing.append((case_id, node))
        if phase == "stateful":
            target = self.stateful
            target["scenarios"] += 1
            target["cases"] += len(recorder.cases)
        else:
            target = self.operation(event.label)
            target["cases"][phase] += len(recorder.cases)
        target["statuses"].update(statuses)
        target["failures"] += len(failing)
        target["seconds"] += event.elapsed_time
        for case_id, node in failing:
            self.failure(phase, recorder, case_id, node)

    def failure(self, phase: str, recorder: Any, case_id: str, node: Any) -> None:
        failure = node.failure_info.failure
        case = recorder.cases[case_id].value if case_id in recorder.cases else None
        label = case.operation.label if case is not None else (failure.operation or "?")
        response = recorder.interactions.get(case_id)
        status = response.response.status_code if response and response.response else None
        key = (label, node.name, failure.title, status)
        entry = self.failures.setdefault(key, {
            "operation": label, "check": node.name, "code": getattr(failure, "code", None),
            "title": failure.title, "status": status, "phase": phase, "count": 0,
            "message": str(failure.message)[:500],
            "reproduce": node.failure_info.code_sample[:2000],
        })
        entry["count"] += 1

    def error(self, event: Any) -> None:
        self.errors.append({
            "operation": event.label, "phase": str(event.phase) if event.phase else None,
            "error": f"{type(event.value).__name__}: {str(event.value)[:500]}",
        })


def run(args: argparse.Namespace, extra_headers: dict[str, str]) -> tuple[Tally, float]:
    import schemathesis
    from schemathesis.engine import events, from_schema
    from schemathesis.python import asgi

    home = Path(tempfile.mkdtemp(prefix="trainyard-bench-fuzz-"))
    tally = Tally()
    try:
        app, headers = build_app(home)
        headers = {**headers, **extra_headers}
        # /openapi.json itself wants the key when keys are required.
        schema = schemathesis.openapi.from_asgi(
            "/openapi.json", app, config=engine_config(args, headers), headers=headers)
        started = time.perf_counter()
        try:
            for event in from_schema(schema).execute():
                if isinstance(event, events.ScenarioFinished):
                    tally.scenario(event)
                    if str(event.phase) != "stateful":
                        print(f"  {event.phase:<9} {event.label:<58} "
                              f"{len(event.recorder.cases):>5} cases "
                              f"{event.elapsed_time:6.2f} s", flush=True)
                elif isinstance(event, events.NonFatalError):
                    tally.error(event)
                    print(f"  error in {event.label}: {event.value!r}", flush=True)
                elif isinstance(event, events.FatalError):
                    raise RuntimeError(f"schemathesis stopped: {event.exception!r}")
                elif isinstance(event, events.PhaseStarted):
                    print(f"phase {event.phase.name}", flush=True)
        finally:
            seconds = time.perf_counter() - started
            asgi.shutdown_lifespans()  # the app closes its database before its folder goes
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return tally, seconds


def parse_headers(values: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for value in values:
        name, sep, content = value.partition(":")
        if not sep or not name.strip():
            raise SystemExit(f"--header wants 'Name: value', got {value!r}")
        headers[name.strip()] = content.strip()
    return headers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=1000,
                        help="generated cases per operation in the fuzzing phase")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-stateful", dest="stateful", action="store_false",
                        help="skip the stateful phase (sequences of calls)")
    parser.add_argument("--header", action="append", default=[],
                        help="'Name: value' sent with every request, on top of (or instead "
                        "of) the built-in user's Authorization (repeatable)")
    parser.add_argument("--out", default="fuzz", help="results file name, without .json")
    args = parser.parse_args()
    headers = parse_headers(args.header)
    # Broken multipart bodies are the point; the parser's warning for each is not.
    logging.getLogger("python_multipart").setLevel(logging.ERROR)
    logging.getLogger("kombu").setLevel(logging.ERROR)

    import hypothesis
    import schemathesis

    parameters = {"examples": args.examples, "seed": args.seed, "stateful": args.stateful,
                  "checks": list(CHECKS), "extra_headers": sorted(headers),
                  "identity": "a non-admin user's API key, keys required",
                  "schemathesis": schemathesis.__version__, "hypothesis": hypothesis.__version__,
                  "transport": "in-process ASGI", "database": "SQLite",
                  "broker": "embedded file system"}
    result = common.run_header("fuzz", parameters)
    tally, seconds = run(args, headers)

    operations = {}
    for label, op in sorted(tally.operations.items()):
        operations[label] = {
            "cases": {**op["cases"], "total": sum(op["cases"].values())},
            "statuses": {str(k): v for k, v in sorted(op["statuses"].items())},
            "failures": op["failures"], "seconds": round(op["seconds"], 2),
        }
    stateful = {**tally.stateful, "seconds": round(tally.stateful["seconds"], 2),
                "statuses": {str(k): v for k, v in sorted(tally.stateful["statuses"].items())}}
    cases = sum(op["cases"]["total"] for op in operations.values()) + stateful["cases"]
    failures = sum(op["failures"] for op in operations.values()) + stateful["failures"]
    result.update({
        "totals": {"operations": len(operations), "cases": cases, "failing_cases": failures,
                   "distinct_failures": len(tally.failures), "errors": len(tally.errors),
                   "server_errors_5xx": sum(v for op in operations.values()
                                            for k, v in op["statuses"].items()
                                            if k.startswith("5"))
                   + sum(v for k, v in stateful["statuses"].items() if k.startswith("5")),
                   "seconds": round(seconds, 1)},
        "operations": operations,
        "stateful": stateful,
        "failures": list(tally.failures.values()),
        "errors": tally.errors,
    })

    print()
    print(f"{'operation':<58} {'examples':>8} {'coverage':>8} {'fuzzing':>8} {'failures':>8} "
          f"{'seconds':>8}  statuses")
    for label, op in operations.items():
        c = op["cases"]
        statuses = " ".join(f"{k}:{v}" for k, v in op["statuses"].items())
        print(f"{label:<58} {c['examples']:>8} {c['coverage']:>8} {c['fuzzing']:>8} "
              f"{op['failures']:>8} {op['seconds']:>8.1f}  {statuses}")
    if args.stateful:
        statuses = " ".join(f"{k}:{v}" for k, v in stateful["statuses"].items())
        print(f"{'stateful: ' + str(stateful['scenarios']) + ' scenarios':<58} "
              f"{stateful['cases']:>8} cases {stateful['failures']:>12} "
              f"{stateful['seconds']:>8.1f}  {statuses}")
    totals = result["totals"]
    print(f"\n{totals['cases']} cases over {totals['operations']} operations in "
          f"{totals['seconds']} s: {totals['failing_cases']} failing "
          f"({totals['distinct_failures']} distinct), {totals['errors']} errors, "
          f"{totals['server_errors_5xx']} 5xx answers")
    for failure in tally.failures.values():
        print(f"\nFAILURE {failure['operation']}: {failure['check']} ({failure['title']}), "
              f"status {failure['status']}, {failure['count']}x\n{failure['reproduce']}")
    for error in tally.errors:
        print(f"\nERROR {error['operation']}: {error['error']}")
    path = common.write_results(args.out, result)
    print(f"wrote {path}")
    if failures or tally.errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
