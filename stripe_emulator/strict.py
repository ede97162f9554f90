"""Where localstripe is kinder than Stripe, made as strict as Stripe: one section per behaviour.

Importing this module patches localstripe's classes in place (the harness imports it before
it starts localstripe). Each section names the page of Stripe's documentation it follows;
README.md in this folder lists them with the tests that rely on them. The product never
knows any of this: it talks to the emulator exactly as it talks to api.stripe.com.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import hashlib
import hmac
import json
import logging
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
from localstripe import resources as ls
from localstripe import server as ls_server
from localstripe import webhooks as ls_webhooks
from localstripe.errors import UserError

_log = logging.getLogger("stripe_emulator")

API_VERSION = "2026-10-28.endive"
FIXTURES = json.loads((Path(__file__).parent / "fixtures" / "objects.json").read_text())["resources"]


def stripe_object(name: str, **overrides: Any) -> dict[str, Any]:
    """A copy of Stripe's example object `name` with `overrides` set."""
    obj = copy.deepcopy(FIXTURES[name])
    obj.update(overrides)
    return obj


def invalid_request(message: str, *, param: str | None = None, code: str | None = None, status: int = 400):
    """The error Stripe answers a request it refuses with (type invalid_request_error)."""
    contents: dict[str, Any] = {}
    if param:
        contents["param"] = param
    if code:
        contents["code"] = code
    return UserError(status, message, contents)


# Events ----------------------------------------------------------------------------------------
# https://docs.stripe.com/api/events/types: the events localstripe never sends are emitted here,
# stored (so GET /v1/events lists them, as reconciliation reads) and delivered signed.


def emit(event_type: str, data: dict[str, Any]) -> None:
    """Record and deliver an event about `data` (an exported object); call inside the emulator's loop."""
    event = object.__new__(ls.Event)
    ls.StripeObject.__init__(event)
    event.type = event_type
    event.data = {"object": copy.deepcopy(data)}
    event.api_version = API_VERSION
    ls_webhooks.schedule_webhook(event)


# Webhook delivery ---------------------------------------------------------------------------------
# https://docs.stripe.com/webhooks#retries: an event whose delivery failed (no 2xx answer, or no
# answer at all) is sent again with an exponential back off: for up to three days in live mode,
# three times over a few hours in a sandbox, as here. The intervals are not published: here the
# first retry comes WEBHOOK_RETRY["first_delay"] seconds after a failure (an hour: "a few hours"
# in all), each next one twice as late; tests and the local stack (scripts/run) shorten it. An
# endpoint removed meanwhile gets no more tries. Only the endpoint's own 2xx is a delivery: a
# redirect is not followed. https://docs.stripe.com/webhooks ("Prevent replay attacks"): every
# attempt is signed anew with its own timestamp (localstripe signs each with the event's creation
# time, which a receiver's 5-minute tolerance refuses on a retry an hour later).

WEBHOOK_RETRY: dict[str, float] = {"retries": 3, "first_delay": 3600.0}
# What was sent, for tests: one entry per attempt (the newest 10,000).
DELIVERIES: collections.deque[dict[str, Any]] = collections.deque(maxlen=10_000)
_DELIVERING: set[asyncio.Future] = set()


def _schedule_webhook(event: Any) -> None:
    _keep(asyncio.ensure_future(_send_webhook(event)))


def _keep(task: asyncio.Future) -> None:
    _DELIVERING.add(task)  # a task nothing refers to may be collected before it ends
    task.add_done_callback(_DELIVERING.discard)


async def _send_webhook(event: Any) -> None:
    payload = json.dumps(event._export(), indent=2, sort_keys=True).encode("utf-8")
    await asyncio.sleep(1)  # as localstripe: about a second after the change
    for endpoint_id, endpoint in list(ls_webhooks._webhooks.items()):
        if endpoint.events is None or event.type in endpoint.events:
            _keep(asyncio.ensure_future(_deliver(endpoint_id, endpoint, event, payload)))


