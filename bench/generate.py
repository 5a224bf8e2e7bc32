"""Synthetic customers for benchmarks: N customers with vehicles, visits and consents, inserted in bulk.

Usage: ``python bench/generate.py --url sqlite:///bench.db --customers 1000000 [--seed 7]``

Deterministic for a given seed and N. SQLite gets Core ``insert()`` executemany in large
chunks inside one transaction; PostgreSQL gets ``COPY … FROM STDIN`` through psycopg 3.
The database is migrated first and must hold no customers yet.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Table, func, insert, select, text

from careflow.storage.db import make_engine, migrate
from careflow.storage.models import Center, Consent, Customer, ServiceVisit, Vehicle

# Centers the benchmark configuration declares (bench/run.py writes the same codes to careflow.toml).
CENTERS: tuple[tuple[str, str, str, str], ...] = (
    ("bj", "Beijing Anxin Auto", "Asia/Shanghai", "zh_CN"),
    ("sh", "Shanghai Anxin Auto", "Asia/Shanghai", "zh_CN"),
    ("gz", "Guangzhou Anxin Auto", "Asia/Shanghai", "zh_CN"),
    ("cd", "Chengdu Anxin Auto", "Asia/Shanghai", "zh_CN"),
    ("hk", "Hong Kong Anxin Auto", "Asia/Hong_Kong", "en"),
)
CITIES = ("Beijing", "Shanghai", "Guangzhou", "Chengdu", "Hong Kong")
MODELS = ("Corolla", "Civic", "Model 3", "Golf", "Camry", "CR-V", "Sylphy", "Lavida", "BYD Han", "X3")
VISIT_KINDS = ("maintenance", "maintenance", "maintenance", "repair", "tyres", "inspection")
CHUNK = 50_000
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def _days_in_year() -> list[tuple[int, int]]:
    leap = date(2024, 1, 1)  # a leap year, so Feb 29 birthdays exist in their real proportion
    return [((leap + timedelta(days=i)).month, (leap + timedelta(days=i)).day) for i in range(366)]


class Generator:
    """Rows for each table, in id order, from one seeded random stream per table."""

    def __init__(self, customers: int, seed: int, center_ids: Sequence[int]) -> None:
        self.customers = customers
        self.seed = seed
        self.center_ids = list(center_ids)
        self.birthdays = _days_in_year()

    def customer_rows(self) -> Iterator[dict[str, Any]]:
        rng = random.Random(f"{self.seed}:customers")
        for i in range(1, self.customers + 1):
            center = i % len(self.center_ids)  # centers interleave across the id range
            known_birthday = rng.random() < 0.95
            month, day = rng.choice(self.birthdays) if known_birthday else (None, None)
            yield {
                "id": i,
                "center_id": self.center_ids[center],
                "external_id": f"B{i:08d}",
                "name": f"Customer {i}",
                "phone": f"+86138{i:08d}" if rng.random() < 0.95 else None,
                "email": f"c{i}@example.com" if rng.random() < 0.4 else None,
                "birth_year": rng.randint(1950, 2005) if known_birthday and rng.random() < 0.8 else None,
                "birth_month": month,
                "birth_day": day,
                "locale": None if rng.random() < 0.9 else "en",
                "timezone": None,
                "city": CITIES[center],
                "created_at": EPOCH,
                "updated_at": EPOCH,
            }

    def vehicle_rows(self) -> Iterator[dict[str, Any]]:
        """1 vehicle for 75% of customers, 2 for 20%, 3 for 5% (about 1.3 each)."""
        rng = random.Random(f"{self.seed}:vehicles")
        vid = 0
        for customer in range(1, self.customers + 1):
            roll = rng.random()
            for n in range(1 if roll < 0.75 else 2 if roll < 0.95 else 3):
                vid += 1
                bought = date(2015, 1, 1) + timedelta(days=rng.randrange(11 * 365))
                yield {
                    "id": vid,
                    "customer_id": customer,
                    "plate": f"京A{customer:07d}{n}",
                    "vin": None,
                    "model": rng.choice(MODELS),
                    "purchase_date": bought,
                    "warranty_end": bought + timedelta(days=3 * 365),
                    "interval_months": 6 if rng.random() < 0.7 else 12,
                    "interval_km": 10_000,
                }

    def visit_rows(self) -> Iterator[dict[str, Any]]:
        """0-6 visits per customer (about 3), on the customer's first vehicle."""
        vehicles = random.Random(f"{self.seed}:vehicles")
        rng = random.Random(f"{self.seed}:visits")
        visit_id = vid = 0
        for customer in range(1, self.customers + 1):
            roll = vehicles.random()
            first_vehicle = vid + 1
            vid += 1 if roll < 0.75 else 2 if roll < 0.95 else 3
            # Replay the vehicle stream's per-vehicle draws so vehicle ids line up without storing them.
            for _ in range(first_vehicle, vid + 1):
                vehicles.randrange(11 * 365), vehicles.choice(MODELS), vehicles.random()
            day = date(2026, 1, 1) - timedelta(days=rng.randrange(3 * 365))
            mileage = rng.randrange(1_000, 60_000)
            for _ in range(rng.randrange(7)):
                visit_id += 1
                yield {
                    "id": visit_id,
                    "customer_id": customer,
                    "vehicle_id": first_vehicle,
                    "date": day,
                    "mileage": mileage,
                    "amount": Decimal(rng.randrange(20_000, 300_000)) / 100,
                    "kind": rng.choice(VISIT_KINDS),
                    "voucher_code": None,
                }
                day -= timedelta(days=rng.randrange(90, 300))
                mileage = max(0, mileage - rng.randrange(3_000, 12_000))

    def consent_rows(self) -> Iterator[dict[str, Any]]:
        """SMS service consent for 97%, SMS marketing for 85%, email marketing for 30% (opt-in)."""
        rng = random.Random(f"{self.seed}:consents")
        cid = 0
        for customer in range(1, self.customers + 1):
            for channel, purpose, share in (
                ("sms", "service", 0.97),
                ("sms", "marketing", 0.85),
                ("email", "marketing", 0.30),
            ):
                cid += 1
                yield {
                    "id": cid,
                    "customer_id": customer,
                    "channel": channel,
                    "purpose": purpose,
                    "granted": rng.random() < share,
                    "source": "import",
                    "updated_at": EPOCH,
                }


