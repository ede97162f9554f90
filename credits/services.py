"""Credit services: buy a package (paid through the payments app), add its credits once it is
paid, take them back pro rata on a refund, spend them, and adjust them as staff.

Every change of a wallet is one entry written with the new balance under the wallet's row lock,
so the balance always equals the sum of the entries and never goes below zero.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.db.models import Exists, F, OuterRef, Sum
from django.utils import timezone

from credits import emails
from credits.exceptions import CreditsError, InsufficientCredits
from credits.models import CreditPackage, CreditPurchase, Wallet, WalletEntry
from payments import money, policy
from payments import selectors as payment_selectors
from payments import services as payment_services
from payments.models import Payment
from payments.services import PaymentResult, PaymentTerms
from payments.states import PAID_STATUSES, PaymentStatus

logger = logging.getLogger(__name__)


# Buying ---------------------------------------------------------------------------------


def purchase_create(*, user: Any, package_id: int) -> CreditPurchase:
    """A pending purchase of an active package, at the package's credits and price."""
    package = CreditPackage.objects.filter(pk=package_id, active=True).first()
    if package is None:
        raise CreditsError("This package is not on sale.", code="unknown_package")
    money.validate_amount(package.price, package.currency)
    purchase = CreditPurchase.objects.create(
        user=user, package=package, credits=package.credits, price=package.price, currency=package.currency
    )
    logger.info("credit purchase created", extra={"purchase_id": purchase.pk, "package_id": package.pk})
    return purchase


def _terms(purchase: CreditPurchase) -> PaymentTerms:
    """What the payments app is told: the purchase's owner and its price, never the client's."""
    return PaymentTerms(
        payable=purchase,
        owner=purchase.user,
        subtotal=purchase.price,
        fee=0,
        total=purchase.price,
        currency=purchase.currency,
        description=purchase.payment_description,
    )


def _payable_purchase(purchase_id: int) -> CreditPurchase:
    purchase = CreditPurchase.objects.select_related("package", "user").get(pk=purchase_id)
    if purchase.status != CreditPurchase.Status.PENDING:
        raise CreditsError(
            f"A {purchase.get_status_display().lower()} purchase cannot be paid.", code="not_payable"
        )
    return purchase


def purchase_pay(
    *, purchase_id: int, payment_method_id: str = "", confirm: bool = False, save_payment_method: bool = False
) -> PaymentResult:
    """Start (or resume) paying for a pending purchase."""
    return payment_services.payment_start(
        terms=_terms(_payable_purchase(purchase_id)),
        payment_method_id=payment_method_id,
        confirm=confirm,
        save_payment_method=save_payment_method,
    )


def purchase_retry(*, purchase_id: int, payment_method_id: str = "") -> PaymentResult:
    """A new attempt after a failed one."""
    purchase = _payable_purchase(purchase_id)
    payment = payment_selectors.latest_payment(purchase)
    if payment is None:
        raise CreditsError("No payment has been started for this purchase yet.", code="no_payment")
    return payment_services.payment_retry(payment=payment, payment_method_id=payment_method_id)


def purchase_checkout(*, purchase_id: int, success_url: str, cancel_url: str):
    """Pay for a pending purchase on Stripe's hosted page."""
    return payment_services.payment_checkout_start(
        terms=_terms(_payable_purchase(purchase_id)), success_url=success_url, cancel_url=cancel_url
    )


# The ledger ---------------------------------------------------------------------------------


def _lock_wallet(user_id: int) -> Wallet:
    """The user's wallet, locked (made on first use)."""
    Wallet.objects.get_or_create(user_id=user_id)
    return Wallet.objects.select_for_update().get(user_id=user_id)


def _write(wallet: Wallet, kind: str, amount: int, **fields: Any) -> WalletEntry:
    """Apply `amount` to the locked `wallet` and record it; refuses to go below zero."""
    if wallet.balance + amount < 0:
        raise InsufficientCredits(f"Only {wallet.balance} credits are left.")
    wallet.balance += amount
    wallet.save(update_fields=["balance", "updated_at"])
    entry = WalletEntry.objects.create(
        wallet=wallet, kind=kind, amount=amount, balance_after=wallet.balance, **fields
    )
    logger.info(
        "wallet changed",
        extra={"wallet_id": wallet.pk, "kind": kind, "amount": amount, "balance": wallet.balance},
    )
    return entry


def wallet_of(user: Any) -> Wallet:
    """The user's wallet (an empty one, unsaved, before their first credits)."""
    return Wallet.objects.filter(user=user).first() or Wallet(user=user, balance=0)


@transaction.atomic
def credits_add_for_payment(*, purchase_id: int) -> WalletEntry | None:
    """The purchase is paid: add its credits, once (None when they were added already)."""
    purchase = CreditPurchase.objects.select_for_update().get(pk=purchase_id)
    wallet = _lock_wallet(purchase.user_id)
    if WalletEntry.objects.filter(kind=WalletEntry.Kind.PURCHASE, purchase=purchase).exists():
        return None
    if purchase.status == CreditPurchase.Status.PENDING:
        purchase.status = CreditPurchase.Status.PAID
        purchase.paid_at = timezone.now()
        purchase.save(update_fields=["status", "paid_at"])
    entry = _write(wallet, WalletEntry.Kind.PURCHASE, purchase.credits, purchase=purchase)
    emails.OUTBOX.queue(purchase, "purchased")  # with the entry: a lost enqueue is swept
    return entry


