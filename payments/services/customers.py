"""The payer's Stripe Customer and saved cards."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction

from payments.exceptions import (
    NotFound,
)
from payments.gateway import get_gateway
from payments.gateway.base import (
    PaymentMethodInfo,
    SetupIntentInfo,
)
from payments.models import Customer, Installation
from payments.services.base import logger

# Customers ----------------------------------------------------------------------------


def customer_get_or_create(*, user: Any) -> Customer:
    """The user's Stripe customer, created at Stripe once (the key is derived from the user)."""
    try:
        customer, _ = Customer.objects.get_or_create(user=user)
    except IntegrityError:
        customer = Customer.objects.get(user=user)
    if customer.stripe_customer_id:
        return customer
    stripe_id = get_gateway().create_customer(
        email=getattr(user, "email", "") or "",
        name=(user.get_full_name() if hasattr(user, "get_full_name") else "") or "",
        metadata={"installation": Installation.current_id(), "user_id": str(user.pk)},
        idempotency_key=f"customer:{customer.uid}",
    )
    Customer.objects.filter(pk=customer.pk, stripe_customer_id="").update(stripe_customer_id=stripe_id)
    customer.refresh_from_db()
    return customer


def payment_methods_list(*, user: Any) -> list[PaymentMethodInfo]:
    """The user's saved cards (none before their first payment)."""
    customer = Customer.objects.filter(user=user).exclude(stripe_customer_id="").first()
    if customer is None:
        return []
    return get_gateway().list_payment_methods(customer.stripe_customer_id)


def payment_method_detach(*, user: Any, payment_method_id: str) -> None:
    """Remove one of the user's saved cards; a card that is not theirs is 'not found'."""
    if payment_method_id not in {m.id for m in payment_methods_list(user=user)}:
        raise NotFound("No such saved card.")
    get_gateway().detach_payment_method(
        payment_method_id, idempotency_key=f"detach:{Installation.current_id()}:{payment_method_id}"
    )
    logger.info("payment method detached", extra={"user_id": user.pk, "payment_method": payment_method_id})


def setup_intent_create(*, user: Any) -> SetupIntentInfo:
    """Start saving a card for the user (Stripe.js confirms it with the card element)."""
    customer = customer_get_or_create(user=user)
    with transaction.atomic():
        locked = Customer.objects.select_for_update().get(pk=customer.pk)
        locked.setup_intents_created += 1
        locked.save(update_fields=["setup_intents_created"])
    return get_gateway().create_setup_intent(
        customer_id=locked.stripe_customer_id,
        idempotency_key=f"setup:{locked.stripe_customer_id}:{locked.setup_intents_created}",
    )
