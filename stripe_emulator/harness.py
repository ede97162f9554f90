"""A private Stripe emulator: localstripe behind a recording, fault-injecting proxy.

localstripe (PyPI) runs in-process on a free loopback port, its disk store turned
off so each run is private. Where it is kinder than Stripe it is made strict in one
module, stripe_emulator/strict.py (test cards and decline codes, amounts, refunds,
Checkout Sessions, the events Stripe sends, list filters). The proxy in front of it is
what the gateway and the browser talk to; it adds what lives at Stripe's edge:

* idempotency: a POST with an `Idempotency-Key` seen in the last 24 hours gets the
  first answer replayed (`Idempotent-Replayed: true`), or a 400 `idempotency_error`
  when its parameters differ; concurrent requests with one key wait for the first;
* the publishable-key requests Stripe.js makes (create a PaymentMethod, confirm a
  PaymentIntent with its client secret), and the project's own Stripe.js stand-in at
  /js.stripe.com/v3/ (stripe_emulator/static/stripe-v3.js);
* the hosted Checkout page a session's `url` points at (/checkout/pay/<id>);
* faults scripted per request (status with headers, a reset after the request was
  forwarded, a slow answer after forwarding); every request is recorded with its
  method, path and idempotency key.

Production code never knows any of this; it just talks to STRIPE_API_BASE.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import html
import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import requests
from aiohttp import ClientSession, web
from localstripe import resources as ls_resources
from localstripe import server as ls_server
from localstripe import webhooks as ls_webhooks
from localstripe.errors import UserError

from stripe_emulator import strict
from stripe_emulator.strict import API_VERSION, stripe_object

__all__ = ["StripeHarness", "make_event", "sign_payload", "stripe_object", "use_state_file"]

STAND_IN_JS = Path(__file__).parent / "static" / "stripe-v3.js"
# How long Stripe keeps an idempotency key (https://docs.stripe.com/api/idempotent_requests).
IDEMPOTENCY_WINDOW = 24 * 60 * 60
# Answers Stripe does not keep for an idempotency key: the request never ran.
NOT_SAVED = frozenset({400, 401, 403, 404, 409, 429})
# The key the proxy uses for what a browser asks with a publishable key.
_SERVER_KEY = "Bearer sk_test_emulator_proxy"
_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": "Content-Type, Authorization, Stripe-Version",
    "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
}

# Keep localstripe's store in memory only (not in its one shared pickle file), unless
# use_state_file() names a file of this project's own.
ls_resources.Store.dump_to_disk = lambda self: None
ls_resources.Store.try_load_from_disk = lambda self: None


def use_state_file(path: Path) -> None:
    """Keep the emulator's objects in `path` across restarts (the development stack)."""
    import pickle

    def dump(store) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(pickle.dumps(dict(store), protocol=pickle.HIGHEST_PROTOCOL))
        tmp.replace(path)

    if path.exists():
        ls_resources.store.update(pickle.loads(path.read_bytes()))
    ls_resources.Store.dump_to_disk = dump


# localstripe draws ids from the global `random`, which Hypothesis reseeds for each example;
# in-process that makes ids repeat (localstripe then answers 409). Draw them independently.
_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
ls_resources.random_id = lambda n: "".join(secrets.choice(_ID_ALPHABET) for _ in range(n))


