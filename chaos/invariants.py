"""What must hold after a chaos run, checked against the emulator's objects and the database."""

from __future__ import annotations

import email
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from chaos.bookers import Load

PAID_LOCALLY = {"succeeded", "partially_refunded", "refunded", "disputed"}


@dataclass
class Check:
    name: str
    count: int
    examples: list[str] = field(default_factory=list)
    informational: bool = False  # reported, never a failure

    @property
    def ok(self) -> bool:
        return self.informational or self.count == 0

    def line(self) -> str:
        mark = "info" if self.informational else "ok  " if self.count == 0 else "FAIL"
        more = f"  e.g. {', '.join(self.examples[:5])}" if self.examples else ""
        return f"{mark} {self.name}: {self.count}{more}"


def _check(name: str, bad: list[str]) -> Check:
    return Check(name, len(bad), bad)


def stripe_objects(store: dict) -> tuple[list, list, list]:
    """The emulator's payment intents, charges and refunds (its store, read once all is quiet)."""

    def kind(prefix: str) -> list:
        return [obj for key, obj in list(store.items()) if key.startswith(prefix)]

    return kind("payment_intent:"), kind("charge:"), kind("refund:")


def emails_sent(mail_dir: Path) -> Counter[str]:
    """How many copies of each email (by Message-ID) went out, from the file backend's files."""
    sent: Counter[str] = Counter()
    for path in mail_dir.glob("*.log"):
        # The file backend writes each message followed by a line of 79 dashes.
        for chunk in path.read_text(errors="replace").split("\n" + "-" * 79 + "\n"):
            if not chunk.strip():
                continue
            sent[email.message_from_string(chunk.strip()).get("Message-ID", "")] += 1
    return sent


def confirmation_emails(sent: Counter[str]) -> set[int]:
    """The bookings whose booker confirmation went out (one Message-ID per booking and kind)."""
    return {
        int(message_id.split("-")[1])
        for message_id in sent
        if message_id.startswith("<booking-") and message_id.endswith("-confirmed@bookings.local>")
    }


def server_errors(access_log: Path) -> list[str]:
    """Requests gunicorn answered with a 500 (the bookers', staff's and Stripe's webhooks alike)."""
    if not access_log.exists():
        return []
    errors = []
    for line in access_log.read_text(errors="replace").splitlines():
        # 127.0.0.1 - - [date] "POST /path HTTP/1.1" 500 123 "-" "agent"
        request, _, rest = line.partition('" ')
        if rest.split(" ", 1)[0] == "500":
            errors.append(request.rsplit('"', 1)[-1])
    return errors


