"""The finance review desk: anomalies (chart, dismiss with a reason, reopen, detect now),
anomaly policies, alert webhooks (write-only secrets) and their delivery log."""

from __future__ import annotations

from datetime import date, timedelta
from operator import attrgetter
from urllib.parse import urlsplit

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.debug import sensitive_post_parameters

from accounts.admin_scoping import OrganizationScopedAdminMixin, member_organizations_only
from costs.models import AlertWebhook, Anomaly, AnomalyPolicy, WebhookDelivery
from costs.money import to_cents
from costs.selectors import utc_today
from costs.services.alerts import destination_problem, webhook_delivery_resend
from costs.services.anomalies import (
    anomaly_chart_series,
    anomaly_chart_window,
    anomaly_dismiss,
    anomaly_locked,
    anomaly_reopen,
    anomaly_review_logged,
)
from infraaudit.errors import Conflict
from providers.models import Provider

SEVERITY_COLOURS = {"low": "#6b7280", "medium": "#b45309", "high": "#c2410c", "critical": "#b91c1c"}
# The bulk dismiss page lists at most this many of the selection (it may be thousands).
DISMISS_PREVIEW_ROWS = 100


class DismissForm(forms.Form):
    reason = forms.CharField(
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Why this is not a problem (1 to 500 characters); kept with the anomaly.",
    )


class DetectForm(forms.Form):
    provider = forms.ModelChoiceField(queryset=Provider.objects.select_related("organization"))
    date_from = forms.DateField(help_text="YYYY-MM-DD")
    date_to = forms.DateField(help_text="YYYY-MM-DD")

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("date_from") and cleaned.get("date_to"):
            if cleaned["date_from"] > cleaned["date_to"]:
                raise forms.ValidationError("date_from must not be after date_to")
            if (cleaned["date_to"] - cleaned["date_from"]).days > 3650:
                raise forms.ValidationError("at most 3650 days at once")
        return cleaned


def _money(value) -> str:
    return f"{to_cents(value):,.2f}"


# --------------------------------------------------------------------------------------
# The chart: server-rendered SVG (no script, no CDN)
# --------------------------------------------------------------------------------------

CHART_W, CHART_H = 760, 260
PAD_L, PAD_R, PAD_T, PAD_B = 64, 12, 12, 34
CHART_DAYS_BEFORE, CHART_DAYS_AFTER = 35, 14
GAP_LABEL_MIN_PX = 64  # "not synced" is written over a gap at least this wide


def _runs(items: list, day_of) -> list[list]:
    """``items`` (in date order) split into runs of consecutive days."""
    runs: list[list] = []
    for item in items:
        if runs and (day_of(item) - day_of(runs[-1][-1])).days == 1:
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


def _path(runs: list[list[tuple[float, float]]], *, closed: bool = False) -> str:
    """SVG path data, one subpath per run of coordinates: a line drawn this way breaks
    where days are missing instead of joining across them."""
    end = " Z" if closed else ""
    return " ".join("M" + " L".join(f"{x},{y}" for x, y in run) + end for run in runs)


def _gap_areas(missing: list[date], x, step: float) -> list[dict]:
    """One shaded area per run of ``missing`` days, half a day either side of its first
    and last day (inside the plot), labelled when wide enough for the words."""
    areas = []
    for run in _runs(missing, lambda day: day):
        left = max(x(run[0]) - step / 2, PAD_L)
        right = min(x(run[-1]) + step / 2, CHART_W - PAD_R)
        areas.append({
            "x": round(left, 1), "width": round(right - left, 1),
            "middle": round((left + right) / 2, 1), "label": right - left >= GAP_LABEL_MIN_PX,
            "first": run[0], "last": run[-1], "days": len(run),
        })
    return areas