def _chunks(rows: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _load_sqlite(conn: Connection, table: Table, rows: Iterator[dict[str, Any]]) -> int:
    count = 0
    for chunk in _chunks(rows, CHUNK):
        conn.execute(insert(table), chunk)  # executemany: one prepared statement, many rows
        count += len(chunk)
    return count


def _load_postgresql(conn: Connection, table: Table, rows: Iterator[dict[str, Any]]) -> int:
    first = next(rows, None)
    if first is None:
        return 0
    # Only the columns the generator fills: the others keep their server defaults.
    columns = [c.name for c in table.columns if c.name in first]
    raw: Any = conn.connection.driver_connection
    count = 0
    with raw.cursor() as cursor, cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in itertools.chain([first], rows):
            copy.write_row([row.get(c) for c in columns])
            count += 1
    return count


def generate(url: str, customers: int, seed: int = 7, *, out: Any = sys.stdout) -> dict[str, int]:
    """Fill ``url`` with ``customers`` synthetic customers; returns rows written per table."""
    engine = make_engine(url)
    migrate(engine)
    postgres = engine.dialect.name == "postgresql"
    loader = _load_postgresql if postgres else _load_sqlite
    counts: dict[str, int] = {}
    started = time.perf_counter()
    with engine.begin() as conn:
        if conn.scalar(select(func.count()).select_from(Customer)):
            raise SystemExit(f"{url}: customers already exist; generate into an empty database")
        existing = {code: cid for code, cid in conn.execute(select(Center.code, Center.id))}
        for code, name, tz, locale in CENTERS:
            if code not in existing:
                result = conn.execute(
                    insert(Center).values(code=code, name=name, timezone=tz, locale=locale, created_at=EPOCH)
                )
                existing[code] = result.inserted_primary_key[0]  # type: ignore[index]
        gen = Generator(customers, seed, [existing[code] for code, *_ in CENTERS])
        for model, rows in (
            (Customer, gen.customer_rows()),
            (Vehicle, gen.vehicle_rows()),
            (ServiceVisit, gen.visit_rows()),
            (Consent, gen.consent_rows()),
        ):
            table: Table = model.__table__  # type: ignore[assignment]
            t0 = time.perf_counter()
            counts[table.name] = loader(conn, table, rows)
            took = time.perf_counter() - t0
            print(
                f"{table.name:>15}: {counts[table.name]:>9,} rows in {took:6.1f} s "
                f"({counts[table.name] / took:,.0f} rows/s)",
                file=out,
                flush=True,
            )
        if postgres:  # explicit ids were copied in: move the sequences past them
            for name in counts:
                conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), (SELECT max(id) FROM {name}))"
                    )
                )
    with engine.connect() as conn:
        # Fresh statistics, so the planners pick the indexes plugins rely on.
        conn.execute(text("ANALYZE"))
        conn.commit()
    total = sum(counts.values())
    took = time.perf_counter() - started
    print(f"{'total':>15}: {total:>9,} rows in {took:6.1f} s ({total / took:,.0f} rows/s)", file=out)
    engine.dispose()
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", required=True, help="sqlite:///bench.db or postgresql+psycopg://…")
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    generate(args.url, args.customers, args.seed)


if __name__ == "__main__":
    main()
