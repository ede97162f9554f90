"""Staff pages for credits: packages, purchases, wallets and their entries (read-only), and a
staff adjustment behind its own permission, recorded in the admin log."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse

from credits import services
from credits.exceptions import CreditsError
from credits.models import CreditEmail, CreditPackage, CreditPurchase, Wallet, WalletEntry
from payments import money

ADJUST_PERMISSION = "credits.adjust_wallet"


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows the services write: staff look, never edit."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(CreditPackage)
class CreditPackageAdmin(admin.ModelAdmin):
    list_display = ["name", "credits", "price_display", "active", "sort_order"]
    list_editable = ["active", "sort_order"]
    list_filter = ["active"]

    @admin.display(description="Price")
    def price_display(self, package: CreditPackage) -> str:
        return money.format_amount(package.price, package.currency)


@admin.register(CreditPurchase)
class CreditPurchaseAdmin(ReadOnlyAdmin):
    list_display = ["id", "user", "package", "credits", "price_display", "status", "created_at"]
    list_filter = ["status", "package"]
    search_fields = ["user__username", "user__email"]
    list_select_related = ["user", "package"]

    @admin.display(description="Price")
    def price_display(self, purchase: CreditPurchase) -> str:
        return money.format_amount(purchase.price, purchase.currency)


class WalletEntryInline(admin.TabularInline):
    model = WalletEntry
    fields = [
        "created_at",
        "kind",
        "amount",
        "balance_after",
        "purchase",
        "shortfall",
        "reason",
        "created_by",
    ]
    readonly_fields = fields
    extra = 0
    ordering = ["-id"]
    can_delete = False
    max_num = 0
    show_change_link = False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("purchase__package", "created_by")


class AdjustmentForm(forms.Form):
    amount = forms.IntegerField(help_text="Credits to add (or, negative, to remove).")
    reason = forms.CharField(max_length=255)

    def clean_amount(self) -> int:
        amount = self.cleaned_data["amount"]
        if amount == 0:
            raise forms.ValidationError("Adjust by at least one credit.")
        return amount


@admin.register(Wallet)
class WalletAdmin(ReadOnlyAdmin):
    list_display = ["user", "balance", "updated_at"]
    search_fields = ["user__username", "user__email"]
    list_select_related = ["user"]
    inlines = [WalletEntryInline]
    change_form_template = "admin/credits/wallet/change_form.html"

    def get_urls(self):
        return [
            path(
                "<int:wallet_id>/adjust/",
                self.admin_site.admin_view(self.adjust),
                name="credits_wallet_adjust",
            ),
            *super().get_urls(),
        ]

    def adjust(self, request, wallet_id: int):
        """The staff adjustment form: one entry, recorded in the admin log."""
        if not request.user.has_perm(ADJUST_PERMISSION):
            raise PermissionDenied
        wallet = get_object_or_404(Wallet.objects.select_related("user"), pk=wallet_id)
        form = AdjustmentForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                with transaction.atomic():  # the entry and its line in the admin log, together
                    entry = services.credits_adjust(
                        user=wallet.user,
                        amount=form.cleaned_data["amount"],
                        reason=form.cleaned_data["reason"],
                        staff=request.user,
                    )
                    LogEntry.objects.log_actions(
                        user_id=request.user.pk,
                        queryset=[wallet],
                        action_flag=CHANGE,
                        change_message=f"Adjusted by {entry.amount:+d} credits: {entry.reason}",
                        single_object=True,
                    )
            except CreditsError as error:
                form.add_error("amount", error.message)
            else:
                messages.success(request, f"{wallet.user}'s balance is now {entry.balance_after} credits.")
                return redirect(reverse("admin:credits_wallet_change", args=[wallet.pk]))
        context = {
            **self.admin_site.each_context(request),
            "can_adjust": True,
            "title": f"Adjust the credits of {wallet.user}",
            "wallet": wallet,
            "form": form,
            "opts": self.model._meta,
        }
        return render(request, "admin/credits/wallet/adjust.html", context)


@admin.register(WalletEntry)
class WalletEntryAdmin(ReadOnlyAdmin):
    list_display = ["id", "wallet", "kind", "amount", "balance_after", "shortfall", "created_at"]
    list_filter = ["kind"]
    search_fields = ["wallet__user__username", "wallet__user__email", "reference"]
    list_select_related = ["wallet__user"]


@admin.register(CreditEmail)
class CreditEmailAdmin(ReadOnlyAdmin):
    list_display = ["purchase", "kind", "recipient", "status", "attempts", "sent_at", "updated_at"]
    list_select_related = ["purchase__package", "purchase__user"]
    list_filter = ["status", "kind"]
    search_fields = ["recipient"]
