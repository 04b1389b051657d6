"""Service-day totals: each provider's spend per day, service and currency, kept by
triggers on the cost records (see ``ServiceDayTotal``), and filled from the records
that exist.

On SQLite, a later migration that alters ``costs_costrecord`` rebuilds the table and
drops these triggers with it: such a migration must create them again
(``tests/costs/test_service_day_totals.py`` checks them after a full ``migrate``)."""

import django.db.models.deletion
import django.db.models.manager
from django.db import migrations, models

TOTALS = "costs_servicedaytotal"
KEY = "provider_id, day, service, currency"
MATCH = " AND ".join(f"t.{column} = g.{column}" for column in KEY.split(", "))

# PostgreSQL: one statement-level trigger per event, each with its transition tables: a
# sync's COPY of 65k records costs one grouped upsert, not 65k row triggers.
PG_FUNCTION = f"""
CREATE FUNCTION costs_servicedaytotal_apply() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    emptied bigint[];
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        -- The totals left without records are deleted by id: joined to the transition
        -- table again, the planner expected no such total and rescanned it per total
        -- (1.8 s for a sync replacing 65k records).
        WITH changed AS (
            UPDATE {TOTALS} AS t SET billed_amount = t.billed_amount - g.billed,
                   effective_amount = t.effective_amount - g.effective,
                   records = t.records - g.n
            FROM (SELECT {KEY}, sum(billed_amount) AS billed,
                         sum(effective_amount) AS effective, count(*) AS n
                  FROM old_rows GROUP BY {KEY}) AS g
            WHERE {MATCH}
            RETURNING t.id, t.records
        )
        SELECT array_agg(id) FILTER (WHERE records <= 0) INTO emptied FROM changed;
        IF emptied IS NOT NULL THEN
            DELETE FROM {TOTALS} WHERE id = ANY(emptied);
        END IF;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO {TOTALS} AS t (organization_id, {KEY}, billed_amount, effective_amount,
                                   records)
        SELECT organization_id, {KEY}, sum(billed_amount), sum(effective_amount), count(*)
        FROM new_rows GROUP BY organization_id, {KEY}
        ON CONFLICT ({KEY}) DO UPDATE SET
            billed_amount = t.billed_amount + excluded.billed_amount,
            effective_amount = t.effective_amount + excluded.effective_amount,
            records = t.records + excluded.records;
    END IF;
    RETURN NULL;
END $$;
"""
PG_TRIGGERS = [
    "CREATE TRIGGER costs_servicedaytotal_insert AFTER INSERT ON costs_costrecord "
    "REFERENCING NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION costs_servicedaytotal_apply()",
    "CREATE TRIGGER costs_servicedaytotal_update AFTER UPDATE ON costs_costrecord "
    "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION costs_servicedaytotal_apply()",
    "CREATE TRIGGER costs_servicedaytotal_delete AFTER DELETE ON costs_costrecord "
    "REFERENCING OLD TABLE AS old_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION costs_servicedaytotal_apply()",
]
# TRUNCATE fires no delete trigger: the totals of truncated records are cleared too.
PG_TRUNCATE = [
    f"""CREATE FUNCTION costs_servicedaytotal_clear() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM {TOTALS};
    RETURN NULL;
END $$""",
    "CREATE TRIGGER costs_servicedaytotal_truncate AFTER TRUNCATE ON costs_costrecord "
    "FOR EACH STATEMENT EXECUTE FUNCTION costs_servicedaytotal_clear()",
]
PG_DROP = [
    "DROP TRIGGER IF EXISTS costs_servicedaytotal_truncate ON costs_costrecord",
    "DROP FUNCTION IF EXISTS costs_servicedaytotal_clear()",
    "DROP TRIGGER IF EXISTS costs_servicedaytotal_insert ON costs_costrecord",
    "DROP TRIGGER IF EXISTS costs_servicedaytotal_update ON costs_costrecord",
    "DROP TRIGGER IF EXISTS costs_servicedaytotal_delete ON costs_costrecord",
    "DROP FUNCTION IF EXISTS costs_servicedaytotal_apply()",
]

