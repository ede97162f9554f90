"""Credit emails: a purchase's credits added, and credits taken back by a refund; sent once per
kind through the site's outbox (config.outbox)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings

from config.outbox import Email, Outbox
from credits.models import CreditEmail, CreditPurchase, WalletEntry
from payments import money
from payments import selectors as payment_selectors


def compose(purchase: CreditPurchase, kind: str) -> Email:
    """The email of `kind` for `purchase`. Kinds: purchased, refund:<refund id>."""
    site = settings.SITE_URL.rstrip("/")
    context = {
        "purchase": purchase,
        "user": purchase.user,
        "price": money.format_amount(purchase.price, purchase.currency),
        "wallet_url": f"{site}/credits/",
        "balance": getattr(getattr(purchase.user, "credit_wallet", None), "balance", 0),
    }
    if kind == "purchased":
        return Email(
            purchase.user.email,
            f"{purchase.credits} credits are in your wallet",
            "emails/credits_purchased",
            context,
        )
    if kind.startswith("refund:"):
        refund_id = int(kind.split(":", 1)[1])
        refund = payment_selectors.refund_of(purchase, refund_id)
        entry = WalletEntry.objects.filter(kind=WalletEntry.Kind.REFUND, refund_id=refund_id).first()
        context.update(
            refund_amount=money.format_amount(refund.amount, refund.currency),
            credits_taken=-entry.amount if entry else 0,
            shortfall=entry.shortfall if entry else 0,
        )
        return Email(
            purchase.user.email, f"Refund for {purchase.package.name}", "emails/credits_refunded", context
        )
    raise ValueError(f"Unknown email kind {kind!r}")


def recipient_of(purchase: CreditPurchase, kind: str) -> str:
    if kind == "purchased" or kind.startswith("refund:"):
        return purchase.user.email
    raise ValueError(f"Unknown email kind {kind!r}")


def _load(purchase_id: int) -> CreditPurchase:
    return CreditPurchase.objects.select_related("package", "user", "user__credit_wallet").get(pk=purchase_id)


OUTBOX = Outbox(
    log=CreditEmail,
    owner="purchase",
    task="credits.tasks.send_credit_email",
    load=_load,
    compose=compose,
    recipient_of=recipient_of,
    message_id=lambda purchase_id, kind: f"<credits-{purchase_id}-{kind.replace(':', '-')}@bookings.local>",
)
EMAIL_RETRY_DELAY = 30.0
EMAIL_SWEEP_AFTER = timedelta(minutes=7)
