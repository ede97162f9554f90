"""Receivers that turn payment outcomes into wallet entries (sent after the payment's commit)."""

from __future__ import annotations

from django.dispatch import receiver

from credits import services
from credits.models import CreditPurchase
from payments import selectors as payment_selectors
from payments.signals import payment_refunded, payment_succeeded


@receiver(payment_succeeded, dispatch_uid="credits.add_on_payment")
def add_on_payment(sender, payment, **kwargs) -> None:
    purchase_id = payment_selectors.payable_id(payment, CreditPurchase)
    if purchase_id is not None:
        services.credits_add_for_payment(purchase_id=purchase_id)


@receiver(payment_refunded, dispatch_uid="credits.take_back_on_refund")
def take_back_on_refund(sender, payment, refund=None, **kwargs) -> None:
    purchase_id = payment_selectors.payable_id(payment, CreditPurchase)
    if purchase_id is not None:
        services.credits_remove_for_refund(
            purchase_id=purchase_id,
            payment_id=payment.pk,
            refund_id=refund.pk if refund is not None else None,
        )
