"""End to end: a sync requested through the API is executed by a real Celery worker
process consuming from the real Redis broker, which then warms the forecast cache."""

import os
import re
import subprocess
import sys
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from django.core.cache import cache
from django.db import connection

from costs.models import CostRecord, SyncJob
from costs.selectors import utc_today
from costs.services.forecast import FIT_COUNTER, cost_forecast
from infraaudit.celery import app
from tests.costs.focus_files import write_focus_csv
from tests.factories import ProviderFactory

BROKER_URL = os.environ.get("TEST_CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
REPO = Path(__file__).resolve().parents[2]


def _reset_producer_pool():
    """Drop the app's connection pool so the next send connects to the current broker_url."""
    if app._pool is not None:
        app._pool.force_close_all()
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture
def redis_broker():
    client = redis.Redis.from_url(BROKER_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {BROKER_URL}: {exc}")
    client.flushdb()
    previous = (app.conf.task_always_eager, app.conf.broker_url)
    app.conf.task_always_eager = False
    app.conf.broker_url = BROKER_URL
    _reset_producer_pool()
    yield BROKER_URL
    app.conf.task_always_eager, app.conf.broker_url = previous
    _reset_producer_pool()
    client.flushdb()


@pytest.fixture
def worker(redis_broker, import_root, settings, tmp_path):
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "infraaudit.settings",
        "DATABASE_URL": (
            f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        ),
        "CELERY_BROKER_URL": redis_broker,
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "INFRAAUDIT_ENCRYPTION_KEY": ",".join(settings.ENCRYPTION_KEYS),
        "INFRAAUDIT_IMPORT_ROOT": str(settings.IMPORT_ROOT),
    }
    log = (tmp_path / "worker.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "infraaudit", "worker", "--pool=solo",
         "--loglevel=INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    yield process
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_worker_executes_sync_from_redis(api, org, import_root, tmp_path, worker):
    # 30 days up to yesterday: after the job, the worker also fits the forecasts.
    yesterday = utc_today() - timedelta(days=1)
    days = [yesterday - timedelta(days=n) for n in range(30)]
    folder = import_root / org.slug  # the only local folder org's providers may read
    write_focus_csv(folder / "a" / "export.csv", [
        {"day": day.isoformat(), "service": "EC2", "amount": f"{10 + n % 7}.50"}
        for n, day in enumerate(days)
    ])
    provider = ProviderFactory(organization=org, kind="focus", config={"uri": str(folder / "a")})

    response = api.post("/api/v1/costs/sync", format="json")
    assert response.status_code == 202
    job_id = response.json()["job_id"]
    assert SyncJob.objects.get(pk=job_id).status in ("queued", "running")

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        status = SyncJob.objects.get(pk=job_id).status
        if status not in SyncJob.ACTIVE_STATUSES:
            break
        assert worker.poll() is None, "the worker exited"
        time.sleep(0.5)
    log = (tmp_path / "worker.log").read_text()
    assert status == "succeeded", log[-3000:]
    assert "costs.sync_provider" in log
    expected = sum(10 + n % 7 + Decimal("0.5") for n in range(30))
    assert sum(r.billed_amount for r in CostRecord.objects.filter(provider=provider)) == expected

    # The job's end queued costs.warm_forecasts: the worker fits the organization's and
    # the provider's forecast into the shared cache, and a request fits nothing.
    warmed = re.compile(r"costs\.warm_forecasts\[[^\]]+\] succeeded.*'warmed': 2")
    while time.monotonic() < deadline and not warmed.search(log):
        assert worker.poll() is None, "the worker exited"
        time.sleep(0.5)
        log = (tmp_path / "worker.log").read_text()
    assert warmed.search(log), log[-3000:]
    provider.refresh_from_db()  # the sync moved its data version and coverage
    fits = FIT_COUNTER["fits"]
    forecast = cost_forecast(organization=org, provider=provider, days=30)
    assert cost_forecast(organization=org, days=90).history_days == 30
    assert FIT_COUNTER["fits"] == fits
    assert forecast.projected_total > 0
    cache.clear()