def check_all(*, store: dict, load: Load, mail_dir: Path, access_log: Path, reconcile: dict) -> list[Check]:
    from bookings.models import Booking, EmailLog
    from payments.models import Payment, Refund, WebhookEvent

    outcomes, tally = load.outcomes, load.tally
    intents, charges, refunds = stripe_objects(store)
    payments = {str(p.uid): p for p in Payment.objects.all()}
    by_intent = {p.stripe_payment_intent_id: p for p in payments.values() if p.stripe_payment_intent_id}
    charge_of_intent = {c.payment_intent: c for c in charges if getattr(c, "status", "") == "succeeded"}

    # Money at Stripe per booking: captured minus refunded, per intent.
    net_by_booking: dict[str, list[int]] = defaultdict(list)
    lost, unknown = [], []
    for intent in intents:
        charge = charge_of_intent.get(intent.id)
        if charge is None:
            continue
        payment = payments.get((intent.metadata or {}).get("payment_uid", "")) or by_intent.get(intent.id)
        if payment is None:
            unknown.append(intent.id)
            continue
        net_by_booking[payment.object_id].append(charge.amount - (charge.amount_refunded or 0))
        if payment.status not in PAID_LOCALLY:
            lost.append(f"{intent.id} (local {payment.status})")
    double = [booking for booking, nets in net_by_booking.items() if sum(1 for n in nets if n > 0) > 1]
    charged_intents = set(charge_of_intent)
    paid_without_charge = [
        f"payment {p.pk} {p.status} ({p.stripe_payment_intent_id or 'no intent'})"
        for p in payments.values()
        if p.status in PAID_LOCALLY and p.stripe_payment_intent_id not in charged_intents
    ]

    over_stripe = [c.id for c in charges if (c.amount_refunded or 0) > c.amount]
    over_local = []
    refunded_locally: dict[int, int] = defaultdict(int)
    for refund in Refund.objects.filter(status="succeeded"):
        refunded_locally[refund.payment_id] += refund.amount
    for payment in payments.values():
        if refunded_locally[payment.pk] > payment.total:
            over_local.append(f"payment {payment.pk}")

    stripe_refunds = {r.id: r for r in refunds if getattr(r, "status", "succeeded") == "succeeded"}
    local_refunds = {r.stripe_refund_id: r for r in Refund.objects.filter(status="succeeded")}
    one_sided = [f"{rid} only at Stripe" for rid in stripe_refunds.keys() - local_refunds.keys()]
    one_sided += [f"{rid or '(no id)'} only here" for rid in local_refunds.keys() - stripe_refunds.keys()]
    one_sided += [
        f"{rid} amount {local_refunds[rid].amount} here, {stripe_refunds[rid].amount} at Stripe"
        for rid in stripe_refunds.keys() & local_refunds.keys()
        if local_refunds[rid].amount != stripe_refunds[rid].amount
    ]
    pending_refunds = [
        f"refund {r.pk} {r.status}"
        for r in Refund.objects.exclude(status__in=["succeeded", "failed", "canceled"])
    ]

    copies = emails_sent(mail_dir)
    sent = confirmation_emails(copies)
    confirmed = set(Booking.objects.filter(confirmed_at__isnull=False).values_list("pk", flat=True))
    wrong_emails = [f"booking {pk}: none sent" for pk in sorted(confirmed - sent)]
    wrong_emails += [f"booking {pk}: sent but never confirmed" for pk in sorted(sent - confirmed)]
    second_copies = [f"{message_id} ×{n}" for message_id, n in copies.items() if n > 1]
    unsent = [
        f"{log.kind} of booking {log.booking_id} {log.status}"
        for log in EmailLog.objects.exclude(status="sent")
    ]
    events = [
        f"{e.stripe_event_id} {e.type} {e.status}"
        for e in WebhookEvent.objects.exclude(status__in=["processed", "ignored"])
    ]

    paid_bookings = {b for b, nets in net_by_booking.items() if any(n > 0 for n in nets)}
    unconfirmed = [
        f"booking {b.pk} {b.status}"
        for b in Booking.objects.filter(pk__in=[int(b) for b in paid_bookings])
        if b.status != Booking.Status.CONFIRMED
    ]
    not_paid = [
        f"booking {o.booking_id} ({o.plan.name} {o.note}; saw {' > '.join(o.trail[-8:])})"
        for o in outcomes
        if not o.plan.give_up and not o.paid
    ]
    charged_abandoned = [
        f"booking {o.booking_id}" for o in outcomes if o.abandoned and str(o.booking_id) in paid_bookings
    ]
    races = [o for o in outcomes if o.plan.refund == "race" and o.paid]
    bad_races = [
        f"booking {o.booking_id} answered {o.race}"
        for o in races
        if o.race_conclusive and o.refunds_accepted != 1
    ]
    unfinished = [f"{load.not_created} bookings could not be created"] * bool(load.not_created)
    unfinished += [f"{load.not_run} bookings not run before the deadline"] * bool(load.not_run)

    return [
        _check("double charges (bookings with more than one charge kept)", double),
        _check("over-refunds at Stripe", over_stripe),
        _check("over-refunds here", over_local),
        _check("payments Stripe took that are not paid here", lost),
        _check("payments paid here that Stripe did not take", paid_without_charge),
        _check("charges at Stripe with no payment here", unknown),
        _check("refunds on one side only, or of other amounts", one_sided),
        _check("refunds still pending", pending_refunds),
        _check("concurrent over-total refund pairs without exactly one accepted", bad_races),
        _check("paid bookings not confirmed", unconfirmed),
        _check("confirmation emails missing, or sent for a booking never confirmed", wrong_emails),
        Check(
            "second copies with the same Message-ID (a worker killed between the SMTP server's "
            "answer and the row's update; mail systems fold them)",
            len(second_copies),
            second_copies,
            informational=True,
        ),
        _check("emails not sent", unsent),
        _check("webhook events not processed", events),
        _check(
            "HTTP 500s (gunicorn's access log) and 5xx outside the error envelope",
            server_errors(access_log) + tally.server_errors,
        ),
        _check("bookings a booker kept trying that did not end paid", not_paid),
        _check("abandoned bookings charged", charged_abandoned),
        _check("bookings the load could not make or run", unfinished),
        _check(
            "reconciliation findings",
            [f"{f['kind']} {f.get('stripe_id', '')}" for f in reconcile.get("findings", [])]
            + ([reconcile["error"]] if "error" in reconcile else []),
        ),
    ]


def parse_reconcile(stdout: str, stderr: str, returncode: int) -> dict:
    try:
        report = json.loads(stdout)
    except ValueError:
        return {"error": f"reconcile_payments exited {returncode}: {stderr.strip()[-300:]}"}
    return report if isinstance(report, dict) else {"error": "reconcile_payments answered no report"}