def credits_for_refunded(purchase: CreditPurchase, refunded: int) -> int:
    """The credits a purchase gives back when `refunded` minor units of its price are refunded:
    pro rata, rounded up (in the user's disfavour, by less than one credit)."""
    return -(-purchase.credits * min(refunded, purchase.price) // purchase.price)


def _taken_back(purchase: CreditPurchase) -> int:
    """Credits already taken back (or written off as a shortfall) for the purchase's refunds."""
    total = (
        WalletEntry.objects.filter(purchase=purchase, kind=WalletEntry.Kind.REFUND)
        .annotate(accounted=-F("amount") + F("shortfall"))
        .aggregate(n=Sum("accounted"))["n"]
    )
    return total or 0


def refund_check(*, purchase: CreditPurchase, payment: Payment, user: Any, amount: int | None) -> None:
    """Before a refund the owner asks for: refuse it (409 credits_spent) when the credits it takes
    back are no longer in the wallet. Staff who may refund force it: the wallet then goes down
    to zero and the rest is recorded as a shortfall."""
    if policy.is_refund_staff(user):
        return
    allowed, limit = policy.refund_allowed(user=user, payment=payment, starts_at=None)
    amount = limit if amount is None else amount
    if not allowed or amount <= 0 or amount > limit:
        return  # the payments app refuses it with its own words
    needed = credits_for_refunded(purchase, payment.refunded_amount() + amount) - _taken_back(purchase)
    if needed > wallet_of(purchase.user).balance:
        raise CreditsError(
            f"{needed} credits would be taken back, but only {wallet_of(purchase.user).balance} are left: "
            "credits already spent cannot be refunded.",
            code="credits_spent",
        )


@transaction.atomic
def credits_remove_for_refund(
    *, purchase_id: int, payment_id: int, refund_id: int | None
) -> WalletEntry | None:
    """Money went back for the purchase: take back its credits pro rata to all that is refunded,
    once per refund (None when there is nothing left to take back)."""
    purchase = CreditPurchase.objects.select_for_update().get(pk=purchase_id)
    wallet = _lock_wallet(purchase.user_id)
    refunds = WalletEntry.objects.filter(kind=WalletEntry.Kind.REFUND)
    if refund_id is not None and refunds.filter(refund_id=refund_id).exists():
        return None
    if refund_id is not None:
        emails.OUTBOX.queue(purchase, f"refund:{refund_id}")
    payment = Payment.objects.get(pk=payment_id)
    refunded = payment.refunded_amount()
    needed = credits_for_refunded(purchase, refunded) - _taken_back(purchase)
    if needed <= 0:
        return None
    removed = min(needed, wallet.balance)
    if removed < needed:
        logger.warning(
            "refunded credits were spent: shortfall recorded",
            extra={"purchase_id": purchase.pk, "shortfall": needed - removed},
        )
    if refunded >= purchase.price and purchase.status != CreditPurchase.Status.REFUNDED:
        purchase.status = CreditPurchase.Status.REFUNDED
        purchase.save(update_fields=["status"])
    return _write(
        wallet,
        WalletEntry.Kind.REFUND,
        -removed,
        purchase=purchase,
        refund_id=refund_id,
        shortfall=needed - removed,
    )


@transaction.atomic
def credits_spend(*, user: Any, amount: int, reason: str = "", reference: str = "") -> WalletEntry:
    """Spend `amount` credits; refuses more than the wallet holds. The same `reference` again
    returns the first spend (a retried request spends once)."""
    if amount <= 0:
        raise CreditsError("Spend a positive number of credits.", code="invalid_amount")
    wallet = _lock_wallet(user.pk)
    if reference:
        earlier = WalletEntry.objects.filter(wallet=wallet, reference=reference).first()
        if earlier is not None:
            if (earlier.kind, -earlier.amount) != (WalletEntry.Kind.SPEND, amount):
                raise CreditsError("This reference was used for another spend.", code="reference_reused")
            return earlier
    return _write(wallet, WalletEntry.Kind.SPEND, -amount, reason=reason[:255], reference=reference)


@transaction.atomic
def credits_adjust(*, user: Any, amount: int, reason: str, staff: Any) -> WalletEntry:
    """A staff correction of a user's credits (never below zero), with its reason and author."""
    if amount == 0 or not reason.strip():
        raise CreditsError("An adjustment needs a non-zero amount and a reason.", code="invalid_adjustment")
    wallet = _lock_wallet(user.pk)
    return _write(wallet, WalletEntry.Kind.ADJUSTMENT, amount, reason=reason[:255], created_by=staff)


def credits_sweep(*, limit: int = 500) -> dict[str, int]:
    """What the payment signals should have done, done now: credits for paid purchases that have
    none (their receiver failed: the database was down for a moment), and credits taken back
    for refunds that were not. Both are idempotent; run by beat every minute."""
    outcome = {"added": 0, "taken_back": 0}
    credited = WalletEntry.objects.filter(purchase=OuterRef("pk"), kind=WalletEntry.Kind.PURCHASE)
    purchases = CreditPurchase.objects.annotate(
        payment_status=payment_selectors.latest_payment_status(CreditPurchase), credited=Exists(credited)
    )
    for purchase_id in purchases.filter(payment_status__in=PAID_STATUSES, credited=False).values_list(
        "pk", flat=True
    )[:limit]:
        if credits_add_for_payment(purchase_id=purchase_id) is not None:
            outcome["added"] += 1
    refunded = (PaymentStatus.PARTIALLY_REFUNDED, PaymentStatus.REFUNDED)
    for purchase in purchases.filter(payment_status__in=refunded, credited=True).exclude(
        status=CreditPurchase.Status.REFUNDED
    )[:limit]:
        payment = payment_selectors.payments_of(purchase).sales().first()
        if payment is not None and credits_remove_for_refund(
            purchase_id=purchase.pk, payment_id=payment.pk, refund_id=None
        ):
            outcome["taken_back"] += 1
    if any(outcome.values()):
        logger.warning("credits swept", extra=outcome)
    return outcome