def chart_context(anomaly: Anomaly, *, today: date | None = None) -> dict | None:
    """Coordinates of the anomaly's series for the SVG template: the actual spend line,
    the expected line and band, the anomalous day marked. Days are placed by date over
    the chart's whole window, so days the provider never synced keep their width: the
    lines and the band break there and the gap is shaded ("not synced"), rather than
    the days on either side being drawn as neighbours."""
    window = {"days_before": CHART_DAYS_BEFORE, "days_after": CHART_DAYS_AFTER,
              "today": today or utc_today()}
    # The points leave unsynced days out; the window keeps their place.
    first, last = anomaly_chart_window(anomaly=anomaly, **window)
    points = anomaly_chart_series(anomaly=anomaly, **window)
    if not points:
        return None
    top = max(max(p.actual, p.upper or 0.0) for p in points) * 1.1 or 1.0
    step = (CHART_W - PAD_L - PAD_R) / max((last - first).days, 1)

    def x(day: date) -> float:
        return round(PAD_L + step * (day - first).days, 1)

    def y(value: float) -> float:
        return round(PAD_T + (CHART_H - PAD_T - PAD_B) * (1 - max(value, 0.0) / top), 1)

    day_of = attrgetter("day")
    band_runs = _runs([p for p in points if p.upper is not None], day_of)
    band = _path(
        [[(x(p.day), y(p.upper)) for p in run] + [(x(p.day), y(p.lower)) for p in reversed(run)]
         for run in band_runs],
        closed=True,
    )
    expected = _path([[(x(p.day), y(p.expected)) for p in run] for run in band_runs])
    actual = _path([[(x(p.day), y(p.actual)) for p in run] for run in _runs(points, day_of)])

    every_day = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    present = {p.day for p in points}
    gaps = _gap_areas([d for d in every_day if d not in present], x, step)
    ticks = [
        {"y": y(top * k / 4), "label": f"{top * k / 4:,.0f}"} for k in range(5)
    ]
    days = [{"x": x(d), "label": d.strftime("%b %d")} for d in every_day if d.weekday() == 0]
    dots = [
        {"x": x(p.day), "y": y(p.actual), "day": p.day, "actual": f"{p.actual:,.2f}",
         "expected": f"{p.expected:,.2f}" if p.expected is not None else "-",
         "upper": f"{p.upper:,.2f}" if p.upper is not None else "-"}
        for p in points
    ]
    return {
        "width": CHART_W,
        "height": CHART_H,
        "left": PAD_L,
        "right": CHART_W - PAD_R,
        "bottom": CHART_H - PAD_B,
        "top": PAD_T,
        "plot_height": CHART_H - PAD_T - PAD_B,
        "band": band,
        "expected": expected,
        "actual": actual,
        "dots": dots,
        "marker": next((d for d in dots if d["day"] == anomaly.date), None),
        "gaps": gaps,
        "ticks": ticks,
        "days": days,
        "first": first,
        "last": last,
    }


# --------------------------------------------------------------------------------------
# Anomalies
# --------------------------------------------------------------------------------------


