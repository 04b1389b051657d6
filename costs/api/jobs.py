"""POST /costs/sync and GET /jobs/{id}."""

import re
import shutil
import uuid
from pathlib import Path

from django.conf import settings
from django.core.files.uploadhandler import TemporaryFileUploadHandler
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import APIException
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import request_org
from costs.api.params import request_object
from costs.models import SyncJob, SyncJobProvider
from costs.selectors import utc_today
from costs.services.jobs import import_job_request, sync_job_request
from infraaudit.errors import Unprocessable
from providers.adapters.base import EARLIEST_DAY, UPLOAD_NAME_SEPARATOR
from providers.models import Provider

MAX_WINDOW_DAYS = 400  # the 13 months of a first sync, and then some


class SyncRequest(serializers.Serializer):
    provider_id = serializers.IntegerField(
        required=False, min_value=1, help_text="Sync only this provider (default: all active)."
    )
    date_from = serializers.DateField(
        required=False, help_text="First day to re-pull (default: start of previous month; "
        "13 months back on a first sync). API providers only: a FOCUS provider reads the "
        "days its files hold."
    )
    date_to = serializers.DateField(
        required=False, help_text="Last day to re-pull (given with date_from)."
    )

    def validate(self, attrs):
        if bool(attrs.get("date_from")) != bool(attrs.get("date_to")):
            raise serializers.ValidationError(
                {"date_from": ["date_from and date_to go together"]}
            )
        if attrs.get("date_from") and attrs["date_from"] > attrs["date_to"]:
            raise serializers.ValidationError({"date_from": ["must not be after date_to"]})
        if attrs.get("date_from") and attrs["date_from"] < EARLIEST_DAY:
            raise serializers.ValidationError(
                {"date_from": [f"must not be before {EARLIEST_DAY} (no cloud billed earlier)"]}
            )
        if attrs.get("date_to") and attrs["date_to"] > utc_today():
            raise serializers.ValidationError({"date_to": ["must not be after today (UTC)"]})
        if attrs.get("date_from") and (attrs["date_to"] - attrs["date_from"]).days >= MAX_WINDOW_DAYS:
            # A window is one job's work: covering years in one request would be hours of
            # queries, and it would mark all those days as synced at once.
            raise serializers.ValidationError(
                {"date_from": [f"the window may span at most {MAX_WINDOW_DAYS} days"]}
            )
        return attrs


JobAccepted = inline_serializer(
    "SyncJobAccepted", {"job_id": serializers.IntegerField(), "status": serializers.CharField()}
)


class SyncJobResultSerializer(serializers.Serializer):
    # A deleted provider keeps its entry, its id and its name: a client that stored the id
    # still finds its entry, two deleted providers stay apart, and the id is never null.
    provider_id = serializers.IntegerField(
        source="provider_pk",
        help_text="The provider's id. Kept after the provider is deleted (then "
        "`GET /api/v1/providers/{id}` is a 404); never null.",
    )
    name = serializers.CharField(
        source="display_name",
        help_text="The provider's current name; once the provider is deleted, the name it "
        "had when the job was created.",
    )
    status = serializers.ChoiceField(SyncJobProvider.Status.choices)
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
    kind = serializers.ChoiceField(["cost_sync", "focus_import"])
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
        serializer = SyncRequest(data=request_object(request))
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
    @extend_schema(
        summary="A sync job with per-provider results",
        description="One entry per provider of the job. A job's history survives the "
        "deletion of its providers: a deleted provider's entry stays, with the id it had "
        "(`provider_id` is never null) and its name, and the status and counts it ended "
        "with; its records are deleted with it. A provider deleted before its sync finished "
        "ends its entry `failed` with an `error` starting with `provider deleted`.",
        responses={200: SyncJobSerializer},
    )
    def get(self, request, job_id: int):
        job = get_object_or_404(
            SyncJob.objects.prefetch_related("results__provider"),
            pk=job_id,
            organization=request_org(request),
        )
        return Response(SyncJobSerializer(job).data)


class UploadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "PAYLOAD_TOO_LARGE"


