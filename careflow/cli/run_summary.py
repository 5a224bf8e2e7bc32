"""What one care run did, kept apart from what earlier runs had already done.

Running a day again finds the same occasions and records nothing twice; its summary must
not count the messages of earlier runs as sent again. ``careflow run`` and ``careflow demo``
print these tables.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from rich.table import Table
from sqlalchemy import func, select

from careflow.planning.plan import PlanReport
from careflow.runtime import Runtime
from careflow.storage.models import CareEvent, EventStatus

_CHUNK = 1_000  # keys per IN (...) list: well under every database's parameter limit


def status_counts(
    runtime: Runtime, *, keys: Sequence[str] = (), ids: Sequence[int] = ()
) -> Counter[tuple[str, str]]:
    """(plugin, status) counts of the events with these idempotency keys or ids, as they are now."""
    counts: Counter[tuple[str, str]] = Counter()
    with runtime.sessions() as session:
        for column, values in ((CareEvent.idempotency_key, list(keys)), (CareEvent.id, list(ids))):
            for start in range(0, len(values), _CHUNK):
                rows = session.execute(
                    select(CareEvent.plugin, CareEvent.status, func.count())
                    .where(column.in_(values[start : start + _CHUNK]))
                    .group_by(CareEvent.plugin, CareEvent.status)
                )
                for plugin, status, count in rows:
                    counts[(plugin, str(status))] += int(count)
    return counts


def new_keys(report: PlanReport) -> list[str]:
    """The occasion keys this run recorded (every key it saw but those earlier runs had)."""
    earlier = set(report.earlier_keys)
    return [key for key in report.keys if key not in earlier]


def ordered_statuses(found: Iterable[str], always: Iterable[str] = ()) -> list[str]:
    """Statuses in lifecycle order (careflow's own first), each once."""
    wanted = set(found) | set(always)
    known = [s.value for s in EventStatus if s.value in wanted]
    return known + sorted(wanted - set(known))


def status_table(title: str, counts: Counter[tuple[str, str]], *, always: Iterable[str] = ()) -> Table:
    """One row per plugin, one column per status that occurs (and ``always`` ones)."""
    table = Table(title=title)
    table.add_column("plugin")
    columns = ordered_statuses((status for _, status in counts), always)
    for status in columns:
        table.add_column(status, justify="right")
    plugins = sorted({plugin for plugin, _ in counts})
    for plugin in plugins:
        table.add_row(plugin, *[str(counts[(plugin, status)]) for status in columns])
    if not plugins:
        table.add_row("(nothing new)", *["" for _ in columns])
    return table


def run_tables(runtime: Runtime, report: PlanReport, *, title: str = "care run") -> list[Table]:
    """This run's new events by their status now; then, if any, the occasions earlier runs recorded."""
    tables = [
        status_table(f"{title}: this run", status_counts(runtime, keys=new_keys(report)), always=["sent"])
    ]
    if report.earlier_keys:
        earlier = status_counts(runtime, keys=report.earlier_keys)
        tables.append(
            status_table(
                f"already recorded by earlier runs: {len(report.earlier_keys)} occasion(s), "
                "nothing sent again",
                earlier,
            )
        )
    return tables


def carried_line(runtime: Runtime, ids: Sequence[int]) -> str | None:
    """What became of earlier runs' events this run delivered (re-queued or released), or None."""
    if not ids:
        return None
    counts: Counter[str] = Counter()
    for (_, status), count in status_counts(runtime, ids=ids).items():
        counts[status] += count
    outcome = ", ".join(f"{counts[s]} {s}" for s in ordered_statuses(counts))
    return f"delivered {len(ids)} event(s) left unsent or deferred by earlier runs: {outcome}"
