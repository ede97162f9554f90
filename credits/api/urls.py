"""Routes of the credits API, with the payment endpoints nested under a purchase."""

from django.urls import path
from rest_framework.routers import SimpleRouter
from rest_framework_nested.routers import NestedSimpleRouter

from credits.api import views

router = SimpleRouter()
router.register("credits/packages", views.CreditPackageViewSet, basename="credit-package")
router.register("credits/purchases", views.CreditPurchaseViewSet, basename="credit-purchase")

purchase_router = NestedSimpleRouter(router, "credits/purchases", lookup="purchase")
purchase_router.register("payment", views.PurchasePaymentViewSet, basename="purchase-payment")
purchase_router.register("payments", views.PurchasePaymentHistoryViewSet, basename="purchase-payments")

urlpatterns = [
    path("credits/wallet/", views.WalletView.as_view(), name="credit-wallet"),
    path("credits/spend/", views.SpendView.as_view(), name="credit-spend"),
    *router.urls,
    *purchase_router.urls,
]