# SQLite (the embedded demo) has row triggers only, and keeps decimals as floats: each
# trigger sums its total's records again (a few, through the natural key's index) rather
# than adding and subtracting, which would keep the rounding error of every amount the
# total ever held (a deleted $123,456.78 left a $0.015 total showing $0.01).
_SQLITE_SUMS = " AND ".join(f"r.{column} = {{row}}.{column}" for column in KEY.split(", "))
_SQLITE_ADD = f"""
    INSERT INTO {TOTALS} (organization_id, {KEY}, billed_amount, effective_amount, records)
    SELECT NEW.organization_id, NEW.provider_id, NEW.day, NEW.service, NEW.currency,
           sum(r.billed_amount), sum(r.effective_amount), count(*)
    FROM costs_costrecord AS r WHERE {_SQLITE_SUMS.format(row="NEW")}
    ON CONFLICT ({KEY}) DO UPDATE SET
        billed_amount = excluded.billed_amount,
        effective_amount = excluded.effective_amount,
        records = excluded.records;
"""
_SQLITE_OLD = " AND ".join(f"{column} = OLD.{column}" for column in KEY.split(", "))
_SQLITE_SUBTRACT = f"""
    UPDATE {TOTALS} SET
        billed_amount = (SELECT coalesce(sum(r.billed_amount), 0) FROM costs_costrecord AS r
                         WHERE {_SQLITE_SUMS.format(row="OLD")}),
        effective_amount = (SELECT coalesce(sum(r.effective_amount), 0)
                            FROM costs_costrecord AS r WHERE {_SQLITE_SUMS.format(row="OLD")}),
        records = (SELECT count(*) FROM costs_costrecord AS r
                   WHERE {_SQLITE_SUMS.format(row="OLD")})
    WHERE {_SQLITE_OLD};
    DELETE FROM {TOTALS} WHERE {_SQLITE_OLD} AND records <= 0;
"""
SQLITE_TRIGGERS = [
    "CREATE TRIGGER costs_servicedaytotal_insert AFTER INSERT ON costs_costrecord "
    f"BEGIN {_SQLITE_ADD} END",
    "CREATE TRIGGER costs_servicedaytotal_update AFTER UPDATE ON costs_costrecord "
    f"BEGIN {_SQLITE_SUBTRACT} {_SQLITE_ADD} END",
    "CREATE TRIGGER costs_servicedaytotal_delete AFTER DELETE ON costs_costrecord "
    f"BEGIN {_SQLITE_SUBTRACT} END",
]
SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS costs_servicedaytotal_insert",
    "DROP TRIGGER IF EXISTS costs_servicedaytotal_update",
    "DROP TRIGGER IF EXISTS costs_servicedaytotal_delete",
]

FILL = (
    f"INSERT INTO {TOTALS} (organization_id, {KEY}, billed_amount, effective_amount, records) "
    f"SELECT organization_id, {KEY}, sum(billed_amount), sum(effective_amount), count(*) "
    f"FROM costs_costrecord GROUP BY organization_id, {KEY}"
)


def create_triggers(apps, schema_editor):
    statements = (
        [PG_FUNCTION, *PG_TRIGGERS, *PG_TRUNCATE]
        if schema_editor.connection.vendor == "postgresql"
        else SQLITE_TRIGGERS
    )
    for statement in [*statements, FILL]:
        schema_editor.execute(statement)


def drop_triggers(apps, schema_editor):
    statements = PG_DROP if schema_editor.connection.vendor == "postgresql" else SQLITE_DROP
    for statement in statements:
        schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_organization_aws_external_id"),
        ("costs", "0005_costrecord_billing_period"),
        ("providers", "0002_provider_synced_spans"),
    ]

    operations = [
        migrations.CreateModel(
            name="ServiceDayTotal",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False,
                                           verbose_name="ID")),
                ("day", models.DateField()),
                ("service", models.CharField(max_length=200)),
                ("currency", models.CharField(max_length=3)),
                ("billed_amount", models.DecimalField(decimal_places=12, max_digits=40)),
                ("effective_amount", models.DecimalField(decimal_places=12, max_digits=40)),
                ("records", models.IntegerField()),
                ("organization", models.ForeignKey(
                    db_index=False, on_delete=django.db.models.deletion.CASCADE,
                    related_name="+", to="accounts.organization")),
                ("provider", models.ForeignKey(
                    db_index=False, on_delete=django.db.models.deletion.CASCADE,
                    related_name="+", to="providers.provider")),
            ],
            options={
                "default_manager_name": "derived",
                "indexes": [models.Index(fields=["organization", "day"],
                                         name="servicedaytotal_org_day")],
                "constraints": [models.UniqueConstraint(
                    fields=("provider", "day", "service", "currency"),
                    name="servicedaytotal_key")],
            },
            managers=[("derived", django.db.models.manager.Manager())],
        ),
        migrations.RunPython(create_triggers, drop_triggers),
    ]
