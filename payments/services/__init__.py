"""Payment services: the only code that writes payment state. Atomic and row-locked.

Every call that moves money follows the same three steps: (1) under a lock, record
what is about to happen with an idempotency key derived from the operation, and
commit; (2) call the provider with that key, holding no lock; (3) under a lock,
apply what the provider answered, only ever moving state forward. A crash, a retry
or a double click between any two steps repeats the same provider call with the
same key, which the provider answers with the same object.

One module per flow: attempts (paying by card), checkout (Stripe's hosted page), refunds,
sync (the provider's view applied), customers (saved cards); transitions and base hold what
they share. `from payments import services` gives the public functions of all of them.
"""

from payments.services.attempts import (
    payment_cancel,
    payment_confirm,
    payment_refresh,
    payment_retry,
    payment_start,
    payments_expire_stale,
)
from payments.services.base import (
    CHECKOUT_MIN_AHEAD,
    PAID_AFTER_CANCEL_REASON,
    PaymentResult,
    PaymentTerms,
    is_foreign,
    payment_id_for,
    successes_batched,
)
from payments.services.checkout import payment_checkout_start
from payments.services.customers import (
    customer_get_or_create,
    payment_method_detach,
    payment_methods_list,
    setup_intent_create,
)
from payments.services.refunds import (
    refund_create,
    refund_give_up,
    refund_request,
    refund_submit,
    refund_sync,
)
from payments.services.sync import (
    dispute_sync,
    intent_may_pay,
    payment_sync_charge,
    payment_sync_checkout,
    payment_sync_intent,
    payments_sync_succeeded,
)
from payments.services.transitions import payment_transition

__all__ = [
    "CHECKOUT_MIN_AHEAD",
    "PAID_AFTER_CANCEL_REASON",
    "PaymentResult",
    "PaymentTerms",
    "customer_get_or_create",
    "dispute_sync",
    "intent_may_pay",
    "is_foreign",
    "payment_cancel",
    "payment_checkout_start",
    "payment_confirm",
    "payment_id_for",
    "payment_method_detach",
    "payment_methods_list",
    "payment_refresh",
    "payment_retry",
    "payment_start",
    "payment_sync_charge",
    "payment_sync_checkout",
    "payment_sync_intent",
    "payment_transition",
    "payments_expire_stale",
    "payments_sync_succeeded",
    "refund_create",
    "refund_give_up",
    "refund_request",
    "refund_submit",
    "refund_sync",
    "setup_intent_create",
    "successes_batched",
]
