"""The Celery application. Workers: ``celery -A infraaudit worker``; beat: ``celery -A infraaudit beat``."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "infraaudit.settings")

app = Celery("infraaudit")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
