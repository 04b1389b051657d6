"""The cost commands refuse bad arguments with a clean error, before doing any work."""

import pytest
from django.core.management import CommandError, call_command

from accounts.models import Organization


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--spacing", "0"], "--spacing: must be 1 or more"),
        (["--levels", "1.5"], "--levels: each between 0 and 1"),
        (["--jobs", "0"], "--jobs: must be 1 or more"),
        (["--offset", "-5"], "--offset: must be 0 or more"),
        (["--origins", "-1"], "--origins: must be 0 or more"),
    ],
)
def test_backtest_forecast_bad_arguments_are_clean_errors(args, problem):
    with pytest.raises(CommandError, match=problem):
        call_command("backtest_forecast", *args, "--skip-speed")


@pytest.mark.parametrize("make", [lambda d: d, lambda d: d / "other.csv"])
def test_backtest_forecast_peyton_file_that_is_not_ds_y_is_a_clean_error(tmp_path, make):
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    path = make(tmp_path)  # a folder, or a CSV of other columns
    with pytest.raises(CommandError, match="not a Prophet example CSV with ds,y"):
        call_command("backtest_forecast", "--seeds", "--origins", "1", "--peyton", str(path),
                     "--skip-speed")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--days", "10"], "--days: at least 400"),
        (["--org", ""], "--org: the organization name must be 1 to 200"),
        (["--org", "x" * 300], "--org: the organization name must be 1 to 200"),
    ],
)
def test_loaddemo_bad_arguments_are_clean_errors(args, problem, settings, tmp_path):
    settings.IMPORT_ROOT = tmp_path / "imports"
    with pytest.raises(CommandError, match=problem):
        call_command("loaddemo", *args, "--force")
    assert not Organization.objects.exists()


@pytest.mark.django_db
def test_loaddemo_refuses_a_production_install_unless_forced(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="DJANGO_DEBUG=1"):
        call_command("loaddemo")
    assert not Organization.objects.exists()
