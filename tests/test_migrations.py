"""The Alembic migrations form one line of history and build exactly the schema the models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from careflow.storage.db import alembic_config, make_engine, migrate
from careflow.storage.models import Base


def test_one_head_and_the_migrated_schema_matches_the_models(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        script = ScriptDirectory.from_config(alembic_config(engine))
        assert len(script.get_heads()) == 1, f"several migration heads: {script.get_heads()}"
        migrate(engine)
        migrate(engine)  # a second upgrade is a no-op
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": False})
            assert context.get_current_revision() == script.get_current_head()
            differences = compare_metadata(context, Base.metadata)
        assert differences == [], f"models and migrations differ: {differences}"
    finally:
        engine.dispose()
