"""Alembic environment: runs on the connection faceledger hands it (see gallery/db.py)."""

from alembic import context

from faceledger.gallery.schema import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
