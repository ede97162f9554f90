"""A private Stripe emulator: localstripe behind a recording, fault-injecting proxy.

localstripe (PyPI) runs in-process on a free loopback port, its disk store turned
off so each run is private. The proxy in front of it is what the gateway talks to,
and is the one documented place where the emulator is extended to act like Stripe:

* idempotency: a POST with an `Idempotency-Key` seen before gets the first answer
  replayed (`Idempotent-Replayed: true`), or a 400 `idempotency_error` when its
  parameters differ; concurrent requests with one key wait for the first;
* parameters localstripe rejects but Stripe accepts (UNSUPPORTED_PARAMS) are taken
  out before forwarding and echoed back into the answer;
* Checkout Sessions, which localstripe lacks, are served from Stripe's fixture
  object (stripe_emulator/fixtures/objects.json);
* faults are scripted per request (status with headers, a reset after the request
  was forwarded, a slow answer after forwarding) and every request is recorded with
  its method, path and idempotency key.

Production code never knows any of this; it just talks to STRIPE_API_BASE.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import requests
from aiohttp import ClientSession, web
from localstripe import resources as ls_resources
from localstripe import server as ls_server
from localstripe import webhooks as ls_webhooks

FIXTURES = json.loads((Path(__file__).parent / "fixtures" / "objects.json").read_text())["resources"]

# Parameters Stripe documents that localstripe 1.15 answers with "Unexpected ...".
UNSUPPORTED_PARAMS: dict[tuple[str, str], tuple[str, ...]] = {
    ("POST", "/v1/payment_intents"): ("description", "setup_future_usage"),
    ("POST", "/v1/refunds"): ("reason",),
    # List filters: without them the emulator answers a superset, which is still correct.
    ("GET", "/v1/payment_intents"): ("created",),
    ("GET", "/v1/refunds"): ("created",),
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


def stripe_object(name: str, **overrides: Any) -> dict[str, Any]:
    """A copy of Stripe's example object `name` with `overrides` set."""
    obj = copy.deepcopy(FIXTURES[name])
    obj.update(overrides)
    return obj


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
        api_version="2026-10-28.endive",
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
    action: str  # "respond", "reset", "slow"
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
        self.sessions: dict[str, dict[str, Any]] = {}
        self._replays: dict[str, tuple[str, int, dict[str, str], bytes]] = {}
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
        self._client = ClientSession()

    def reset(self) -> None:
        """Forget faults, records, replays and every object at the emulator."""
        with self._guard:
            self.faults.clear()
            self.requests.clear()
            self._replays.clear()
            self.sessions.clear()
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

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._guard:
            for fault in self.faults:
                if fault.method == method and path.startswith(fault.path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
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

    def forget_events(self) -> None:
        """Drop the emulator's event log (as if those events were delivered long ago)."""
        for key in [k for k in ls_resources.store if k.startswith("event:")]:
            del ls_resources.store[key]

    def complete_checkout(self, session_id: str, *, card: str = "4242424242424242") -> dict[str, Any]:
        """Pay a checkout session as a customer on Stripe's page would; returns the session."""
        session = self.sessions[session_id]
        intent = self.api(
            "POST",
            "/v1/payment_intents",
            amount=str(session["amount_total"]),
            currency=session["currency"],
            payment_method=self.card(card),
            confirm="true",
            **{f"metadata[{k}]": v for k, v in (session.get("metadata") or {}).items()},
        )
        session.update(status="complete", payment_status="paid", payment_intent=intent["id"])
        return copy.deepcopy(session)

    def expire_checkout(self, session_id: str) -> dict[str, Any]:
        self.sessions[session_id].update(status="expired")
        return copy.deepcopy(self.sessions[session_id])

    # The proxy ----------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        method, path = request.method, request.path
        key = request.headers.get("Idempotency-Key")
        pairs = parse_qsl(body.decode() if method == "POST" else request.query_string, keep_blank_values=True)
        fault = self._take_fault(method, path)
        if fault and fault.action == "respond":
            self.requests.append(Recorded(method, path, key, _listify(_unflatten(pairs))))
            error = fault.body or {"error": {"type": "api_error", "message": "Injected fault."}}
            return web.json_response(error, status=fault.status, headers=fault.headers)
        if method == "POST" and key:
            lock = self._key_locks.setdefault(key, asyncio.Lock())
            async with lock:
                fingerprint = hashlib.sha256(f"{method} {path} ".encode() + body).hexdigest()
                cached = self._replays.get(key)
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
                    if status < 500:
                        self._replays[key] = (fingerprint, status, headers, payload)
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
        if path.startswith("/v1/checkout/sessions"):
            return self._checkout(method, path, pairs)
        dropped = UNSUPPORTED_PARAMS.get((method, path), ())
        kept = [(k, v) for k, v in pairs if k.split("[")[0] not in dropped]
        echoed = {k: v for k, v in pairs if k.split("[")[0] in dropped and "[" not in k}
        if method != "POST":
            echoed = {}
        async with self._client.request(
            method,
            f"{self.emulator_url}{path}",
            params=kept if method != "POST" else None,
            data=urlencode(kept) if method == "POST" else None,
            headers={
                "Authorization": request.headers.get("Authorization", ""),
                "Content-Type": "application/x-www-form-urlencoded",
            },
        ) as upstream:
            payload = await upstream.read()
            status = upstream.status
        if echoed and status < 300:
            data = json.loads(payload)
            data.update(echoed)
            payload = json.dumps(data).encode()
        return status, {"Request-Id": "req_" + secrets.token_hex(8)}, payload

    def _checkout(self, method: str, path: str, pairs) -> tuple[int, dict[str, str], bytes]:
        parts = path.rstrip("/").split("/")
        if method == "POST" and len(parts) == 4:
            params = _listify(_unflatten(pairs))
            item = params["line_items"][0]
            amount = int(item["price_data"]["unit_amount"]) * int(item.get("quantity", 1))
            session_id = "cs_test_" + secrets.token_hex(12)
            session = stripe_object(
                "checkout.session",
                id=session_id,
                object="checkout.session",
                amount_subtotal=amount,
                amount_total=amount,
                currency=item["price_data"]["currency"],
                client_reference_id=params.get("client_reference_id"),
                customer=params.get("customer"),
                metadata=params.get("metadata", {}),
                success_url=params.get("success_url"),
                cancel_url=params.get("cancel_url"),
                expires_at=int(params.get("expires_at") or time.time() + 1800),
                created=int(time.time()),
                status="open",
                payment_status="unpaid",
                payment_intent=None,
                mode="payment",
                url=f"{self.url}/checkout/pay/{session_id}",
            )
            self.sessions[session_id] = session
            return 200, {}, json.dumps(session).encode()
        if len(parts) >= 5 and parts[4] in self.sessions:
            session = self.sessions[parts[4]]
            if method == "POST" and parts[-1] == "expire":
                session.update(status="expired")
            return 200, {}, json.dumps(session).encode()
        return (
            404,
            {},
            json.dumps(
                {
                    "error": {
                        "type": "invalid_request_error",
                        "code": "resource_missing",
                        "message": "No such checkout.session",
                    }
                }
            ).encode(),
        )
