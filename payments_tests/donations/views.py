"""The donation's payment endpoints: the API base class with the host hooks a project writes."""

from payments import services
from payments.api.views import PayablePaymentViewSet
from payments_tests.donations.models import Donation


def donation_terms(donation: Donation) -> services.PaymentTerms:
    return services.PaymentTerms(
        payable=donation,
        owner=donation.donor,
        subtotal=donation.amount,
        fee=0,
        total=donation.amount,
        currency=donation.currency,
        description=f"Donation {donation.pk}",
    )


class DonationPaymentViewSet(PayablePaymentViewSet):
    """/api/donations/{donation_pk}/payment/<action>/"""

    payable_lookup = "donation_pk"

    def get_payable_queryset(self, *, any_owner: bool = False):
        donations = Donation.objects.select_related("donor")
        return donations if any_owner else donations.filter(donor=self.request.user)

    def start_payment(self, payable, **options):
        return services.payment_start(terms=donation_terms(payable), **options)

    def retry_payment(self, payable, *, payment_method_id: str = ""):
        payment = self.latest_payment(payable)
        return services.payment_retry(payment=payment, payment_method_id=payment_method_id)

    def start_checkout(self, payable, *, success_url, cancel_url):
        return services.payment_checkout_start(
            terms=donation_terms(payable), success_url=success_url, cancel_url=cancel_url
        )

    def checkout_return_urls(self, payable):
        return "http://testserver/thanks/", "http://testserver/cancelled/"
