"""Bookers and staff as black-box HTTP clients: book, pay (as Stripe.js would), retry, refund."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal

import requests

GOOD = "4242424242424242"
THREE_D_SECURE = "4000002500003155"
DECLINED = "4000000000000002"
INSUFFICIENT_FUNDS = "4000000000009995"

PAID = {"succeeded", "partially_refunded", "refunded"}
READ_AGAIN = {"no_payment", "illegal_state", "already_paid", "not_payable"}
# How long one booker keeps trying to pay one booking, in steps and in seconds.
MAX_STEPS = 60
PAY_DEADLINE = 240.0
REQUEST_TIMEOUT = 30.0


@dataclass(frozen=True)
class Plan:
    """What one booker does with one booking."""

    name: str
    first_card: str = GOOD
    three_ds_ok: bool = True
    give_up: bool = False  # after the first failure, walk away (the booking stays unpaid)
    double_click: bool = False
    refund: str = ""  # "", "partial", "full", "race", "cancel"


# (weight, plan): the mix of one run.
PLANS = [
    (28, Plan("card")),
    (10, Plan("3-D Secure", THREE_D_SECURE)),
    (8, Plan("3-D Secure failed, then another card", THREE_D_SECURE, three_ds_ok=False)),
    (3, Plan("3-D Secure failed, gave up", THREE_D_SECURE, three_ds_ok=False, give_up=True)),
    (8, Plan("declined, then another card", DECLINED)),
    (3, Plan("insufficient funds, gave up", INSUFFICIENT_FUNDS, give_up=True)),
    (12, Plan("double click", double_click=True)),
    (3, Plan("double click with 3-D Secure", THREE_D_SECURE, double_click=True)),
    (8, Plan("partial refund", refund="partial")),
    (6, Plan("full refund", refund="full")),
    (7, Plan("concurrent refunds over the total", refund="race")),
    (4, Plan("cancelled by the booker", refund="cancel")),
]


@dataclass
class Outcome:
    booking_id: int
    plan: Plan
    paid: bool = False
    abandoned: bool = False
    race: tuple[int, ...] = ()  # HTTP statuses of the two concurrent refunds
    race_conclusive: bool = True
    refunds_accepted: int = 0
    note: str = ""
    trail: list[str] = field(default_factory=list)  # what the booker saw, step by step


@dataclass
class Tally:
    """What the clients saw, shared by their threads."""

    statuses: Counter[str] = field(default_factory=Counter)  # "409 illegal_state"
    server_errors: list[str] = field(default_factory=list)  # 500s and 5xx that are not our envelope
    transport_errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Load:
    """What the load phase did: its outcomes, what the clients saw, the disruptions made."""

    tally: Tally
    outcomes: list[Outcome] = field(default_factory=list)
    finished: int = 0
    not_created: int = 0  # bookings whose creation never succeeded
    not_run: int = 0  # bookings left when the load's deadline passed
    disruptions: Counter[str] = field(default_factory=Counter)


class Client:
    """One HTTP session for one user against the site, and Stripe.js's requests to the emulator."""

    def __init__(self, site: str, stripe: str, publishable_key: str, tally: Tally) -> None:
        self.site, self.stripe, self.key, self.tally = site, stripe, publishable_key, tally
        self.session = requests.Session()
        self.token = ""

    def login(self, username: str, password: str) -> None:
        for _ in range(20):
            status, body = self.call("POST", "/api/auth/token/", {"username": username, "password": password})
            if status == 200:
                self.token = body["access"]
                return
            time.sleep(1)
        raise RuntimeError(f"{username} could not log in")

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int | None, dict]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = self.session.request(
                method, self.site + path, json=body, headers=headers, timeout=REQUEST_TIMEOUT
            )
        except requests.RequestException as error:
            with self.tally.lock:
                self.tally.transport_errors += 1
            return None, {"error": {"code": "transport", "message": type(error).__name__}}
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        with self.tally.lock:
            enveloped = isinstance(payload, dict) and "error" in payload
            code = (
                payload["error"].get("code", "") if enveloped and isinstance(payload["error"], dict) else ""
            )
            self.tally.statuses[f"{response.status_code} {code}".strip()] += 1
            if response.status_code == 500 or (response.status_code >= 500 and not enveloped):
                self.tally.server_errors.append(f"{response.status_code} {method} {path}")
        return response.status_code, payload if isinstance(payload, dict) else {"results": payload}

    # What Stripe.js does in the browser (never faulted: the proxy faults secret-key requests).

    def card(self, number: str) -> str:
        response = requests.post(
            f"{self.stripe}/v1/payment_methods",
            data={
                "key": self.key,
                "type": "card",
                "card[number]": number,
                "card[exp_month]": "12",
                "card[exp_year]": "2034",
                "card[cvc]": "123",
            },
            timeout=REQUEST_TIMEOUT,
        )
        response.raise_for_status()
        return response.json()["id"]

    def authenticate(self, intent_id: str, client_secret: str, *, success: bool) -> None:
        requests.post(
            f"{self.stripe}/v1/payment_intents/{intent_id}/_authenticate",
            data={"key": self.key, "client_secret": client_secret, "success": str(success).lower()},
            timeout=REQUEST_TIMEOUT,
        )


