"""The periodic tasks Celery beat runs, stored with django-celery-beat so staff can change
them in the admin. They are created once (after migrate) from settings and then left
alone: an edited schedule survives restarts and deploys."""

from __future__ import annotations

from django.conf import settings

PERIODIC_TASKS = {
    "nightly-cost-sync": ("costs.sync_all_providers", lambda: settings.NIGHTLY_SYNC_CRON),
    "sweep-stale-sync-jobs": ("costs.sweep_stale_jobs", lambda: "*/10 * * * *"),
}


def ensure_periodic_tasks(**kwargs) -> None:
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

    for name, (task, cron) in PERIODIC_TASKS.items():
        if PeriodicTask.objects.filter(name=name).exists():
            continue
        minute, hour, day_of_month, month_of_year, day_of_week = cron().split()
        fields = {"minute": minute, "hour": hour, "day_of_month": day_of_month,
                  "month_of_year": month_of_year, "day_of_week": day_of_week, "timezone": "UTC"}
        # Crontabs are not unique: staff may have added the same one in the admin, which
        # made get_or_create raise (and with it, migrate).
        schedule = CrontabSchedule.objects.filter(**fields).order_by("pk").first()
        schedule = schedule or CrontabSchedule.objects.create(**fields)
        PeriodicTask.objects.create(name=name, task=task, crontab=schedule)
