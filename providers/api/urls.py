from infraaudit.routers import OptionalSlashRouter
from providers.api.views import ProviderViewSet

router = OptionalSlashRouter()
router.register("providers", ProviderViewSet, basename="provider")

urlpatterns = router.urls