async def _deliver(endpoint_id: str, endpoint: Any, event: Any, payload: bytes) -> None:
    """Send `payload` to one endpoint until it answers 2xx, retrying failures with back off."""
    retries = int(WEBHOOK_RETRY["retries"])
    for attempt in range(retries + 1):
        if attempt:
            await asyncio.sleep(WEBHOOK_RETRY["first_delay"] * 2 ** (attempt - 1))
            if ls_webhooks._webhooks.get(endpoint_id) is not endpoint:
                return  # removed or replaced meanwhile
        status = await _post(endpoint, payload)
        DELIVERIES.append(
            {
                "event": event.id,
                "type": event.type,
                "endpoint": endpoint_id,
                "attempt": attempt,
                "status": status,
            }
        )
        if status is not None and 200 <= status < 300:
            return
        _log.info("webhook %s to %s failed (%s)%s", event.type, endpoint.url, status or "no answer",
                  "" if attempt == retries else ": sent again later")  # fmt: skip


async def _post(endpoint: Any, payload: bytes) -> int | None:
    """One delivery attempt, signed now: the answer's status, or None when there was none."""
    timestamp = int(time.time())
    signature = hmac.new(endpoint.secret.encode("utf-8"), b"%d.%s" % (timestamp, payload), hashlib.sha256)
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "Stripe-Signature": f"t={timestamp},v1={signature.hexdigest()}",
    }
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(endpoint.url, data=payload, headers=headers, allow_redirects=False) as response,
        ):
            return response.status
    except (aiohttp.ClientError, TimeoutError):
        return None
    except Exception:  # an address aiohttp cannot even try: a failed delivery all the same
        _log.exception("webhook to %s could not be sent", endpoint.url)
        return None


# Where localstripe schedules and sends (its resources hold schedule_webhook by name).
ls.schedule_webhook = ls_webhooks.schedule_webhook = _schedule_webhook
ls_webhooks._send_webhook = _send_webhook

_original_event_init = ls.Event.__init__


def _event_init(self, type, data):
    _original_event_init(self, type, data)
    self.api_version = API_VERSION


ls.Event.__init__ = _event_init


# Amounts ---------------------------------------------------------------------------------------
# https://docs.stripe.com/currencies#minimum-and-maximum-charge-amounts and #three-decimal:
# a per-currency minimum, at most eight digits, three-decimal amounts ending in 0.

ZERO_DECIMAL = {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "vnd", "vuv", "xaf"}
ZERO_DECIMAL |= {"xof", "xpf"}
THREE_DECIMAL = {"bhd", "jod", "kwd", "omr", "tnd"}
# Stripe's table, in major units; any other currency: the equivalent of 0.50 USD (taken as 0.50).
MINIMUM_CHARGE = {
    "usd": "0.50", "aed": "2.00", "aud": "0.50", "bgn": "1.00", "brl": "0.50", "cad": "0.50",
    "chf": "0.50", "czk": "15.00", "dkk": "2.50", "eur": "0.50", "gbp": "0.30", "hkd": "4.00",
    "huf": "175.00", "inr": "0.50", "jpy": "50", "mxn": "10", "myr": "2", "nok": "3.00",
    "nzd": "0.50", "pln": "2.00", "ron": "2.00", "sek": "3.00", "sgd": "0.50", "thb": "10",
}  # fmt: skip
MAXIMUM_AMOUNT = 99_999_999


def _exponent(currency: str) -> int:
    return 0 if currency in ZERO_DECIMAL else 3 if currency in THREE_DECIMAL else 2


def check_amount(amount: Any, currency: Any, *, param: str = "amount", minimum: bool = True) -> None:
    """Refuse, as Stripe does, an amount it would not charge (or refund) in `currency`."""
    value = ls.try_convert_to_int(amount)
    code = str(currency or "").lower()
    if not isinstance(value, int) or not code:
        return  # localstripe's own checks answer these
    if minimum:
        low = int(Decimal(MINIMUM_CHARGE.get(code, "0.50")).scaleb(_exponent(code)))
        if value < low:
            shown = f"{Decimal(low).scaleb(-_exponent(code)):.{_exponent(code)}f}"
            raise invalid_request(
                f"Amount must be at least {shown} {code}", param=param, code="amount_too_small"
            )
    if value > MAXIMUM_AMOUNT:
        raise invalid_request(
            "Amount must be no more than 99999999 in the currency's smallest unit.",
            param=param,
            code="amount_too_large",
        )
    if code in THREE_DECIMAL and value % 10:
        raise invalid_request(
            f"Amounts in {code.upper()} must end in 0: round to the nearest ten "
            "(https://docs.stripe.com/currencies#three-decimal).",
            param=param,
            code="invalid_amount",
        )


