from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from infraaudit import health

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/v1/", include("providers.api.urls")),
    path("api/v1/", include("costs.api.urls")),
    path("admin/", admin.site.urls),
]

handler400 = "infraaudit.errors.json_400"
handler403 = "infraaudit.errors.json_403"
handler404 = "infraaudit.errors.json_404"
handler500 = "infraaudit.errors.json_500"
