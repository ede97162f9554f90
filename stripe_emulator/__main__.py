"""Run the Stripe emulator for the local stack: python -m stripe_emulator --help."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from stripe_emulator import strict
from stripe_emulator.harness import StripeHarness, use_state_file


def main() -> None:
    parser = argparse.ArgumentParser(
        description="localstripe behind the project's adapting proxy, on loopback"
    )
    parser.add_argument(
        "--port", type=int, default=8420, help="the API address for the server (STRIPE_API_BASE)"
    )
    parser.add_argument(
        "--emulator-port", type=int, default=8421, help="localstripe itself, behind the proxy"
    )
    parser.add_argument(
        "--webhook-url",
        help="where to deliver signed events, e.g. http://127.0.0.1:8000/api/webhooks/stripe/",
    )
    parser.add_argument(
        "--webhook-secret", default="whsec_local_dev", help="the secret the events are signed with"
    )
    parser.add_argument(
        "--webhook-retry-delay",
        type=float,
        default=3600.0,
        help="seconds before a failed delivery is sent again, doubling for each of 3 retries "
        "(Stripe's sandbox retries three times over a few hours)",
    )
    parser.add_argument("--state", type=Path, help="keep the emulator's objects in this file across restarts")
    args = parser.parse_args()
    if args.state:
        args.state.parent.mkdir(parents=True, exist_ok=True)
        use_state_file(args.state)
    strict.WEBHOOK_RETRY["first_delay"] = args.webhook_retry_delay
    harness = StripeHarness().start(port=args.port, emulator_port=args.emulator_port)
    if args.webhook_url:
        harness.api("POST", "/_config/webhooks/site", url=args.webhook_url, secret=args.webhook_secret)
    print(f"Stripe emulator: API {harness.url}, Stripe.js {harness.url}/js.stripe.com/v3/", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()


if __name__ == "__main__":
    main()