# Test cards --------------------------------------------------------------------------------------
# https://docs.stripe.com/testing#declined-payments: number -> (code, decline_code, message, param).

DECLINED_CARDS: dict[str, tuple[str, str, str, str | None]] = {
    "4000000000000002": ("card_declined", "generic_decline", "Your card was declined.", None),
    "4000000000009995": ("card_declined", "insufficient_funds", "Your card has insufficient funds.", None),
    "4000000000009987": ("card_declined", "lost_card", "Your card was declined.", None),
    "4000000000009979": ("card_declined", "stolen_card", "Your card was declined.", None),
    "4000000000000069": ("expired_card", "expired_card", "Your card has expired.", "exp_month"),
    "4000000000000127": ("incorrect_cvc", "incorrect_cvc", "Your card's security code is incorrect.", "cvc"),
    "4000000000000119": (
        "processing_error",
        "processing_error",
        "An error occurred while processing your card. Try again in a little bit.",
        None,
    ),
    # Attaching to a customer succeeds; charging it fails.
    "4000000000000341": ("card_declined", "generic_decline", "Your card was declined.", None),
    # 3-D Secure required, then declined after a successful authentication.
    "4000008260003178": ("card_declined", "insufficient_funds", "Your card has insufficient funds.", None),
    "4000008400001629": ("card_declined", "card_declined", "Your card was declined.", None),
}
ATTACH_THEN_DECLINE = {"4000000000000341", "4000008260003178", "4000008400001629"}
GENERIC_DECLINE = DECLINED_CARDS["4000000000000002"]

_original_charging_is_declined = ls.PaymentMethod._charging_is_declined
_original_attaching_is_declined = ls.PaymentMethod._attaching_is_declined


def _card_number(payment_method_id: str | None) -> str:
    if not payment_method_id:
        return ""
    try:
        return getattr(ls.PaymentMethod._api_retrieve(payment_method_id), "_card_number", "")
    except UserError:
        return ""


def _charging_is_declined(self) -> bool:
    if self.type == "card":
        return self._card_number in DECLINED_CARDS
    return _original_charging_is_declined(self)


def _attaching_is_declined(self) -> bool:
    if self.type == "card" and self._card_number in DECLINED_CARDS:
        return self._card_number not in ATTACH_THEN_DECLINE
    return _original_attaching_is_declined(self)


ls.PaymentMethod._charging_is_declined = _charging_is_declined
ls.PaymentMethod._attaching_is_declined = _attaching_is_declined


def card_error(status: int, decline: tuple[str, str, str, str | None], **extra: Any) -> UserError:
    """A card error as Stripe sends it: type card_error with code, decline_code, message, param."""
    code, decline_code, message, param = decline
    error = UserError(status, message, {"code": code, "decline_code": decline_code, "param": param, **extra})
    error.body["error"]["type"] = "card_error"
    return error


def _set_auth_failure(self) -> None:
    decline = DECLINED_CARDS.get(_card_number(self.payment_method), GENERIC_DECLINE)
    self.status = "failed"
    self.failure_code, self._decline_code, self.failure_message, self._decline_param = decline
    self.outcome = {
        "network_status": "declined_by_network",
        "reason": self._decline_code,
        "type": "issuer_declined",
        "seller_message": "The bank did not return any further details with this decline.",
    }


def _raise_failure(self) -> None:
    decline = (self.failure_code, self._decline_code, self.failure_message, self._decline_param)
    extra: dict[str, Any] = {"charge": self.id, "payment_method": {"id": self.payment_method}}
    if self.payment_intent:
        extra["payment_intent"] = ls.PaymentIntent._api_retrieve(self.payment_intent)._export()
    raise card_error(402, decline, **extra)


def _amount_refunded(self) -> int:
    returned = ("failed", "canceled")  # money that came back to us counts as not refunded
    return sum(r.amount for r in self.refunds._list if getattr(r, "status", "succeeded") not in returned)


