"""POST /costs/sync and GET /jobs/{id}."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import request_org
from costs.models import SyncJob
from costs.services.jobs import sync_job_request
from providers.models import Provider


class SyncRequest(serializers.Serializer):
    provider_id = serializers.IntegerField(
        required=False, min_value=1, help_text="Sync only this provider (default: all active)."
    )
    date_from = serializers.DateField(
        required=False, help_text="First day to re-pull (default: start of previous month; "
        "13 months back on a first sync)."
    )
    date_to = serializers.DateField(required=False, help_text="Last day to re-pull (default: today).")

    def validate(self, attrs):
        if bool(attrs.get("date_from")) != bool(attrs.get("date_to")):
            raise serializers.ValidationError(
                {"date_from": ["date_from and date_to go together"]}
            )
        if attrs.get("date_from") and attrs["date_from"] > attrs["date_to"]:
            raise serializers.ValidationError({"date_from": ["must not be after date_to"]})
        return attrs


JobAccepted = inline_serializer(
    "SyncJobAccepted", {"job_id": serializers.IntegerField(), "status": serializers.CharField()}
)


class SyncJobResultSerializer(serializers.Serializer):
    provider_id = serializers.IntegerField()
    name = serializers.CharField(source="provider.name")
    status = serializers.CharField()
    rows_read = serializers.IntegerField()
    records_written = serializers.IntegerField()
    date_from = serializers.DateField(allow_null=True)
    date_to = serializers.DateField(allow_null=True)
    error = serializers.CharField(allow_null=True)

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["error"] = data["error"] or None
        return data


class SyncJobSerializer(serializers.Serializer):
    job_id = serializers.IntegerField(source="id")
    kind = serializers.CharField()
    status = serializers.ChoiceField(SyncJob.Status.choices)
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    providers = SyncJobResultSerializer(source="results", many=True)


def accepted(job: SyncJob) -> Response:
    return Response({"job_id": job.id, "status": job.status}, status=status.HTTP_202_ACCEPTED)


class SyncView(APIView):
    @extend_schema(
        summary="Start a billing sync (admin)",
        description="Syncs every active provider, or the one named by `provider_id`. Returns "
        "at once; poll `GET /api/v1/jobs/{job_id}`. While a sync of the same providers is "
        "queued or running, its job is returned instead of a new one.",
        request=SyncRequest,
        responses={202: JobAccepted},
    )
    def post(self, request):
        serializer = SyncRequest(data=request.data or {})
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        organization = request_org(request)
        provider = None
        if "provider_id" in data:
            provider = get_object_or_404(Provider, pk=data["provider_id"], organization=organization)
        job = sync_job_request(
            organization=organization,
            user=request.user,
            provider=provider,
            date_from=data.get("date_from"),
            date_to=data.get("date_to"),
        )
        job.refresh_from_db(fields=["status"])
        return accepted(job)


class JobView(APIView):
    @extend_schema(summary="A sync job with per-provider results", responses={200: SyncJobSerializer})
    def get(self, request, job_id: int):
        job = get_object_or_404(
            SyncJob.objects.prefetch_related("results__provider"),
            pk=job_id,
            organization=request_org(request),
        )
        return Response(SyncJobSerializer(job).data)
