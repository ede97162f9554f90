"""Who may refund what: the owner within the refund window, staff with the refund permission."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils import timezone

from payments.conf import payments_settings
from payments.models import Payment

REFUND_PERMISSION = "payments.refund_payment"


def is_refund_staff(user: Any) -> bool:
    return bool(user and user.is_authenticated and user.is_staff and user.has_perm(REFUND_PERMISSION))


def owner_refund_limit(payment: Payment) -> int:
    """The most the owner may take back themselves (the fee stays unless REFUND_FEE)."""
    refundable = payment.refundable_amount()
    if payments_settings.REFUND_FEE:
        return refundable
    return max(refundable - payment.fee, 0)


def refund_allowed(*, user: Any, payment: Payment, starts_at: datetime | None) -> tuple[bool, int]:
    """(allowed, most refundable) for `user`; the owner only until REFUND_CUTOFF before `starts_at`."""
    if is_refund_staff(user):
        return True, payment.refundable_amount()
    if payment.owner_id != getattr(user, "pk", None):
        return False, 0
    if starts_at is not None and timezone.now() > starts_at - payments_settings.REFUND_CUTOFF:
        return False, 0
    return True, owner_refund_limit(payment)
