"""End to end: a sync requested through the API is executed by a real Celery worker
process consuming from the real Redis broker, which then warms the forecast cache."""

import contextlib
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


def _database_url() -> str:
    """The test database, for another process or connection."""
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@contextlib.contextmanager
def _celery_worker(broker: str, settings, log_path: Path, pool: list[str], **env: str):
    """A real ``celery worker`` process on ``broker`` and the test database, logging to
    ``log_path``; terminated (killed if need be) when the block ends."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "infraaudit.settings",
        "DATABASE_URL": _database_url(),
        "CELERY_BROKER_URL": broker,
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "INFRAAUDIT_ENCRYPTION_KEY": ",".join(settings.ENCRYPTION_KEYS),
        "INFRAAUDIT_IMPORT_ROOT": str(settings.IMPORT_ROOT),
        **env,
    }
    with log_path.open("w") as log:
        process = subprocess.Popen(  # noqa: S603 (the test's own command, not input)
            [sys.executable, "-m", "celery", "-A", "infraaudit", "worker", *pool,
             "--loglevel=INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def worker(redis_broker, import_root, settings, tmp_path):
    with _celery_worker(redis_broker, settings, tmp_path / "worker.log", ["--pool=solo"]) as process:
        yield process


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


@pytest.fixture
def prefork_worker(redis_broker, import_root, settings, tmp_path):
    """A worker whose task runs in a pool child that a test can kill (what the OOM killer
    does); its log is ``tmp_path / "prefork.log"``."""
    from kombu import pools

    pools.reset()  # kombu's process-wide producer pools keep closed connections otherwise
    log_path = tmp_path / "prefork.log"
    with _celery_worker(
        redis_broker, settings, log_path, ["--pool=prefork", "--concurrency=1"],
        INFRAAUDIT_FORECAST_WARM_AFTER_SYNC="0",
    ) as process:
        _wait_for(lambda: "ready." in log_path.read_text(), process, log_path, "the worker")
        yield process, log_path


def _wait_for(predicate, process, log_path, what, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the worker exited:\n" + log_path.read_text()[-3000:]
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}:\n" + log_path.read_text()[-3000:])


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_worker_lost_twice_on_one_sync_fails_it_instead_of_running_it_for_ever(
    api, org, import_root, prefork_worker
):
    """With acks_late and reject_on_worker_lost the broker delivers a task again when its
    worker dies; a sync that kills its worker every time (out of memory) was delivered
    for ever, its job running. The second loss now fails it, naming the cause."""
    import psycopg

    from costs.models import SyncJobProvider
    from infraaudit.locks import advisory_lock_id

    process, log_path = prefork_worker
    folder = import_root / org.slug / "a"
    write_focus_csv(folder / "export.csv", [{"day": "2024-01-01", "service": "EC2",
                                             "amount": "10.50"}])
    provider = ProviderFactory(organization=org, kind="focus", config={"uri": str(folder)})
    holder = psycopg.connect(_database_url(), autocommit=True)
    lock = advisory_lock_id(f"costs.sync.provider:{provider.pk}")
    holder.execute("SELECT pg_advisory_lock(%s)", [lock])  # each run waits inside its sync
    try:
        job_id = api.post("/api/v1/costs/sync", {"provider_id": provider.id},
                          format="json").json()["job_id"]
        entry = SyncJobProvider.objects.get(job_id=job_id)
        for runs in (1, 2):
            _wait_for(lambda r=runs: SyncJobProvider.objects.get(pk=entry.pk).runs == r,
                      process, log_path, f"run {runs}")
            children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text()
            os.kill(int(children.split()[0]), 9)  # the pool child running the sync
        _wait_for(lambda: SyncJob.objects.get(pk=job_id).status not in SyncJob.ACTIVE_STATUSES,
                  process, log_path, "the job to end")
    finally:
        holder.execute("SELECT pg_advisory_unlock(%s)", [lock])
        holder.close()

    entry.refresh_from_db()
    assert (entry.status, entry.runs) == ("failed", 3)
    assert "stopped 2 times before it finished" in entry.error
    assert SyncJob.objects.get(pk=job_id).status == "failed"
    assert "WorkerLostError" in log_path.read_text()
