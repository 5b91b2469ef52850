"""Retention, the reconciler's last step: finished jobs older than their status's
TRAINYARD_RETENTION_<STATUS>_DAYS are deleted with everything they left (Store.delete_jobs:
bounded batches, forks' parents and running sweeps' trials skipped).

Bounded work per pass: at most `retention_jobs_per_pass` jobs per status; a backlog goes over
the next passes. With no retention setting (the default) it costs no query. A failure is
logged and spoils no other step of the pass.
"""

from __future__ import annotations

import logging

from core.settings import Settings
from db.store import Store

log = logging.getLogger("trainyard.retention")


def retention_days(settings: Settings) -> dict[str, float]:
    """{status: days} for the statuses with a retention period (0/None: kept forever)."""
    days = {"failed": settings.retention_failed_days,
            "cancelled": settings.retention_cancelled_days,
            "succeeded": settings.retention_succeeded_days,
            "pruned": settings.retention_pruned_days}
    return {status: d for status, d in days.items() if d}


def apply_retention(store: Store, settings: Settings) -> list[int]:
    """One bounded retention pass; the ids deleted."""
    days = retention_days(settings)
    if not days:
        return []
    try:
        report = store.apply_retention(days, settings.retention_jobs_per_pass)
    except Exception:  # noqa: BLE001 - try again next pass
        log.warning("retention pass failed", exc_info=True)
        return []
    if report.deleted_ids:
        log.info("retention deleted %s jobs in %.2f s: %s", len(report.deleted_ids),
                 report.seconds, report.deleted_ids[:20])
    for refusal in report.skipped:
        log.debug("retention kept job %s: %s", refusal.job_id, refusal.reason)
    return report.deleted_ids
