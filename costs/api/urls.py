from django.urls import re_path

from costs.api import anomalies, forecast, jobs, reports

urlpatterns = [
    re_path(r"^costs/sync/?$", jobs.SyncView.as_view(), name="costs-sync"),
    re_path(r"^costs/overview/?$", reports.OverviewView.as_view(), name="costs-overview"),
    re_path(r"^costs/trend/?$", reports.TrendView.as_view(), name="costs-trend"),
    re_path(r"^costs/forecast/?$", forecast.ForecastView.as_view(), name="costs-forecast"),
    re_path(r"^costs/anomalies/?$", anomalies.AnomalyListView.as_view(), name="costs-anomalies"),
    re_path(
        r"^costs/anomalies/(?P<anomaly_id>[0-9]+)/dismiss/?$",
        anomalies.AnomalyDismissView.as_view(),
        name="costs-anomaly-dismiss",
    ),
    re_path(r"^jobs/(?P<job_id>[0-9]+)/?$", jobs.JobView.as_view(), name="job-detail"),
    re_path(
        r"^providers/(?P<provider_id>[0-9]+)/import/?$",
        jobs.ImportView.as_view(),
        name="provider-import",
    ),
]
