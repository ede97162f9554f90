"""Routes of the payments API that are not nested under a payable."""

from django.urls import include, path
from rest_framework.routers import SimpleRouter

from payments.api import views

router = SimpleRouter()
router.register("payments", views.PaymentViewSet, basename="payment")
router.register("payment/methods", views.PaymentMethodViewSet, basename="payment-method")

urlpatterns = [
    path("payment/config/", views.PaymentConfigView.as_view(), name="payment-config"),
    path("payments/<int:pk>/timeline/", views.PaymentTimelineView.as_view(), name="payment-timeline"),
    path("", include(router.urls)),
]