def pick_plan(rng: random.Random) -> Plan:
    return rng.choices([plan for _, plan in PLANS], weights=[weight for weight, _ in PLANS])[0]


def _payment(body: dict) -> dict:
    return body.get("payment", body) if isinstance(body, dict) else {}


def _transient(status: int | None, body: dict) -> bool:
    code = body.get("error", {}).get("code", "") if isinstance(body, dict) else ""
    return status is None or status >= 500 or status == 429 or code == "idempotency_key_in_use"


class Booker:
    """Books one seat and pays for it as a patient person would: on an error that says "try again"
    it tries again (reading the status first); on a decline it takes another card unless its plan
    is to give up."""

    def __init__(self, client: Client, staff: Client, rng: random.Random, *, deadline: float) -> None:
        self.client, self.staff, self.rng = client, staff, rng
        self.deadline = deadline  # the load's, on time.monotonic()

    def run(self, event_id: int, plan: Plan) -> Outcome | None:
        status, body = self._until_done("POST", "/api/bookings/", {"event": event_id, "quantity": 1})
        if status != 201:
            return None
        outcome = Outcome(booking_id=body["id"], plan=plan)
        self._pay(outcome)
        if outcome.paid and plan.refund:
            self._refund(outcome)
        return outcome

    # Paying -------------------------------------------------------------------------------------

    def _pay(self, outcome: Outcome) -> None:
        plan, base = outcome.plan, f"/api/bookings/{outcome.booking_id}/payment"
        method_id = self.client.card(plan.first_card)
        first = {"payment_method_id": method_id, "confirm_immediately": True}
        if plan.double_click:
            with ThreadPoolExecutor(2) as pool:
                answers = list(
                    pool.map(lambda _: self.client.call("POST", f"{base}/intent/", first), range(2))
                )
            status, body = next((a for a in answers if a[0] == 200), answers[0])
        else:
            status, body = self.client.call("POST", f"{base}/intent/", first)
        secrets: dict[str, str] = {}
        challenged = False
        deadline = min(time.monotonic() + PAY_DEADLINE, self.deadline)
        for _ in range(MAX_STEPS):
            if time.monotonic() > deadline:
                outcome.note = "gave up: deadline"
                return
            if isinstance(body, dict) and body.get("client_secret"):
                secrets[_payment(body).get("payment_intent", "")] = body["client_secret"]
            payment = _payment(body) if status == 200 else {}
            state = payment.get("status", "")
            code = body.get("error", {}).get("code", "") if isinstance(body, dict) else ""
            outcome.trail.append(f"{status} {state or code}")
            if state in PAID:
                outcome.paid = True
                return
            if status == 402 or state in {"failed", "canceled"}:
                if plan.give_up:
                    outcome.abandoned = True
                    return
                status, body = self.client.call(
                    "POST", f"{base}/retry/", {"payment_method_id": self.client.card(GOOD)}
                )
                continue
            if state == "requires_action":
                secret = secrets.get(payment.get("payment_intent", ""))
                if secret is None:  # known from a status read: ask for the open intent again
                    status, body = self.client.call("POST", f"{base}/intent/", {})
                    continue
                success = plan.three_ds_ok or challenged
                self.client.authenticate(payment["payment_intent"], secret, success=success)
                challenged = True
                if not success and plan.give_up:
                    outcome.abandoned = True
                    return
                status, body = self.client.call("POST", f"{base}/confirm/", {})
                continue
            if state == "created":
                status, body = self.client.call("POST", f"{base}/confirm/", {"payment_method_id": method_id})
                continue
            # Answers that say "look again": the status tells whether it was paid after all.
            if status == 200 or _transient(status, body) or code in READ_AGAIN:
                time.sleep(self.rng.uniform(0.3, 1.5))
                status, body = self.client.call("GET", f"{base}/status/")
                if status in (404, 409) and body.get("error", {}).get("code") == "no_payment":
                    status, body = self.client.call("POST", f"{base}/intent/", first)
                continue
            outcome.note = f"stopped on HTTP {status} {code}"
            return
        outcome.note = "gave up: steps"

    # Refunding ------------------------------------------------------------------------------------

    def _refund(self, outcome: Outcome) -> None:
        base = f"/api/bookings/{outcome.booking_id}/payment"
        plan = outcome.plan
        if plan.refund == "cancel":
            status, _ = self._until_done("POST", f"/api/bookings/{outcome.booking_id}/cancel/", {})
            outcome.refunds_accepted = int(status == 200)
            return
        if plan.refund == "race":
            status, body = self._until_done("GET", f"{base}/status/", client=self.staff)
            if status != 200:
                outcome.note = f"race: status answered {status}"
                return
            share = Decimal(body["total"]) * 6 // 10
            amount = str((share / 100).quantize(Decimal("0.01")))
            request = {"amount": amount, "reason": "requested_by_customer"}
            with ThreadPoolExecutor(2) as pool:
                answers = list(
                    pool.map(lambda _: self.staff.call("POST", f"{base}/refund/", request), range(2))
                )
            outcome.race = tuple(s or 0 for s, _ in answers)
            outcome.refunds_accepted = sum(1 for s, _ in answers if s == 201)
            # An answer lost to a fault says nothing about the race: not counted either way.
            outcome.race_conclusive = not any(_transient(s, b) for s, b in answers)
            return
        request = {"amount": "1.00"} if plan.refund == "partial" else {}
        for _ in range(10):
            if time.monotonic() > self.deadline:
                outcome.note = "refund: deadline"
                return
            status, body = self.staff.call("POST", f"{base}/refund/", request)
            if status == 201:
                outcome.refunds_accepted += 1
                return
            if not _transient(status, body):
                outcome.note = f"refund refused: {status} {body.get('error', {}).get('code')}"
                return
            # A refund may exist although the answer was lost: look before asking again.
            time.sleep(self.rng.uniform(0.5, 2))
            status, body = self._until_done("GET", f"{base}/status/", client=self.staff)
            if body.get("refunds"):
                outcome.refunds_accepted += 1
                return

    def _until_done(self, method: str, path: str, body: dict | None = None, *, client: Client | None = None):
        client = client or self.client
        status, answer = None, {}
        for _ in range(30):
            if time.monotonic() > self.deadline:
                break
            status, answer = client.call(method, path, body)
            if not _transient(status, answer):
                return status, answer
            time.sleep(self.rng.uniform(0.3, 1.5))
        return status, answer
