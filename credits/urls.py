"""Credit pages (server-rendered)."""

from django.urls import path

from credits import views

urlpatterns = [
    path("", views.wallet, name="credit-wallet-page"),
    path("buy/<int:package_id>/", views.buy, name="credit-buy"),
    path("purchases/<int:pk>/pay/", views.purchase_pay, name="credit-purchase-pay"),
    path("purchases/<int:pk>/result/", views.purchase_result, name="credit-purchase-result"),
]
