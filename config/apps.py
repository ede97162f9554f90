"""The project's own app: wires the production start-up checks and the token revocation in."""

from django.apps import AppConfig


class SiteConfig(AppConfig):
    name = "config"
    label = "site"
    verbose_name = "Site"

    def ready(self) -> None:
        from django.conf import settings
        from django.db.models.signals import post_save

        from config import production  # noqa: F401  (registers its system check)
        from config.security import revoke_tokens_on_password_change

        post_save.connect(
            revoke_tokens_on_password_change,
            sender=settings.AUTH_USER_MODEL,
            dispatch_uid="config.revoke_tokens_on_password_change",
        )
