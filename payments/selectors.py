"""What a host reads about the payments of its objects, without knowing how they point at them
(a content type and an object id): the read side beside the services' writes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import CharField, OuterRef, Subquery
from django.db.models.functions import Cast

from payments.models import Payment, PaymentQuerySet, Refund

M = TypeVar("M", bound=models.Model)


def payments_of(payable: models.Model) -> PaymentQuerySet:
    """Every attempt to pay for `payable` (use .sales(), .unpaid(), .open() to narrow)."""
    return Payment.objects.for_payable(payable)


def latest_payment(payable: models.Model) -> Payment | None:
    """The payable's latest attempt, or None."""
    return payments_of(payable).order_by("-attempt").first()


def payment_of(payable: models.Model, payment_id: int) -> Payment:
    """One attempt of the payable's by id (Payment.DoesNotExist for another payable's)."""
    return payments_of(payable).get(pk=payment_id)


def refund_of(payable: models.Model, refund_id: int) -> Refund:
    """One refund of the payable's payments by id (Refund.DoesNotExist for another payable's)."""
    return Refund.objects.select_related("payment").get(pk=refund_id, payment__in=payments_of(payable))


def payable_id(payment: Payment, model: type[models.Model]) -> Any:
    """The primary key of the `model` instance `payment` pays for (of the key's own type); None
    when it pays for something else (a host's receivers hear about every payable's payments)."""
    if payment.content_type_id != ContentType.objects.get_for_model(model).pk:
        return None
    return model._meta.pk.to_python(payment.object_id)


def latest_payments(model: type[M], payables: Iterable[M]) -> dict[Any, Payment]:
    """{payable pk: latest attempt} for many payables of `model` at once, refunds prefetched."""
    keys = [str(payable.pk) for payable in payables]
    payments = Payment.objects.filter(
        content_type=ContentType.objects.get_for_model(model), object_id__in=keys
    )
    latest: dict[Any, Payment] = {}
    for payment in payments.prefetch_related("refunds").order_by("attempt"):
        latest[model._meta.pk.to_python(payment.object_id)] = payment
    return latest


def latest_payment_status(model: type[models.Model]) -> Subquery:
    """An expression for `.annotate()` on a queryset of `model`: its latest attempt's status."""
    latest = Payment.objects.filter(
        content_type=ContentType.objects.get_for_model(model), object_id=Cast(OuterRef("pk"), CharField())
    ).order_by("-attempt")
    return Subquery(latest.values("status")[:1])
