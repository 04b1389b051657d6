from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from infraaudit import errors, health

urlpatterns = [
    re_path(r"^healthz/?$", health.healthz, name="healthz"),
    re_path(r"^readyz/?$", health.readyz, name="readyz"),
    re_path(r"^api/schema/?$", SpectacularAPIView.as_view(), name="schema"),
    re_path(r"^api/docs/?$", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/v1/", include("providers.api.urls")),
    path("api/v1/", include("costs.api.urls")),
    re_path(r"^api/", errors.api_not_found),  # after every API route
    path("admin/", admin.site.urls),
]

handler400 = "infraaudit.errors.json_400"
handler403 = "infraaudit.errors.json_403"
handler404 = "infraaudit.errors.json_404"
handler500 = "infraaudit.errors.json_500"
