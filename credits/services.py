"""Credit services: buy a package (paid through the payments app), add its credits once it is
paid, take them back pro rata on a refund, spend them, and adjust them as staff.

Every change of a wallet is one entry written with the new balance under the wallet's row lock,
so the balance always equals the sum of the entries and never goes below zero.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.db.models import CharField, Exists, OuterRef
from django.db.models.functions import Cast
from django.utils import timezone

from credits import emails
from credits.exceptions import CreditsError, InsufficientCredits
from credits.models import CreditPackage, CreditPurchase, Wallet, WalletEntry
from payments import money, policy
from payments import selectors as payment_selectors
from payments import services as payment_services
from payments.models import Payment, Refund
from payments.services import PaymentResult, PaymentTerms
from payments.states import REFUND_FINAL, REFUND_HOLDS_MONEY

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


def _sale(purchase: CreditPurchase) -> Payment | None:
    """The payment that bought the purchase (never one refunded as unwanted: a duplicate, a late one)."""
    return payment_selectors.payments_of(purchase).sales().order_by("pk").first()


def _credit_purchase(purchase: CreditPurchase, wallet: Wallet) -> WalletEntry:
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


def _refunds_of(sale: Payment) -> list[Refund]:
    return list(Refund.objects.filter(payment=sale).order_by("pk"))


def _held(refunds: list[Refund]) -> int:
    return sum(r.amount for r in refunds if r.status in REFUND_HOLDS_MONEY)


@transaction.atomic
def credits_settle(*, purchase_id: int) -> list[WalletEntry]:
    """Bring the purchase's credits in line with its payment and refunds, once each (what the
    payment signals and the sweep call; nothing to do is the common case):

    - paid, and not credited yet: its credits are added (before any refund is applied);
    - each refund that holds money (pending or succeeded) takes back its share, once: the
      credits for all refunded up to it minus those for all refunded before it, rounded up;
      what was spent meanwhile is recorded as the entry's shortfall;
    - a refund that failed after it took credits gives them back, once.
    """
    purchase = CreditPurchase.objects.select_for_update().get(pk=purchase_id)
    wallet = _lock_wallet(purchase.user_id)
    sale = _sale(purchase)
    if sale is None:
        return []
    written: list[WalletEntry] = []
    entries = WalletEntry.objects.filter(purchase=purchase)
    if not entries.filter(kind=WalletEntry.Kind.PURCHASE).exists():
        written.append(_credit_purchase(purchase, wallet))
    done = {(e.kind, e.refund_id): e for e in entries.filter(refund_id__isnull=False)}
    holds = _open_holds(purchase)
    refunds = _refunds_of(sale)
    refunded = 0
    for refund in refunds:
        if refund.status in REFUND_HOLDS_MONEY:
            before, refunded = refunded, refunded + refund.amount
            if (WalletEntry.Kind.REFUND, refund.pk) in done:
                continue
            share = credits_for_refunded(purchase, refunded) - credits_for_refunded(purchase, before)
            if holds:  # the credits held while this refund was asked of Stripe
                written.append(_release(wallet, holds.pop(0)))
            taken = min(share, wallet.balance)
            if taken < share:
                logger.warning(
                    "refunded credits were spent: shortfall recorded",
                    extra={"purchase_id": purchase.pk, "refund_id": refund.pk, "shortfall": share - taken},
                )
            written.append(
                _write(
                    wallet,
                    WalletEntry.Kind.REFUND,
                    -taken,
                    purchase=purchase,
                    refund_id=refund.pk,
                    shortfall=share - taken,
                )
            )
            emails.OUTBOX.queue(purchase, f"refund:{refund.pk}")
        elif refund.status in REFUND_FINAL:
            took = done.get((WalletEntry.Kind.REFUND, refund.pk))
            if took is not None and (WalletEntry.Kind.REFUND_REVERSED, refund.pk) not in done and took.amount:
                written.append(
                    _write(
                        wallet,
                        WalletEntry.Kind.REFUND_REVERSED,
                        -took.amount,
                        purchase=purchase,
                        refund_id=refund.pk,
                    )
                )
    status = CreditPurchase.Status.REFUNDED if refunded >= purchase.price else CreditPurchase.Status.PAID
    if purchase.status != status:
        purchase.status = status
        purchase.save(update_fields=["status"])
    return written


def _open_holds(purchase: CreditPurchase) -> list[WalletEntry]:
    entries = WalletEntry.objects.filter(purchase=purchase)
    released = {
        int(ref.removeprefix("release:"))
        for ref in entries.filter(kind=WalletEntry.Kind.HOLD_RELEASED).values_list("reference", flat=True)
    }
    holds = entries.filter(kind=WalletEntry.Kind.REFUND_HOLD).order_by("pk")
    return [hold for hold in holds if hold.pk not in released]


def _release(wallet: Wallet, hold: WalletEntry) -> WalletEntry:
    return _write(
        wallet,
        WalletEntry.Kind.HOLD_RELEASED,
        -hold.amount,
        purchase=hold.purchase,
        reference=f"release:{hold.pk}",
    )


@transaction.atomic
def refund_hold(
    *, purchase: CreditPurchase, payment: Payment, user: Any, amount: int | None, force: bool = False
) -> WalletEntry | None:
    """Before a refund is asked of Stripe: hold the credits it takes back (no spend can use them
    while Stripe answers), or refuse it (409 credits_spent) when they are no longer in the wallet.
    Staff who may refund can force it (`force`, nothing held): the wallet then goes to zero and
    the rest is recorded as a shortfall. The refund's own entry releases the hold
    (`credits_settle`); `hold_release` gives it back when the refund is not made."""
    CreditPurchase.objects.select_for_update().get(pk=purchase.pk)
    wallet = _lock_wallet(purchase.user_id)
    allowed, limit = policy.refund_allowed(user=user, payment=payment, starts_at=None)
    amount = limit if amount is None else amount
    if not allowed or amount <= 0 or amount > limit:
        return None  # the payments app refuses it with its own words
    if force and policy.is_refund_staff(user):
        return None
    held = _held(_refunds_of(payment))
    needed = credits_for_refunded(purchase, held + amount) - credits_for_refunded(purchase, held)
    if needed > wallet.balance:
        raise CreditsError(
            f"{needed} credits would be taken back, but only {wallet.balance} are left: credits already "
            "spent cannot be refunded" + (" (staff may force it)." if policy.is_refund_staff(user) else "."),
            code="credits_spent",
        )
    if needed == 0:
        return None
    return _write(
        wallet, WalletEntry.Kind.REFUND_HOLD, -needed, purchase=purchase, reference=f"hold:{uuid.uuid4()}"
    )


@transaction.atomic
def hold_release(*, hold_id: int) -> WalletEntry | None:
    """Give a refund hold back (once): its refund was not made, or its own entry took the credits."""
    hold = WalletEntry.objects.select_related("purchase").get(pk=hold_id, kind=WalletEntry.Kind.REFUND_HOLD)
    wallet = _lock_wallet(hold.wallet.user_id)
    if WalletEntry.objects.filter(wallet=wallet, reference=f"release:{hold.pk}").exists():
        return None
    return _release(wallet, hold)


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


# A refund hold outlives its request only if the request died: then the sweep releases it.
HOLD_EXPIRES_AFTER = timedelta(minutes=10)


def credits_sweep(*, limit: int = 500, recent: timedelta = timedelta(days=2)) -> dict[str, int]:
    """What the payment signals should have done, done now (their receiver failed: the database
    was away for a moment): credits for paid purchases that have none, and the credits of refunds
    changed lately. Run by beat every minute; `credits_settle` is idempotent."""
    outcome = {"added": 0, "taken_back": 0}
    purchase_type = ContentType.objects.get_for_model(CreditPurchase)
    sold = Payment.objects.filter(
        content_type=purchase_type, object_id=Cast(OuterRef("pk"), CharField())
    ).sales()
    credited = WalletEntry.objects.filter(purchase=OuterRef("pk"), kind=WalletEntry.Kind.PURCHASE)
    unpaid = CreditPurchase.objects.filter(Exists(sold), ~Exists(credited)).values_list("pk", flat=True)
    refunded = (
        Refund.objects.filter(payment__content_type=purchase_type, updated_at__gte=timezone.now() - recent)
        .values_list("payment__object_id", flat=True)
        .distinct()
    )
    now = timezone.now()
    stale_holds = WalletEntry.objects.filter(
        kind=WalletEntry.Kind.REFUND_HOLD,
        created_at__lt=now - HOLD_EXPIRES_AFTER,
        created_at__gte=now - recent,
    ).values_list("pk", "purchase_id")[:limit]
    held = [
        (pk, purchase_id)
        for pk, purchase_id in stale_holds
        if not WalletEntry.objects.filter(reference=f"release:{pk}").exists()
    ]
    candidates = {*unpaid[:limit], *(int(pk) for pk in refunded[:limit]), *(p for _, p in held)}
    for purchase_id in sorted(candidates):
        for entry in credits_settle(purchase_id=purchase_id):
            if entry.kind in (WalletEntry.Kind.PURCHASE, WalletEntry.Kind.REFUND):
                outcome["added" if entry.kind == WalletEntry.Kind.PURCHASE else "taken_back"] += 1
    for hold_id, _purchase_id in held:  # a request that died between its hold and its refund
        hold_release(hold_id=hold_id)
    if any(outcome.values()):
        logger.warning("credits swept", extra=outcome)
    return outcome
