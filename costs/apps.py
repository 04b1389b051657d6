from django.apps import AppConfig
from django.db.models.signals import post_migrate


class CostsConfig(AppConfig):
    name = "costs"
    verbose_name = "Costs"

    def ready(self):
        from costs.schedule import ensure_periodic_tasks

        post_migrate.connect(ensure_periodic_tasks, sender=self)