ls.Charge._set_auth_failure = _set_auth_failure
ls.Charge._raise_failure = _raise_failure
ls.Charge.amount_refunded = property(_amount_refunded)
ls.Charge.refunded = property(lambda self: self.amount <= self.amount_refunded)


# Payment intents ---------------------------------------------------------------------------------
# https://docs.stripe.com/api/payment_intents: description and setup_future_usage are accepted
# (a card paid with setup_future_usage is saved on the customer); amounts are checked; after a
# decline the intent has no payment method and may be given another one and confirmed again;
# payment_intent.canceled is sent.

_original_pi_init = ls.PaymentIntent.__init__


def _pi_init(self, amount=None, currency=None, description=None, setup_future_usage=None, **kwargs):
    check_amount(amount, currency)
    if setup_future_usage not in (None, "", "on_session", "off_session"):
        raise invalid_request(
            "Invalid setup_future_usage: must be one of on_session or off_session",
            param="setup_future_usage",
        )
    _original_pi_init(self, amount=amount, currency=currency, **kwargs)
    self.description = description
    self.setup_future_usage = setup_future_usage or None
    self._failed_payment_method = None


def _pi_last_payment_error(self):
    if self._authentication_failed:
        return {
            "type": "card_error",
            "code": "payment_intent_authentication_failure",
            "message": "The provided PaymentMethod has failed authentication. You can provide "
            "payment_method_data or a new PaymentMethod to attempt to fulfill this PaymentIntent again.",
            "payment_method": {"id": self._failed_payment_method},
        }
    charge = self.latest_charge
    if charge is not None and charge.status == "failed":
        return {
            "type": "card_error",
            "charge": charge.id,
            "code": charge.failure_code,
            "decline_code": charge._decline_code,
            "message": charge.failure_message,
            "param": charge._decline_param,
            "payment_method": {"id": charge.payment_method, "object": "payment_method"},
        }
    return None


def _pi_report_failure(self) -> None:
    self._failed_payment_method = self.payment_method
    self.payment_method = None
    ls_webhooks.schedule_webhook(ls.Event("payment_intent.payment_failed", self))
    self.latest_charge._raise_failure()


def _pi_on_success(self) -> None:
    if self.setup_future_usage and self.customer and self.payment_method:
        ls.PaymentMethod._api_retrieve(self.payment_method).customer = self.customer
    ls_webhooks.schedule_webhook(ls.Event("payment_intent.succeeded", self))
    emit("charge.succeeded", self.latest_charge._export())


_original_pi_update = ls.PaymentIntent._update


def _pi_update(self, **data):
    if data.get("payment_method"):
        # A new card after a decline or a failed authentication: the intent can be confirmed again.
        if self.latest_charge is not None and self.latest_charge.status == "failed":
            self.latest_charge = None
        self._authentication_failed = False
    _original_pi_update(self, **data)


_original_pi_cancel = ls.PaymentIntent._api_cancel.__func__


def _pi_cancel(cls, id, cancellation_reason=None, **kwargs):
    obj = _original_pi_cancel(cls, id, **kwargs)
    obj.cancellation_reason = cancellation_reason
    emit("payment_intent.canceled", obj._export())
    return obj


_original_pi_authenticate = ls.PaymentIntent._api_authenticate.__func__


def _pi_authenticate(cls, id, client_secret=None, success=False, **kwargs):
    intent = cls._api_retrieve(id)
    method = intent.payment_method
    obj = _original_pi_authenticate(cls, id, client_secret=client_secret, success=success, **kwargs)
    if obj._authentication_failed:
        obj._failed_payment_method = method
        ls_webhooks.schedule_webhook(ls.Event("payment_intent.payment_failed", obj))
    return obj


def _reroute(method: str, path: str, func) -> None:
    """Point one of localstripe's extra routes at `func` (its server bound the original at import)."""
    for route in ls_server.app.router.routes():
        if route.method == method and route.resource is not None and route.resource.canonical == path:
            names = route.handler.__code__.co_freevars
            route.handler.__closure__[names.index("func")].cell_contents = func
            return
    raise LookupError(f"localstripe has no route {method} {path}")