def sign_payload(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A `Stripe-Signature` header for `payload`, as Stripe computes it."""
    ts = int(time.time()) if timestamp is None else timestamp
    signed = hmac.new(secret.encode(), f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={ts},v1={signed}"


def make_event(event_type: str, obj: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """A Stripe event of `event_type` about `obj`, shaped like Stripe's example event."""
    return stripe_object(
        "event",
        id="evt_" + secrets.token_hex(12),
        type=event_type,
        created=int(time.time()),
        api_version=API_VERSION,
        data={"object": obj},
        **overrides,
    )


def _unflatten(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding (a[b][0][c]=v) back into nested dicts; _listify makes the lists."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        *parents, leaf = key.replace("]", "").split("[")
        node = root
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return root


def _listify(value: Any) -> Any:
    if isinstance(value, dict):
        if value and all(k.isdigit() for k in value):
            return [_listify(value[k]) for k in sorted(value, key=int)]
        return {k: _listify(v) for k, v in value.items()}
    return value


@dataclass
class Fault:
    """What to do to the next request(s) matching method and path prefix."""

    method: str
    path: str
    action: str  # "respond", "reset", "slow", "drop" (close the connection, forward nothing)
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    delay: float = 0.0
    times: int = 1


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    idempotency_key: str | None
    params: dict[str, Any]
    replayed: bool = False


class StripeHarness:
    """Starts localstripe and the proxy on loopback in a background event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []
        # Consulted for a request (method, path) no scripted fault matched: random faults for
        # chaos runs (chaos/faults.py). Stripe.js's publishable-key requests are never faulted.
        self.fault_policy: Callable[[str, str], Fault | None] | None = None
        self._replays: dict[str, tuple[str, int, dict[str, str], bytes, float]] = {}
        self._key_locks: dict[str, asyncio.Lock] = {}
        self._guard = threading.Lock()
        self.emulator_url = ""
        self.url = ""

    # Lifecycle ---------------------------------------------------------------------------

    def start(self, *, port: int = 0, emulator_port: int = 0) -> StripeHarness:
        self._ports = (port, emulator_port)
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True, name="stripe-harness").start()
        if not ready.wait(15):
            raise RuntimeError("the Stripe emulator did not start")
        return self

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())
        ready.set()
        self.loop.run_forever()

    async def _serve(self) -> None:
        emulator = web.AppRunner(ls_server.app, access_log=None)
        await emulator.setup()
        site = web.TCPSite(emulator, "127.0.0.1", self._ports[1])
        await site.start()
        self.emulator_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        proxy_app = web.Application(client_max_size=10 * 1024 * 1024)
        proxy_app.router.add_route("*", "/{tail:.*}", self._handle)
        proxy = web.AppRunner(proxy_app, access_log=None)
        await proxy.setup()
        proxy_site = web.TCPSite(proxy, "127.0.0.1", self._ports[0])
        await proxy_site.start()
        self.url = f"http://127.0.0.1:{proxy_site._server.sockets[0].getsockname()[1]}"
        strict.HOSTED_PAGE_BASE["url"] = self.url
        self._client = ClientSession()

    def reset(self) -> None:
        """Forget faults, records, replays and every object at the emulator."""
        with self._guard:
            self.faults.clear()
            self.requests.clear()
            self._replays.clear()
        requests.delete(f"{self.emulator_url}/_config/data", timeout=5)

    # Scripting -----------------------------------------------------------------------------

    def fail(
        self,
        method: str,
        path: str,
        *,
        status: int = 500,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next `times` matching requests with `status` without forwarding them."""
        self.faults.append(Fault(method, path, "respond", status, headers or {}, body, times=times))

    def reset_after_forward(self, method: str, path: str, *, times: int = 1) -> None:
        """Forward the request, then drop the connection before answering."""
        self.faults.append(Fault(method, path, "reset", times=times))

    def slow_after_forward(self, method: str, path: str, *, delay: float, times: int = 1) -> None:
        """Forward the request, then wait `delay` seconds before answering."""
        self.faults.append(Fault(method, path, "slow", delay=delay, times=times))

    def calls(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        """Recorded requests, optionally those of one method and path prefix."""
        return [
            r
            for r in list(self.requests)
            if (method is None or r.method == method) and (path is None or r.path.startswith(path))
        ]

    def _take_fault(self, method: str, path: str, *, secret: bool = True) -> Fault | None:
        with self._guard:
            for fault in self.faults:
                if fault.method == method and path.startswith(fault.path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        if secret and self.fault_policy is not None:
            return self.fault_policy(method, path)
        return None

    # Emulator helpers for tests -----------------------------------------------------------------

    def api(self, method: str, path: str, **params: Any) -> dict[str, Any]:
        """Call the emulator directly (not through the proxy, so nothing is recorded)."""
        response = requests.request(
            method,
            f"{self.emulator_url}{path}",
            data=params if method != "GET" else None,
            params=params if method == "GET" else None,
            headers={"Authorization": "Bearer sk_test_suite"},
            timeout=10,
        )
        response.raise_for_status()
        return response.json() if response.content else {}

    def card(self, number: str = "4242424242424242") -> str:
        """A PaymentMethod for a test card number (server side, tests only)."""
        return self.api(
            "POST",
            "/v1/payment_methods",
            type="card",
            **{
                "card[number]": number,
                "card[exp_month]": "12",
                "card[exp_year]": "2034",
                "card[cvc]": "123",
            },
        )["id"]

    def authenticate(self, intent_id: str, client_secret: str, *, success: bool = True) -> dict[str, Any]:
        """Complete (or fail) 3-D Secure for an intent in requires_action, as Stripe.js would."""
        response = requests.post(
            f"{self.emulator_url}/v1/payment_intents/{intent_id}/_authenticate",
            params={"success": "true" if success else "false"},
            json={"key": "pk_test_suite", "client_secret": client_secret},
            timeout=10,
        )
        response.raise_for_status()
        return response.json()

    @contextlib.contextmanager
    def webhooks_to(self, url: str, secret: str = "whsec_test_primary"):
        """Have the emulator send its signed events to `url` while the block runs."""
        self.api("POST", "/_config/webhooks/tests", url=url, secret=secret)
        try:
            yield
        finally:
            ls_webhooks._webhooks.pop("tests", None)  # localstripe has no call to remove one

    @contextlib.contextmanager
    def webhook_retries(self, *, first_delay: float):
        """Inside: a failed delivery is sent again after `first_delay` seconds, then twice as late
        each time (Stripe's sandbox waits hours; strict.WEBHOOK_RETRY)."""
        before = dict(strict.WEBHOOK_RETRY)
        strict.WEBHOOK_RETRY["first_delay"] = first_delay
        try:
            yield
        finally:
            strict.WEBHOOK_RETRY.update(before)

    def deliveries(self, event_id: str) -> list[dict[str, Any]]:
        """Every attempt to deliver the event so far: endpoint, attempt number, status (None: no answer)."""
        return [d for d in list(strict.DELIVERIES) if d["event"] == event_id]

    def forget_events(self) -> None:
        """Drop the emulator's event log (as if those events were delivered long ago)."""
        for key in [k for k in ls_resources.store if k.startswith("event:")]:
            del ls_resources.store[key]

    def _in_loop(self, fn, *args: Any, **kwargs: Any) -> Any:
        """Run `fn` in the emulator's event loop (where localstripe's objects live and send events)."""

        async def run():
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(15)

    def complete_checkout(
        self, session_id: str, *, card: str = "4242424242424242", force: bool = False
    ) -> dict[str, Any]:
        """Pay a Checkout Session as a payer on Stripe's page would; returns the session.

        Stripe refuses to take payment on a session that is not open; `force` pays it anyway,
        as a payment already under way when the session was expired would be."""

        def complete():
            session = strict.CheckoutSession._api_retrieve(session_id)
            session._complete(card, force=force)
            return session._export()

        return self._in_loop(complete)

    def expire_checkout(self, session_id: str) -> dict[str, Any]:
        """Expire an open Checkout Session (as its expires_at passing would)."""
        return self._in_loop(lambda: strict.CheckoutSession._api_expire(session_id)._export())

    def fail_refund(self, refund_id: str, *, failure_reason: str = "expired_or_canceled_card") -> dict:
        """Make a refund fail after it succeeded (refund.updated, refund.failed)."""
        return self._in_loop(strict.refund_fail, refund_id, failure_reason=failure_reason)

    def open_dispute(self, charge_id: str, *, reason: str = "fraudulent") -> dict[str, Any]:
        """The payer's bank disputes a charge (charge.dispute.created); returns the dispute."""
        return self._in_loop(strict.dispute_open, charge_id, reason=reason)

    def close_dispute(self, dispute: dict[str, Any], *, status: str) -> dict[str, Any]:
        """The dispute is decided, `won` or `lost` (charge.dispute.closed)."""
        return self._in_loop(strict.dispute_close, dispute, status=status)

    # The proxy ----------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "OPTIONS":
            return web.Response(status=204, headers=_CORS)
        if request.path == "/js.stripe.com/v3/":
            return web.Response(
                text=STAND_IN_JS.read_text(), content_type="application/javascript", headers=_CORS
            )
        if request.path.startswith("/checkout/pay/"):
            return await self._hosted_checkout(request)
        response = await self._api(request)
        response.headers.update(_CORS)
        return response

    async def _api(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        method, path = request.method, request.path
        key = request.headers.get("Idempotency-Key")
        pairs = parse_qsl(body.decode() if method == "POST" else request.query_string, keep_blank_values=True)
        fault = self._take_fault(
            method, path, secret=request.headers.get("Authorization", "").startswith("Bearer sk_")
        )
        if fault and fault.action == "drop":
            self.requests.append(Recorded(method, path, key, _listify(_unflatten(pairs))))
            request.transport.abort()
            raise asyncio.CancelledError
        if fault and fault.action == "respond":
            self.requests.append(Recorded(method, path, key, _listify(_unflatten(pairs))))
            error = fault.body or {"error": {"type": "api_error", "message": "Injected fault."}}
            return web.json_response(error, status=fault.status, headers=fault.headers)
        if method == "POST" and key:
            lock = self._key_locks.setdefault(key, asyncio.Lock())
            if lock.locked():
                # Stripe answers a second request with a key still in flight at once.
                self.requests.append(Recorded(method, path, key, _listify(_unflatten(pairs))))
                return web.json_response(
                    {
                        "error": {
                            "type": "invalid_request_error",
                            "code": "idempotency_key_in_use",
                            "message": "There is currently another in-progress request using this "
                            "idempotency key. Try again later.",
                        }
                    },
                    status=409,
                )
            async with lock:
                fingerprint = hashlib.sha256(f"{method} {path} ".encode() + body).hexdigest()
                cached = self._replays.get(key)
                if cached and cached[4] < time.time() - IDEMPOTENCY_WINDOW:
                    cached = None  # Stripe forgets a key after 24 hours
                if cached:
                    self.requests.append(
                        Recorded(method, path, key, _listify(_unflatten(pairs)), replayed=True)
                    )
                    if cached[0] != fingerprint:
                        return web.json_response(
                            {
                                "error": {
                                    "type": "idempotency_error",
                                    "message": "Keys for idempotent requests can only be used with the "
                                    "same parameters they were first used with.",
                                }
                            },
                            status=400,
                        )
                    status, headers, payload = cached[1], cached[2], cached[3]
                    headers = {**headers, "Idempotent-Replayed": "true"}
                else:
                    self.requests.append(Recorded(method, path, key, _listify(_unflatten(pairs))))
                    status, headers, payload = await self._answer(request, method, path, pairs)
                    # Stripe saves what its endpoint answered, 500s included; not a request
                    # refused before it ran (invalid parameters, no such object, auth, limits).
                    if status not in NOT_SAVED:
                        self._replays[key] = (fingerprint, status, headers, payload, time.time())
        else:
            self.requests.append(Recorded(method, path, key, _listify(_unflatten(pairs))))
            status, headers, payload = await self._answer(request, method, path, pairs)
        if fault and fault.action == "reset":
            request.transport.abort()
            raise asyncio.CancelledError
        if fault and fault.action == "slow":
            await asyncio.sleep(fault.delay)
        return web.Response(status=status, body=payload, headers=headers, content_type="application/json")

    async def _answer(self, request, method, path, pairs) -> tuple[int, dict[str, str], bytes]:
        authorization = request.headers.get("Authorization", "")
        publishable = dict(pairs).get("key", "") if method == "POST" else request.query.get("key", "")
        if not authorization and publishable.startswith("pk_"):
            return await self._from_browser(method, path, pairs)
        return await self._upstream(method, path, pairs, authorization)

    async def _upstream(
        self, method: str, path: str, pairs, authorization: str = _SERVER_KEY
    ) -> tuple[int, dict[str, str], bytes]:
        async with self._client.request(
            method,
            f"{self.emulator_url}{path}",
            params=pairs if method != "POST" else None,
            data=urlencode(pairs) if method == "POST" else None,
            headers={"Authorization": authorization, "Content-Type": "application/x-www-form-urlencoded"},
        ) as upstream:
            payload = await upstream.read()
            status = upstream.status
        return status, {"Request-Id": "req_" + secrets.token_hex(8)}, payload

    # What Stripe.js asks with the publishable key -------------------------------------------------------

    async def _from_browser(self, method: str, path: str, pairs) -> tuple[int, dict[str, str], bytes]:
        """Stripe.js's own requests: a PaymentMethod from card details, an intent confirmed or read
        with its client secret, 3-D Secure completed. Anything else needs a secret key."""
        fields = [(k, v) for k, v in pairs if k not in ("key", "client_secret")]
        secret = dict(pairs).get("client_secret", "")
        if method == "POST" and path == "/v1/payment_methods":
            return await self._upstream(method, path, fields)
        intent = re.fullmatch(r"/v1/payment_intents/(pi_\w+)(/confirm|/_authenticate)?", path)
        if intent:
            status, headers, payload = await self._upstream("GET", f"/v1/payment_intents/{intent[1]}", [])
            if status != 200 or not secret or json.loads(payload).get("client_secret") != secret:
                return _error(404, f"No such payment_intent: '{intent[1]}'", code="resource_missing")
            if method == "GET" and not intent[2]:
                return status, headers, payload
            if intent[2] == "/_authenticate":
                return await self._upstream("POST", path, pairs, "")
            if intent[2] == "/confirm":
                return await self._confirm_from_browser(intent[1], fields)
        if method == "POST" and re.fullmatch(r"/v1/setup_intents/seti_\w+/(confirm|cancel)", path):
            return await self._upstream(method, path, pairs, "")  # localstripe checks the client secret
        return _error(401, "This request needs a secret key.", kind="invalid_request_error")

    async def _confirm_from_browser(self, intent_id: str, fields) -> tuple[int, dict[str, str], bytes]:
        params = _listify(_unflatten(fields))
        method_id = params.get("payment_method", "")
        card_data = params.get("payment_method_data")
        if card_data:
            # payment_method_data[card][number] -> card[number]
            data = [
                (re.sub(r"^\[(\w+)\]", r"\1", k.removeprefix("payment_method_data")), v)
                for k, v in fields
                if k.startswith("payment_method_data[")
            ]
            created = await self._upstream("POST", "/v1/payment_methods", data)
            if created[0] != 200:
                return created
            method_id = json.loads(created[2])["id"]
        update = [("payment_method", method_id)] if method_id else []
        if params.get("setup_future_usage"):
            update.append(("setup_future_usage", params["setup_future_usage"]))
        if update:
            changed = await self._upstream("POST", f"/v1/payment_intents/{intent_id}", update)
            if changed[0] != 200:
                return changed
        return await self._upstream("POST", f"/v1/payment_intents/{intent_id}/confirm", [])

    # Stripe's hosted Checkout page -----------------------------------------------------------------------

    async def _hosted_checkout(self, request: web.Request) -> web.StreamResponse:
        session_id = request.path.rstrip("/").rsplit("/", 1)[-1]
        try:
            session = strict.CheckoutSession._api_retrieve(session_id)
        except UserError:
            return web.Response(status=404, text="No such Checkout Session.")
        message = ""
        if request.method == "POST":
            form = await request.post()
            number = re.sub(r"\D", "", str(form.get("number", "")))
            try:
                strict.CheckoutSession._api_retrieve(session_id)._complete(number)
            except UserError as error:
                message = error.body["error"].get("message", "The payment did not go through.")
            else:
                target = (session.success_url or "").replace("{CHECKOUT_SESSION_ID}", session_id)
                raise web.HTTPSeeOther(target)
        if session.status != "open":
            target = session.success_url if session.status == "complete" else session.cancel_url
            return web.Response(
                text=f"<p>This Checkout Session is {session.status}.</p>"
                f'<p><a href="{html.escape(target or "")}">Back to the site</a></p>',
                content_type="text/html",
            )
        amount = f"{session.amount_total} {session.currency.upper()} (minor units)"
        return web.Response(
            content_type="text/html",
            text=f"""<!doctype html><meta charset="utf-8"><title>Pay - Stripe emulator</title>
<h1>Stripe emulator: hosted Checkout</h1><p>Pay {html.escape(amount)}</p>
<p role="alert" id="error">{html.escape(message)}</p>
<form method="post"><label>Card number <input name="number" autocomplete="off"></label>
<button type="submit" id="pay">Pay</button></form>
<p><a id="cancel" href="{html.escape(session.cancel_url or "")}">Cancel and go back</a></p>""",
        )


def _error(status: int, message: str, *, code: str | None = None, kind: str = "invalid_request_error"):
    error: dict[str, Any] = {"type": kind, "message": message}
    if code:
        error["code"] = code
    return status, {"Request-Id": "req_" + secrets.token_hex(8)}, json.dumps({"error": error}).encode()
