"""The project's own app: wires the production start-up checks into Django's check framework."""

from django.apps import AppConfig


class SiteConfig(AppConfig):
    name = "config"
    label = "site"
    verbose_name = "Site"

    def ready(self) -> None:
        from config import production  # noqa: F401  (registers its system check)