ls.PaymentIntent.__init__ = _pi_init
ls.PaymentIntent.last_payment_error = property(_pi_last_payment_error)
ls.PaymentIntent._report_failure = _pi_report_failure
ls.PaymentIntent._on_success = _pi_on_success
ls.PaymentIntent._update = _pi_update
ls.PaymentIntent._api_cancel = classmethod(_pi_cancel)
ls.PaymentIntent._api_authenticate = classmethod(_pi_authenticate)
_reroute("POST", "/v1/payment_intents/{id}/cancel", ls.PaymentIntent._api_cancel)
_reroute("POST", "/v1/payment_intents/{id}/_authenticate", ls.PaymentIntent._api_authenticate)


# Refunds -------------------------------------------------------------------------------------------
# https://docs.stripe.com/api/refunds/create: never more than what is left of the charge, reason one
# of Stripe's three, amounts by the currency's rules; refund.created and charge.refunded are sent;
# a refund can fail later (refund.updated, refund.failed), as a closed card makes it.

REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")
_original_refund_init = ls.Refund.__init__


def _refund_init(self, charge=None, payment_intent=None, amount=None, metadata=None, reason=None, **kwargs):
    if reason not in (None, "", *REFUND_REASONS):
        raise invalid_request(
            "Invalid reason: must be one of duplicate, fraudulent, or requested_by_customer",
            param="reason",
        )
    charge_obj = _refundable_charge(charge, payment_intent)
    left = charge_obj.amount - charge_obj.amount_refunded
    if left <= 0:
        raise invalid_request(
            f"Charge {charge_obj.id} has already been refunded.", code="charge_already_refunded"
        )
    wanted = left if amount in (None, "") else ls.try_convert_to_int(amount)
    if isinstance(wanted, int) and wanted > left:
        raise invalid_request(
            f"Refund amount ({wanted}) is greater than unrefunded amount on charge ({left})",
            param="amount",
            code="amount_too_large",
        )
    check_amount(wanted, charge_obj.currency, minimum=False)
    _original_refund_init(
        self, charge=charge, payment_intent=payment_intent, amount=wanted, metadata=metadata, **kwargs
    )
    self.reason = reason or None
    self.failure_reason = None
    emit("refund.created", self._export())
    emit("charge.refunded", charge_obj._export())


def _refundable_charge(charge: str | None, payment_intent: str | None):
    if payment_intent and not charge:
        intent = ls.PaymentIntent._api_retrieve(payment_intent)
        if intent.latest_charge is None or intent.status not in ("succeeded", "requires_capture"):
            raise invalid_request(
                f"This PaymentIntent ({payment_intent}) does not have a successful charge to refund.",
                code="charge_not_refundable" if intent.latest_charge else "resource_missing",
            )
        return intent.latest_charge
    if not charge:
        raise invalid_request("Expected charge or payment_intent")
    return ls.Charge._api_retrieve(charge)


def refund_fail(refund_id: str, *, failure_reason: str = "expired_or_canceled_card") -> dict[str, Any]:
    """Fail a refund after it succeeded, as a closed card makes it (a test helper)."""
    refund = ls.Refund._api_retrieve(refund_id)
    refund.status = "failed"
    refund.failure_reason = failure_reason
    exported = refund._export()
    emit("refund.updated", exported)
    emit("refund.failed", exported)
    return exported


ls.Refund.__init__ = _refund_init


# Lists ----------------------------------------------------------------------------------------------
# https://docs.stripe.com/api/pagination: newest first; the created[gt|gte|lt|lte] filter applies.


def _created_filter(created: Any):
    if created in (None, ""):
        return lambda ts: True
    if not isinstance(created, dict):
        exact = ls.try_convert_to_int(created)
        return lambda ts: ts == exact
    bounds = {op: ls.try_convert_to_int(value) for op, value in created.items()}
    if set(bounds) - {"gt", "gte", "lt", "lte"} or not all(isinstance(v, int) for v in bounds.values()):
        raise invalid_request("Invalid created filter", param="created")
    tests = {
        "gt": lambda ts, v: ts > v,
        "gte": lambda ts, v: ts >= v,
        "lt": lambda ts, v: ts < v,
        "lte": lambda ts, v: ts <= v,
    }
    return lambda ts: all(tests[op](ts, v) for op, v in bounds.items())


