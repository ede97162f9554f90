"""Signals that tell the host app about payment outcomes; all are sent after the transaction commits."""

from django.dispatch import Signal

#: A payment succeeded. Arguments: payment, reason.
payment_succeeded = Signal()
#: The payments that succeeded together: once per committed transaction outside a webhook drain (a
#: list of one), once per drained batch inside one. Sent after each one's payment_succeeded; a host
#: that confirms many things at once listens to this one instead. Arguments: payments (a list).
payments_succeeded = Signal()
#: A payment attempt failed. Arguments: payment, reason.
payment_failed = Signal()
#: Money went back to the payer. Arguments: payment, refund (None when imported without a row),
#: fully_refunded (bool).
payment_refunded = Signal()
#: The payer disputed the charge, or a dispute closed. Arguments: payment, dispute.
payment_disputed = Signal()
#: An unpaid payment was canceled or expired. Arguments: payment, reason ("expired" or "").
payment_canceled = Signal()
#: A refund failed at the provider after it had succeeded (a closed card): the money is back with
#: us and refundable again; the payer has not got it. Arguments: payment, refund.
payment_refund_failed = Signal()