@admin.register(Anomaly)
class AnomalyAdmin(OrganizationScopedAdminMixin, admin.ModelAdmin):
    """Triage from the list (amounts, impact, severity, top services, status); open a row
    for the chart; dismiss (with a reason) or reopen, one or many."""

    list_display = ["date", "provider", "series", "severity_badge", "actual", "expected",
                    "upper", "impact", "deviation", "top_services_summary", "status",
                    "dismissed_by"]
    list_display_links = ["date", "series"]
    list_filter = ["status", "severity", "provider__organization", "provider",
                   ("date", admin.DateFieldListFilter)]
    search_fields = ["service", "provider__name", "dismiss_reason"]
    ordering = ["-date", "-impact_amount"]
    date_hierarchy = "date"
    list_select_related = ["provider", "dismissed_by"]
    list_per_page = 50
    actions = ["dismiss_selected", "reopen_selected"]
    fieldsets = [
        (None, {"fields": ["organization", "provider", "series", "date", "severity", "status"]}),
        ("Amounts", {"fields": ["actual", "expected", "lower", "upper", "impact", "deviation",
                                "top_services_table"]}),
        ("Review", {"fields": ["detected_at", "updated_at", "dismissed_at", "dismissed_by",
                               "dismiss_reason"]}),
    ]
    readonly_fields = ["organization", "provider", "series", "date", "severity", "status",
                       "actual", "expected", "lower", "upper", "impact", "deviation",
                       "top_services_table",
                       "detected_at", "updated_at", "dismissed_at", "dismissed_by",
                       "dismiss_reason"]

    def has_add_permission(self, request):
        return False  # anomalies come from detection only

    def has_delete_permission(self, request, obj=None):
        return False  # a dismissal is a record; re-detection removes what is no longer true

    @admin.display(description="series", ordering="service")
    def series(self, obj):
        return obj.service or "(provider total)"

    @admin.display(description="severity", ordering="severity")
    def severity_badge(self, obj):
        return format_html(
            '<strong style="color:{}">{}</strong>', SEVERITY_COLOURS.get(obj.severity, "#000"),
            obj.severity,
        )

    @admin.display(description="actual", ordering="actual_amount")
    def actual(self, obj):
        return f"{_money(obj.actual_amount)} {obj.currency}"

    @admin.display(description="expected", ordering="expected_amount")
    def expected(self, obj):
        return _money(obj.expected_amount)

    @admin.display(description="lower", ordering="expected_lower")
    def lower(self, obj):
        return _money(obj.expected_lower)

    @admin.display(description="upper", ordering="expected_upper")
    def upper(self, obj):
        return _money(obj.expected_upper)

    @admin.display(description="impact", ordering="impact_amount")
    def impact(self, obj):
        return _money(obj.impact_amount)

    @admin.display(description="deviation", ordering="deviation_percent")
    def deviation(self, obj):
        return f"+{obj.deviation_percent}%"

    @admin.display(description="top services")
    def top_services_summary(self, obj):
        return ", ".join(
            f"{s['service']} (+{s['vs_expected']:,.2f})" for s in (obj.top_services or [])[:3]
        ) or "-"

    @admin.display(description="top services")
    def top_services_table(self, obj):
        rows = obj.top_services or []
        if not rows:
            return "-"
        return format_html(
            "<table><tr><th>service</th><th>actual</th><th>above its expectation</th></tr>{}</table>",
            format_html_join_rows(rows),
        )

    # -- views -----------------------------------------------------------------------

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("detect/", wrap(self.detect_view), name="costs_anomaly_detect"),
            path("<int:object_id>/dismiss/", wrap(self.dismiss_view), name="costs_anomaly_dismiss"),
            path("<int:object_id>/reopen/", wrap(self.reopen_view), name="costs_anomaly_reopen"),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "can_detect": self.has_change_permission(request)}
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = dict(extra_context or {})
        anomaly = self.get_object(request, object_id)
        if anomaly is not None:
            extra_context["anomaly_chart"] = chart_context(anomaly)
            extra_context["can_review"] = self.has_change_permission(request, anomaly)
        extra_context.update(
            show_save=False, show_save_and_continue=False, show_save_and_add_another=False,
            show_delete=False,
        )
        return super().change_view(request, object_id, form_url, extra_context)

    def _review_target(self, request, object_id) -> Anomaly:
        anomaly = get_object_or_404(
            self.get_queryset(request).select_related("provider", "dismissed_by"), pk=object_id
        )
        if not self.has_change_permission(request, anomaly):
            raise PermissionDenied
        return anomaly

    def _change_url(self, anomaly) -> str:
        return reverse("admin:costs_anomaly_change", args=[anomaly.pk])

    @transaction.atomic
    def _dismiss(self, request, anomaly, reason: str) -> None:
        """Dismiss and record it in the anomaly's admin history, both or neither
        (``Conflict`` when it already is dismissed)."""
        dismissed = anomaly_dismiss(anomaly=anomaly, user=request.user, reason=reason)
        anomaly_review_logged(anomaly=dismissed, user=request.user,
                              message=f'Dismissed: "{dismissed.dismiss_reason}"')

    @transaction.atomic
    def _reopen(self, request, anomaly) -> None:
        """Reopen; the service clears the dismissal (the API shows an active anomaly without
        one), so who dismissed it and why is kept in the history entry, read under the same
        lock so it is the dismissal that was undone."""
        current = anomaly_locked(anomaly, "dismissed_by")
        who = current.dismissed_by.get_username() if current.dismissed_by else "a deleted user"
        reopened = anomaly_reopen(anomaly=current)
        anomaly_review_logged(
            anomaly=reopened, user=request.user,
            message=f'Reopened (was dismissed by {who}: "{current.dismiss_reason}")',
        )

    def dismiss_view(self, request, object_id):
        anomaly = self._review_target(request, object_id)
        form = DismissForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                self._dismiss(request, anomaly, form.cleaned_data["reason"])
            except Conflict as exc:
                self.message_user(request, str(exc.detail), messages.ERROR)
            else:
                self.message_user(request, f"Dismissed {anomaly}.", messages.SUCCESS)
            return HttpResponseRedirect(self._change_url(anomaly))
        return self._dismiss_page(request, Anomaly.objects.filter(pk=anomaly.pk), form, action=None)

    def reopen_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        anomaly = self._review_target(request, object_id)
        try:
            self._reopen(request, anomaly)
        except Conflict as exc:
            self.message_user(request, str(exc.detail), messages.ERROR)
        else:
            self.message_user(request, f"Reopened {anomaly}.", messages.SUCCESS)
        return HttpResponseRedirect(self._change_url(anomaly))

    def _dismiss_page(self, request, queryset, form, action):
        """The reason form. For an action it posts back to the changelist URL it came from
        (filters and search in the query string) with what the changelist sent: the ticked
        ids and, after "Select all", ``select_across``, so Django hands the action the whole
        filtered queryset again. Never one field per anomaly: a selection of thousands
        would exceed DATA_UPLOAD_MAX_NUMBER_FIELDS."""
        preview = list(queryset[:DISMISS_PREVIEW_ROWS])
        context = {
            **self.admin_site.each_context(request),
            "title": "Dismiss anomalies" if action else f"Dismiss {preview[0]}",
            "opts": self.model._meta,
            "anomalies": preview,
            "total": queryset.count() if len(preview) == DISMISS_PREVIEW_ROWS else len(preview),
            "form": form,
            "form_url": request.get_full_path(),
            "action": action,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across") == "1",
            "media": self.media,
        }
        return TemplateResponse(request, "admin/costs/anomaly/dismiss.html", context)

    @admin.action(description="Dismiss selected anomalies (asks for a reason)", permissions=["change"])
    def dismiss_selected(self, request, queryset):
        form = DismissForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            dismissed = skipped = 0
            for anomaly in queryset:
                try:
                    self._dismiss(request, anomaly, form.cleaned_data["reason"])
                    dismissed += 1
                except (Conflict, Http404):
                    skipped += 1
            message = f"Dismissed {dismissed} anomal{'y' if dismissed == 1 else 'ies'}."
            if skipped:
                message += (f" {skipped} already dismissed or no longer anomalous, "
                            "left unchanged.")
            self.message_user(request, message, messages.SUCCESS)
            return None
        return self._dismiss_page(request, queryset, form, action="dismiss_selected")

    @admin.action(description="Reopen selected anomalies", permissions=["change"])
    def reopen_selected(self, request, queryset):
        reopened = 0
        for anomaly in queryset.filter(status=Anomaly.Status.DISMISSED):
            try:
                self._reopen(request, anomaly)
            except (Conflict, Http404):  # reopened or removed meanwhile
                continue
            reopened += 1
        self.message_user(request, f"Reopened {reopened} anomal{'y' if reopened == 1 else 'ies'}.")

    def detect_view(self, request):
        if not self.has_change_permission(request):
            raise PermissionDenied
        today = utc_today()
        form = DetectForm(
            request.POST or None,
            initial={"date_from": today - timedelta(days=60), "date_to": today - timedelta(days=1)},
        )
        form.fields["provider"].queryset = member_organizations_only(
            form.fields["provider"].queryset, request.user, "organization"
        )
        if request.method == "POST" and form.is_valid():
            from costs.tasks import detect_anomalies

            provider = form.cleaned_data["provider"]
            args = (provider.pk, form.cleaned_data["date_from"].isoformat(),
                    form.cleaned_data["date_to"].isoformat())
            transaction.on_commit(lambda: detect_anomalies.delay(*args))
            self.message_user(
                request,
                f"Anomaly detection of {provider} for {args[1]}..{args[2]} started.",
                messages.SUCCESS,
            )
            return HttpResponseRedirect(reverse("admin:costs_anomaly_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Detect anomalies now",
            "opts": self.model._meta,
            "form": form,
        }
        return TemplateResponse(request, "admin/costs/anomaly/detect.html", context)


def format_html_join_rows(rows):
    from django.utils.html import format_html_join

    return format_html_join(
        "",
        "<tr><td>{}</td><td>{}</td><td>+{}</td></tr>",
        ((r["service"], f"{r['amount']:,.2f}", f"{r['vs_expected']:,.2f}") for r in rows),
    )


# --------------------------------------------------------------------------------------
# Policies, webhooks and the delivery log
# --------------------------------------------------------------------------------------


@admin.register(AnomalyPolicy)
class AnomalyPolicyAdmin(OrganizationScopedAdminMixin, admin.ModelAdmin):
    """Per-organization thresholds; an organization without one uses the defaults."""

    list_display = ["organization", "min_impact_amount", "min_deviation_percent",
                    "high_impact_amount", "critical_impact_amount", "sensitivity", "updated_at"]
    fieldsets = [
        (None, {"fields": ["organization", "sensitivity", "material_daily_spend"]}),
        ("Recorded at all (low)", {"fields": ["min_impact_amount", "min_deviation_percent"]}),
        ("Medium", {"fields": ["medium_impact_amount", "medium_deviation_percent"]}),
        ("High", {"fields": ["high_impact_amount", "high_deviation_percent"]}),
        ("Critical", {"fields": ["critical_impact_amount", "critical_deviation_percent"]}),
    ]


def mask_url(url: str) -> str:
    """``scheme://host/…`` and the last 4 characters: enough to tell webhooks apart, not
    enough to post to a Slack-style hook, whose URL is its credential."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}/…{url[-4:]}"


class WriteOnlyURLInput(forms.URLInput):
    """Never renders a value: the stored URL is not sent to the browser."""

    def format_value(self, value):
        return None


class AlertWebhookForm(forms.ModelForm):
    """The signing secret is write-only: required when the webhook is created, kept when
    left empty afterwards, never displayed. With ``url_write_only`` (set by the admin for
    everyone but superusers) the URL is handled the same way."""

    url_write_only = False

    new_secret = forms.CharField(
        label="Signing secret",
        required=False,
        min_length=16,
        max_length=200,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only, at least 16 characters. Leave empty to keep the stored secret.",
    )

    url = forms.URLField(max_length=1000, assume_scheme="https")

    class Meta:
        model = AlertWebhook
        fields = ["organization", "name", "url", "min_severity", "max_age_days", "is_active"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.url_write_only and "url" in self.fields:
            url = self.fields["url"]
            url.widget = WriteOnlyURLInput()
            url.required = not self.instance.pk
            url.help_text = "Write-only. Leave empty to keep the stored URL (shown masked)."

    def clean_url(self):
        url = self.cleaned_data["url"]
        if not url and self.instance.pk:
            return self.instance.url  # write-only and left empty: keep it
        problem = destination_problem(url)
        if problem:
            raise forms.ValidationError(problem)
        return url

    def clean(self):
        cleaned = super().clean()
        if not self.instance.pk and not cleaned.get("new_secret"):
            self.add_error("new_secret", "a signing secret is required")
        return cleaned

    def save(self, commit=True):
        webhook = super().save(commit=False)
        if self.cleaned_data.get("new_secret"):
            webhook.secret = self.cleaned_data["new_secret"]
        if commit:
            webhook.save()
        return webhook


@admin.register(AlertWebhook)
class AlertWebhookAdmin(OrganizationScopedAdminMixin, admin.ModelAdmin):
    """Superusers (operators) see and edit the URL. Everyone else sees it masked on the
    list and the page and may only replace it (write-only), if allowed to change the
    webhook at all: for Slack-style hooks the URL is the credential."""

    form = AlertWebhookForm
    list_display = ["name", "organization", "url", "min_severity", "max_age_days", "is_active",
                    "created_at"]
    list_filter = ["is_active", "min_severity", "organization"]
    search_fields = ["name", "url"]
    fields = ["organization", "name", "url", "min_severity", "max_age_days", "is_active",
              "new_secret"]

    @method_decorator(sensitive_post_parameters("new_secret"))
    def changeform_view(self, *args, **kwargs):
        # A 500 while saving must not print the secret in an error report.
        return super().changeform_view(*args, **kwargs)

    @admin.display(description="URL")
    def masked_url(self, obj):
        return mask_url(obj.url)

    def get_list_display(self, request):
        if request.user.is_superuser:
            return self.list_display
        return ["masked_url" if name == "url" else name for name in self.list_display]

    def lookup_allowed(self, lookup, value, request=None):
        # ?url__startswith=... in the list's query string would spell the URL out too.
        if lookup.split("__")[0] in {"url", "secret_encrypted"} and not (
            request is not None and request.user.is_superuser
        ):
            return False
        return super().lookup_allowed(lookup, value, request)

    def get_search_fields(self, request):
        # Searching the URL would let a reviewer guess it a character at a time.
        if request.user.is_superuser:
            return self.search_fields
        return [name for name in self.search_fields if name != "url"]

    def get_fields(self, request, obj=None):
        if request.user.is_superuser:
            return self.fields
        # A view-only page renders every listed field from the object, so the URL (and
        # the secret's empty input) are listed only where the user may write them.
        writable = (self.has_change_permission(request, obj) if obj
                    else self.has_add_permission(request))
        fields = ["organization", "name"]
        fields += ["masked_url"] if obj else []
        fields += ["url"] if writable else []
        fields += ["min_severity", "max_age_days", "is_active"]
        return [*fields, "new_secret"] if writable else fields

    def get_readonly_fields(self, request, obj=None):
        return [] if request.user.is_superuser else ["masked_url"]

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        if request.user.is_superuser:
            return form
        return type(form.__name__, (form,), {"url_write_only": True})


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(OrganizationScopedAdminMixin, admin.ModelAdmin):
    """The delivery log: one row per alert, with attempts, last answer and error."""

    organization_lookup = "webhook__organization"

    list_display = ["created_at", "webhook", "anomaly_link", "status", "attempts",
                    "response_code", "error", "last_attempt_at", "delivered_at"]
    list_filter = ["status", "webhook__organization", "webhook"]
    search_fields = ["webhook__name", "error"]
    list_select_related = ["webhook", "anomaly"]
    readonly_fields = ["webhook", "anomaly", "payload", "status", "attempts", "response_code",
                       "error", "created_at", "last_attempt_at", "delivered_at"]
    actions = ["resend_failed"]

    def has_add_permission(self, request):
        return False

    @admin.display(description="anomaly")
    def anomaly_link(self, obj):
        return format_html(
            '<a href="{}">#{}</a>', reverse("admin:costs_anomaly_change", args=[obj.anomaly_id]),
            obj.anomaly_id,
        )

    @admin.action(description="Send the selected failed deliveries again", permissions=["change"])
    def resend_failed(self, request, queryset):
        count = sum(webhook_delivery_resend(delivery=d) for d in queryset)
        self.message_user(request, f"Queued {count} delivery(ies) again.")