class LimitedUploadHandler(TemporaryFileUploadHandler):
    """Streams each uploaded file to a temporary file and stops when the request's files
    together pass INFRAAUDIT_UPLOAD_MAX_BYTES."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.received = 0

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > settings.UPLOAD_MAX_BYTES:
            raise UploadTooLarge(
                f"the upload is larger than the limit of {settings.UPLOAD_MAX_BYTES} bytes"
            )
        return super().receive_data_chunk(raw_data, start)


UPLOAD_SUFFIXES = (".csv", ".csv.gz", ".parquet")


MAX_UPLOAD_FILES = 100


class ImportRequest(serializers.Serializer):
    file = serializers.ListField(
        child=serializers.FileField(),
        min_length=1,
        max_length=MAX_UPLOAD_FILES,
        help_text="A FOCUS export: .csv, .csv.gz or .parquet. An export split into several "
        "files (parts of one billing period) goes in one request, one `file` field each: "
        "the files are imported together, as one delivery.",
    )

    def validate_file(self, files):
        for uploaded in files:
            if not (uploaded.name or "").lower().endswith(UPLOAD_SUFFIXES):
                raise serializers.ValidationError(
                    f"{uploaded.name}: must be a .csv, .csv.gz or .parquet file"
                )
        return files


def store_uploads(files) -> str:
    """The uploaded files moved into UPLOAD_DIR; the path the import reads: the file
    itself, or a folder of our own holding several."""
    upload_dir = Path(settings.UPLOAD_DIR)
    if len(files) > 1:
        upload_dir = upload_dir / uuid.uuid4().hex
    upload_dir.mkdir(parents=True, exist_ok=True)
    paths = [store_upload(uploaded, upload_dir) for uploaded in files]
    return str(upload_dir) if len(files) > 1 else paths[0]


def store_upload(uploaded, upload_dir: Path) -> str:
    """Move the uploaded file into ``upload_dir`` under a name of our own, which keeps a
    safe form of the client's name for messages (``focus.upload_label``); its path."""
    name = uploaded.name.lower()
    suffix = next(s for s in sorted(UPLOAD_SUFFIXES, key=len, reverse=True) if name.endswith(s))
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(uploaded.name).name)[: -len(suffix)][-80:]
    target = upload_dir / f"{uuid.uuid4().hex}{UPLOAD_NAME_SEPARATOR}{stem or 'upload'}{suffix}"
    temporary_path = getattr(uploaded, "temporary_file_path", None)
    if temporary_path:
        shutil.move(temporary_path(), target)
    else:
        with target.open("wb") as out:
            for chunk in uploaded.chunks():
                out.write(chunk)
    return str(target)


class ImportView(APIView):
    parser_classes = [MultiPartParser]

    def initialize_request(self, request, *args, **kwargs):
        request.upload_handlers = [LimitedUploadHandler(request)]
        return super().initialize_request(request, *args, **kwargs)

    @extend_schema(
        summary="Import an uploaded FOCUS export into a focus provider (admin)",
        description="Multipart upload (field `file`, repeated for an export split into "
        "several files) of a FOCUS 1.0-1.2 export as CSV, CSV.gz or Parquet. The files are "
        "streamed to disk and imported together by the sync code in "
        "Celery; it replaces the provider's records of the billing periods it delivers "
        "(BillingPeriodStart; without that column, of the days it holds in each month). "
        "413 above the upload limit.",
        request={"multipart/form-data": ImportRequest},
        responses={202: JobAccepted},
    )
    def post(self, request, provider_id: int):
        provider = get_object_or_404(
            Provider, pk=provider_id, organization=request_org(request)
        )
        if provider.kind != Provider.Kind.FOCUS:
            raise Unprocessable(
                f"provider {provider.id} is of kind {provider.kind}; uploads go to focus providers",
                code="NOT_A_FOCUS_PROVIDER",
                details={"provider_id": provider.id},
            )
        serializer = ImportRequest(data=request.data)
        serializer.is_valid(raise_exception=True)
        path = store_uploads(serializer.validated_data["file"])
        job = import_job_request(provider=provider, user=request.user, source_file=path)
        job.refresh_from_db(fields=["status"])
        return accepted(job)
