"""Why a job is not running: turns the facts of ``job_explain`` into plain reasons."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

__all__ = ["JobDiagnosis", "diagnose"]


@dataclass(frozen=True, slots=True)
class JobDiagnosis:
    """Whether a job can start now and, if not, every reason holding it back.

    ``reasons`` are short sentences for people; ``codes`` the same reasons as stable
    identifiers for programs: ``not_waiting``, ``start_time``, ``group_limit``,
    ``rate_limit``, ``fairness_turn``, ``waiting_for_worker``.
    """

    job_id: uuid.UUID
    state: str
    runnable: bool
    codes: list[str]
    reasons: list[str]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "job_id": str(self.job_id),
            "state": self.state,
            "runnable": self.runnable,
            "codes": self.codes,
            "reasons": self.reasons,
        }


def _in(now: datetime, at: datetime) -> str:
    seconds = (at - now).total_seconds()
    return f"{at.isoformat(timespec='seconds')} (in {seconds:.1f}s)"


def diagnose(row: dict[str, Any]) -> JobDiagnosis:
    """Build the diagnosis from a ``job_explain`` row."""
    state: str = row["state"]
    now: datetime = row["now"]
    codes: list[str] = []
    reasons: list[str] = []

    def hold(code: str, reason: str) -> None:
        codes.append(code)
        reasons.append(reason)

    if state not in ("queued", "retrying"):
        hold("not_waiting", f"the job is {state}, not waiting to run")
        return JobDiagnosis(row["id"], state, False, codes, reasons)
    if row["start_after"] > now:
        what = "retry is due" if state == "retrying" else "start time is"
        hold("start_time", f"its {what} {_in(now, row['start_after'])}")
    if row["group_key"] is not None and row["group_active"] >= row["group_limit"]:
        hold(
            "group_limit",
            f"held by its group limit: group {row['group_key']!r} has "
            f"{row['group_active']} of {row['group_limit']} jobs active",
        )
    available = row["rate_available"]
    if available is not None and available < 1:
        per_token = row["rate_interval_s"] / row["rate_capacity"]
        next_token = now + timedelta(seconds=(1 - available) * per_token)
        hold(
            "rate_limit",
            f"held by rate limit {row['rate_key']!r} ({row['rate_capacity']} starts per "
            f"{row['rate_interval_s']:g}s): next start allowed at {_in(now, next_token)}",
        )
    if not codes and row["fair"] and row["ahead_in_key"]:
        hold(
            "fairness_turn",
            f"waiting for its fairness turn: {row['ahead_in_key']} job(s) of key "
            f"{row['fairness_key']!r} are ahead of it",
        )
    elif not codes and row["ahead"]:
        hold(
            "waiting_for_worker",
            f"waiting for a free worker: {row['ahead']} runnable job(s) are ahead of it",
        )
    runnable = not codes or codes == ["waiting_for_worker"] or codes == ["fairness_turn"]
    if not codes:
        reasons.append("runnable now: the next free worker of its queue takes it")
    return JobDiagnosis(row["id"], state, runnable, codes, reasons)
