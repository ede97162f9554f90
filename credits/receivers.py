"""Receivers that bring a purchase's credits in line with its payment (sent after the payment's
commit); what a failing receiver misses, the sweep does."""

from __future__ import annotations

from django.dispatch import receiver

from credits import services
from credits.models import CreditPurchase
from payments import selectors as payment_selectors
from payments.signals import payment_refund_failed, payment_refunded, payment_succeeded


@receiver(payment_succeeded, dispatch_uid="credits.settle_on_payment")
@receiver(payment_refunded, dispatch_uid="credits.settle_on_refund")
@receiver(payment_refund_failed, dispatch_uid="credits.settle_on_refund_failed")
def settle(sender, payment, **kwargs) -> None:
    purchase_id = payment_selectors.payable_id(payment, CreditPurchase)
    if purchase_id is not None:
        services.credits_settle(purchase_id=purchase_id)