def _newest_first_with_created(original):
    def list_all(cls, url, created=None, **kwargs):
        keep = _created_filter(created)
        page = original(cls, url, **kwargs)
        items = [obj for obj in reversed(page._list) if keep(obj.created)]
        page._list = sorted(items, key=lambda obj: obj.created, reverse=True)
        return page

    return classmethod(list_all)


ls.PaymentIntent._api_list_all = _newest_first_with_created(ls.PaymentIntent._api_list_all.__func__)
ls.Refund._api_list_all = _newest_first_with_created(ls.Refund._api_list_all.__func__)


# Checkout Sessions ---------------------------------------------------------------------------------
# https://docs.stripe.com/api/checkout/sessions: localstripe has none. Created from Stripe's
# fixture object; expires_at between 30 minutes and 24 hours ahead; only an open session can be
# expired or paid; checkout.session.completed / expired are sent; a session past its
# expires_at is expired when next read.

CHECKOUT_MIN_EXPIRY = 30 * 60
CHECKOUT_MAX_EXPIRY = 24 * 60 * 60
# The address of the emulator's hosted payment page (the proxy sets it when it starts).
HOSTED_PAGE_BASE = {"url": "http://127.0.0.1"}


class CheckoutSession(ls.StripeObject):
    object = "checkout.session"
    _id_prefix = "cs_test_"

    def __init__(
        self,
        mode=None,
        line_items=None,
        success_url=None,
        cancel_url=None,
        client_reference_id=None,
        customer=None,
        metadata=None,
        payment_intent_data=None,
        payment_method_types=None,
        expires_at=None,
        **kwargs,
    ):
        if kwargs:
            raise invalid_request(
                "Received unknown parameter: " + ", ".join(kwargs), param=next(iter(kwargs))
            )
        if mode != "payment":
            raise invalid_request("The emulator supports mode=payment only.", param="mode")
        if not isinstance(line_items, list) or not line_items:
            raise invalid_request("line_items is required in payment mode.", param="line_items")
        currencies, total = set(), 0
        for index, item in enumerate(line_items):
            price = (item or {}).get("price_data") or {}
            quantity = ls.try_convert_to_int(item.get("quantity", 1))
            unit_amount = ls.try_convert_to_int(price.get("unit_amount"))
            name = (price.get("product_data") or {}).get("name")
            if not isinstance(unit_amount, int) or not isinstance(quantity, int) or quantity < 1 or not name:
                raise invalid_request("Invalid line item.", param=f"line_items[{index}]")
            currencies.add(str(price.get("currency") or "").lower())
            total += unit_amount * quantity
        if len(currencies) != 1:
            raise invalid_request("All line items must share one currency.", param="line_items")
        currency = currencies.pop()
        check_amount(total, currency, param="line_items")
        now = int(time.time())
        expires = (
            ls.try_convert_to_int(expires_at) if expires_at not in (None, "") else now + CHECKOUT_MAX_EXPIRY
        )
        if (
            not isinstance(expires, int)
            or not now + CHECKOUT_MIN_EXPIRY <= expires <= now + CHECKOUT_MAX_EXPIRY
        ):
            raise invalid_request(
                "The `expires_at` timestamp must be between 30 minutes and 24 hours from Checkout "
                "Session creation.",
                param="expires_at",
            )
        if client_reference_id is not None and len(str(client_reference_id)) > 200:
            raise invalid_request(
                "client_reference_id is at most 200 characters.", param="client_reference_id"
            )
        if customer:
            ls.Customer._api_retrieve(customer)  # 404 if it does not exist
        super().__init__()
        base = stripe_object("checkout.session")
        for key, value in base.items():
            if key not in ("id", "object", "created", "livemode"):
                setattr(self, key, value)
        self.mode = "payment"
        self.amount_subtotal = self.amount_total = total
        self.currency = currency
        self.client_reference_id = client_reference_id
        self.customer = customer
        self.metadata = metadata or {}
        self.success_url = success_url
        self.cancel_url = cancel_url
        self.expires_at = expires
        self.status = "open"
        self.payment_status = "unpaid"
        self.payment_intent = None
        self.payment_method_types = payment_method_types or ["card"]
        self.url = f"{HOSTED_PAGE_BASE['url']}/checkout/pay/{self.id}"
        self._intent_metadata = (payment_intent_data or {}).get("metadata") or {}
        self._line_items = line_items
        self._intent_id: str | None = None

    @classmethod
    def _api_retrieve(cls, id):
        obj = super()._api_retrieve(id)
        if obj.status == "open" and obj.expires_at <= time.time():
            obj._expire()
        return obj

    @classmethod
    def _api_update(cls, id, **data):
        raise invalid_request("Checkout Sessions cannot be updated here.", status=405)

    @classmethod
    def _api_delete(cls, id):
        raise invalid_request("Checkout Sessions cannot be deleted.", status=405)

    @classmethod
    def _api_expire(cls, id, **kwargs):
        obj = cls._api_retrieve(id)
        if obj.status != "open":
            raise invalid_request('Only Checkout Sessions with a status in ["open"] can be expired.')
        obj._expire()
        return obj

    def _expire(self) -> None:
        self.status = "expired"
        self.url = None
        emit("checkout.session.expired", self._export())

    def _complete(self, card_number: str, *, force: bool = False) -> None:
        """The payer pays on the hosted page. `force` pays a session that is no longer open, as a
        payment already under way when the session was expired would (a race, for tests)."""
        if self.status != "open" and not force:
            raise invalid_request("This Checkout Session is no longer open.")
        card = {"number": card_number, "exp_month": "12", "exp_year": "2034", "cvc": "123"}
        method = ls.PaymentMethod(type="card", card=card)
        if self._intent_id is None:
            # One PaymentIntent per session: a declined card and the next one share it.
            intent = ls.PaymentIntent(
                amount=self.amount_total,
                currency=self.currency,
                customer=self.customer,
                metadata=dict(self._intent_metadata),
            )
            self._intent_id = self.payment_intent = intent.id
        intent = ls.PaymentIntent._api_retrieve(self._intent_id)
        intent._update(payment_method=method.id)
        intent._confirm(on_failure_now=intent._report_failure)
        if intent.status == "requires_action":  # the hosted page runs 3-D Secure itself
            ls.PaymentIntent._api_authenticate(intent.id, client_secret=intent.client_secret, success=True)
        self.payment_intent = intent.id
        self.status = "complete"
        self.payment_status = "paid"
        self.url = None
        emit("checkout.session.completed", self._export())


