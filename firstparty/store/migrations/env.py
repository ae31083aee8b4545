"""Alembic environment: runs on the connection handed over by `store.migrate`."""

from alembic import context

from firstparty.store.models import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite's ALTER TABLE is limited
)
with context.begin_transaction():
    context.run_migrations()
