"""Test helper: move the test database to a migration state and back."""

from django.db import connection
from django.db.migrations.executor import MigrationExecutor


def migrate_to(targets):
    """Migrate the test database to ``targets`` ([(app, migration)]); the apps of that
    state, for models as they were then."""
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def migrate_to_latest():
    """Back to the latest migrations: the schema the rest of the suite expects."""
    return migrate_to(MigrationExecutor(connection).loader.graph.leaf_nodes())