for _method, _url, _handler in (
    ("POST", "/v1/checkout/sessions", ls_server.api_create(CheckoutSession, "/v1/checkout/sessions")),
    ("GET", "/v1/checkout/sessions", ls_server.api_list_all(CheckoutSession, "/v1/checkout/sessions")),
    (
        "GET",
        "/v1/checkout/sessions/{id}",
        ls_server.api_retrieve(CheckoutSession, "/v1/checkout/sessions/{id}"),
    ),
    (
        "POST",
        "/v1/checkout/sessions/{id}/expire",
        ls_server.api_extra(CheckoutSession._api_expire, "/v1/checkout/sessions/{id}/expire"),
    ),
):
    ls_server.app.router.add_route(_method, _url, _handler)


# Disputes (on demand, for tests) --------------------------------------------------------------------
# https://docs.stripe.com/testing#disputes: a dispute is opened by the bank, never by the API.


def dispute_open(charge_id: str, *, reason: str = "fraudulent", status: str = "needs_response") -> dict:
    """Open a dispute on a charge (charge.dispute.created); returns the dispute."""
    charge = ls.Charge._api_retrieve(charge_id)
    dispute = stripe_object(
        "dispute",
        id="dp_" + ls.random_id(14),
        charge=charge.id,
        payment_intent=charge.payment_intent,
        amount=charge.amount,
        currency=charge.currency,
        reason=reason,
        status=status,
        created=int(time.time()),
        livemode=False,
    )
    emit("charge.dispute.created", dispute)
    return dispute


def dispute_close(dispute: dict, *, status: str) -> dict:
    """Close a dispute as won or lost (charge.dispute.closed); returns it."""
    closed = {**dispute, "status": status}
    emit("charge.dispute.closed", closed)
    return closed
