"""Credit pages: the wallet (balance, packages to buy, history), a purchase's checkout and result.
They call the same services as the API; paying is the card component both products share."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from config.checkout import render_checkout
from credits import services
from credits.exceptions import CreditsError
from credits.models import CreditPackage, CreditPurchase, WalletEntry
from payments import money
from payments import selectors as payment_selectors
from payments.conf import payments_settings

HISTORY = 20


@login_required
def wallet(request):
    packages = [
        {"package": p, "price": money.format_amount(p.price, p.currency)}
        for p in CreditPackage.objects.filter(active=True)
    ]
    entries = WalletEntry.objects.filter(wallet__user=request.user).select_related("purchase__package")[
        :HISTORY
    ]
    context = {"wallet": services.wallet_of(request.user), "packages": packages, "entries": entries}
    return render(request, "credits/wallet.html", context)


@login_required
@require_POST
def buy(request, package_id: int):
    try:
        purchase = services.purchase_create(user=request.user, package_id=package_id)
    except CreditsError as error:
        messages.error(request, error.message)
        return redirect("credit-wallet-page")
    except ValidationError as error:  # a package priced outside what Stripe can charge
        messages.error(request, error.messages[0])
        return redirect("credit-wallet-page")
    return redirect("credit-purchase-pay", pk=purchase.pk)


def _purchase(request, pk: int) -> CreditPurchase:
    return get_object_or_404(CreditPurchase.objects.select_related("package"), pk=pk, user=request.user)


@login_required
def purchase_pay(request, pk: int):
    """The checkout page of one purchase: the same card component as a booking's."""
    purchase = _purchase(request, pk)
    if purchase.status != CreditPurchase.Status.PENDING:
        return redirect("credit-purchase-result", pk=purchase.pk)
    latest = payment_selectors.latest_payment(purchase)
    config = {
        "publishableKey": payments_settings.PUBLISHABLE_KEY,
        "api": f"/api/credits/purchases/{purchase.pk}/payment/",
        "resultUrl": reverse("credit-purchase-result", args=[purchase.pk]),
        "paymentStatus": latest.status if latest else None,
    }
    price = money.format_amount(purchase.price, purchase.currency)
    return render_checkout(
        request, "credits/checkout.html", {"purchase": purchase, "price": price, "config": config}
    )


@login_required
def purchase_result(request, pk: int):
    """Where the payer lands after paying; it follows the purchase until its credits are in."""
    purchase = _purchase(request, pk)
    config = {
        "statusUrl": f"/api/credits/purchases/{purchase.pk}/payment/status/",
        "objectUrl": f"/api/credits/purchases/{purchase.pk}/",
        "doneStatus": CreditPurchase.Status.PAID,
        "doneText": f"{purchase.credits} credits are in your wallet.",
        "failedText": "The payment did not go through, and nothing was charged.",
    }
    return render(request, "credits/result.html", {"purchase": purchase, "config": config})
