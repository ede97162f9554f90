"""The booking site in a real browser (Debian's Chromium driven by Playwright) on the real stack:
the live server, the Stripe emulator with its stand-in Stripe.js and signed webhooks, and a
Celery worker on Redis. Screenshots of every step go to artifacts/screenshots/."""

import os
import shutil
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from bookings.models import Booking
from payments.models import Payment
from tests.factories import EventFactory, UserFactory

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.emulator,
    pytest.mark.django_db(transaction=True),
]

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
SHOTS = Path(django_settings.BASE_DIR) / "artifacts" / "screenshots"
PASSWORD = "pass-word-123"


@pytest.fixture(scope="module")
def browser():
    # Playwright's sync API keeps an event loop in this thread for the whole module; the test
    # thread's ORM calls (and pytest-django's teardown) are still synchronous.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        yield from _browser()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def _browser():
    if not Path(CHROMIUM).exists():
        message = f"Chromium is not installed at {CHROMIUM} (Debian package 'chromium')."
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def site(live_server, stripe_env, celery_worker_thread, settings):
    """The running site, wired to the emulator (the API and its Stripe.js stand-in, through the proxy)."""
    settings.STRIPE_JS_URL = f"{stripe_env.url}/js.stripe.com/v3/"
    settings.SITE_URL = live_server.url
    settings.ALLOWED_HOSTS = ["*"]
    with stripe_env.webhooks_to(f"{live_server.url}/api/webhooks/stripe/"):
        yield live_server.url


COUNT_CHALLENGES = """
new MutationObserver((changes) => changes.forEach((change) => change.addedNodes.forEach((node) => {
  if (node.getAttribute && node.getAttribute("role") === "dialog") window.__challengeShown();
}))).observe(document.documentElement || document, {childList: true, subtree: true});
"""


class Steps:
    """A page plus numbered screenshots; failures say which step and what was on screen."""

    def __init__(self, page, base: str, name: str):
        self.page, self.base, self.name, self.count = page, base, name, 0
        # Every 3-D Secure dialog any page showed, counted in the browser across navigations.
        self.challenges: list[int] = []
        page.expose_function("__challengeShown", lambda: self.challenges.append(1))
        page.add_init_script(COUNT_CHALLENGES)

    def shot(self, label: str) -> None:
        self.count += 1
        self.page.screenshot(path=str(SHOTS / f"{self.name}-{self.count:02d}-{label}.png"), full_page=True)

    def login(self, username: str) -> None:
        self.page.goto(f"{self.base}/accounts/login/")
        self.page.fill("#id_username", username)
        self.page.fill("#id_password", PASSWORD)
        self.page.click("input[type=submit]")
        self.page.wait_for_url(f"{self.base}/")

    def book(self, title: str, seats: int = 1) -> None:
        self.page.goto(f"{self.base}/")
        self.page.click(f"text={title}")
        self.page.fill("#id_quantity", str(seats))
        self.shot("event")
        self.page.click("input[type=submit]")
        self.page.wait_for_url("**/pay/")
        self.page.wait_for_selector("#card-element input[placeholder=number]")
        self.shot("checkout")

    def pay(self, number: str, *, save_card: bool = False) -> None:
        if save_card:
            self.page.check("#save-card")
        for placeholder, value in (
            ("number", number),
            ("exp_month", "12"),
            ("exp_year", "34"),
            ("cvc", "123"),
            ("postal_code", "10001"),
        ):
            self.page.fill(f"#card-element input[placeholder={placeholder}]", value)
        self.page.click("#pay-button")

    def authenticate(self, *, succeed: bool = True) -> None:
        """Answer the emulator's 3-D Secure dialog."""
        name = "Complete authentication" if succeed else "Fail authentication"
        button = self.page.get_by_role("button", name=name)
        button.wait_for(timeout=10_000)
        self.shot("3ds")
        button.click()
        button.wait_for(state="detached")

    def expect_confirmed(self) -> None:
        self.page.wait_for_url("**/result/", timeout=20_000)
        self.page.wait_for_selector("#result[data-status=confirmed]", timeout=30_000)
        self.shot("confirmed")


@pytest.fixture
def steps(browser, site, request):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: console.append(f"page error: {error}"))
    steps = Steps(page, site, request.node.name.removeprefix("test_"))
    yield steps
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        steps.shot("failure")
    print("\n".join(["browser console:", *console]))
    context.close()


@pytest.fixture
def booker():
    user = UserFactory(username="booker", email="booker@example.com")
    EventFactory(title="Jazz Night", price=2500)
    EventFactory(title="Pottery Class", price=4000)
    EventFactory(title="Trail Run", price=1500)
    return user


def test_pay_with_a_card_and_see_the_booking_confirmed(steps, booker):
    steps.login("booker")
    steps.shot("events")
    steps.book("Jazz Night", seats=2)
    assert steps.page.inner_text("#total") == "51.50 USD"
    steps.pay("4242424242424242")
    steps.expect_confirmed()
    booking = Booking.objects.get(user=booker)
    assert booking.status == "confirmed"
    assert Payment.objects.get(object_id=str(booking.pk)).card_last4 == "4242"


def test_three_d_secure_asks_once_and_saves_no_card(steps, booker, stripe_env):
    steps.login("booker")
    steps.book("Pottery Class")
    steps.pay("4000002500003155")
    steps.authenticate()
    steps.expect_confirmed()
    assert len(steps.challenges) == 1  # no second challenge, on this page or the next
    assert Booking.objects.get(user=booker).status == "confirmed"
    assert stripe_env.calls("POST", "/v1/setup_intents") == []
    confirms = stripe_env.calls("POST", "/v1/payment_intents/")
    assert [
        c.path.rsplit("/", 1)[-1] for c in confirms if c.path.endswith(("/confirm", "/_authenticate"))
    ] == [
        "confirm",
        "_authenticate",
    ]
    assert stripe_env.calls("POST", "/v1/payment_intents") and not any(
        "setup_future_usage" in c.params for c in stripe_env.calls("POST", "/v1/payment_intents")
    )


def test_save_this_card_keeps_it_for_next_time(steps, booker, stripe_env):
    steps.login("booker")
    steps.book("Trail Run")
    steps.pay("4242424242424242", save_card=True)
    steps.expect_confirmed()
    assert stripe_env.calls("POST", "/v1/setup_intents") == []
    customer = Payment.objects.get(owner=booker).stripe_customer_id
    saved = stripe_env.api("GET", "/v1/payment_methods", customer=customer, type="card")["data"]
    assert [m["card"]["last4"] for m in saved] == ["4242"]


def test_failed_three_d_secure_then_another_card(steps, booker):
    steps.login("booker")
    steps.book("Pottery Class")
    steps.pay("4000002500003155")
    steps.authenticate(succeed=False)
    error = steps.page.wait_for_selector("#payment-error:not([hidden])")
    assert error.inner_text() == (
        "Your bank could not authenticate this payment, so nothing was charged. "
        "Try again, or use another card."
    )
    steps.shot("authentication-failed")
    steps.pay("4242424242424242")
    steps.expect_confirmed()
    assert len(steps.challenges) == 1  # the new card needed none


def test_declined_card_then_another_card(steps, booker):
    steps.login("booker")
    steps.book("Trail Run")
    steps.pay("4000000000009995")
    error = steps.page.wait_for_selector("#payment-error:not([hidden])")
    assert "insufficient funds" in error.inner_text().lower()
    assert error.inner_text().endswith(". Please try another card.")
    assert ".." not in error.inner_text()
    steps.shot("declined")
    steps.pay("4242424242424242")
    steps.expect_confirmed()
    booking = Booking.objects.get(user=booker)
    attempts = Payment.objects.filter(object_id=str(booking.pk)).order_by("attempt")
    assert [p.status for p in attempts] == ["canceled", "succeeded"]
    assert attempts[0].last_error_decline_code == "insufficient_funds"


def test_a_busy_service_says_the_card_was_not_charged(steps, booker, stripe_env):
    steps.login("booker")
    steps.book("Jazz Night")
    stripe_env.fail("POST", "/v1/payment_intents", status=503, times=10)  # every try of one click
    steps.pay("4242424242424242")
    error = steps.page.wait_for_selector("#payment-error:not([hidden])")
    assert error.inner_text() == (
        "The payment service is busy right now and your card was not charged. Please try again in a moment."
    )
    steps.shot("busy")
    stripe_env.faults.clear()
    steps.page.click("#pay-button")
    steps.expect_confirmed()
    assert Booking.objects.get(user=booker).status == "confirmed"


def test_buy_credits_and_see_them_in_the_wallet(steps, booker):
    from credits.models import CreditPackage

    CreditPackage.objects.create(name="Basic: 100 credits", credits=100, price=1000, sort_order=1)
    steps.login("booker")
    steps.page.goto(f"{steps.base}/credits/")
    steps.shot("wallet-empty")
    steps.page.click("text=Buy for 10.00 USD")
    steps.page.wait_for_url("**/pay/")
    steps.page.wait_for_selector("#card-element input[placeholder=number]")
    assert steps.page.inner_text("#pay-button") == "Pay 10.00 USD"
    steps.shot("checkout")
    steps.pay("4242424242424242")
    steps.page.wait_for_url("**/result/", timeout=20_000)
    steps.page.wait_for_selector("#result[data-status=paid]", timeout=30_000)
    steps.shot("paid")
    steps.page.goto(f"{steps.base}/credits/")
    assert steps.page.inner_text("#balance") == "100 credits"
    steps.shot("wallet")


def test_cancel_and_see_the_refund(steps, booker):
    steps.login("booker")
    steps.book("Jazz Night")
    steps.pay("4242424242424242")
    steps.expect_confirmed()
    steps.page.goto(f"{steps.base}/my-bookings/")
    steps.shot("my-bookings")
    steps.page.click("text=Cancel and refund")
    steps.page.wait_for_selector("text=is cancelled")
    row = steps.page.locator("tr", has_text="Jazz Night")
    assert "Cancelled" in row.inner_text() and "25.75 USD" in row.locator(".refunded").inner_text()
    steps.shot("refunded")
    assert Payment.objects.get(owner=booker).status == "refunded"


def test_phone_sized_checkout(browser, site, booker):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    steps = Steps(page, site, "phone")
    steps.login("booker")
    steps.book("Jazz Night")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the checkout page is {width}px wide on a 390px screen"
    context.close()


def teardown_module(module):
    # Keep only the screenshots of this run for CI to collect.
    if not SHOTS.exists():
        return
    for path in SHOTS.iterdir():
        if path.is_dir():
            shutil.rmtree(path)


def test_api_docs_render_with_nothing_beyond_loopback(browser, live_server, settings):
    """Swagger UI and ReDoc come from the installed sidecar package: offline they still render,
    and no request leaves the machine (issue 16)."""
    from urllib.parse import urlsplit

    settings.ALLOWED_HOSTS = ["*"]
    context = browser.new_context()
    page = context.new_page()
    outside: list[str] = []
    errors: list[str] = []

    def only_loopback(route):
        if urlsplit(route.request.url).hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_loopback)
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto(f"{live_server.url}/api/docs/")
    page.wait_for_selector(".swagger-ui .info .title", timeout=15000)
    assert "Bookings and payments API" in page.inner_text(".swagger-ui .info .title")
    page.wait_for_selector(".opblock-tag", timeout=15000)  # the operations, read from the schema
    page.screenshot(path=str(SHOTS / "docs-01-swagger-ui.png"))
    page.goto(f"{live_server.url}/api/redoc/")
    page.wait_for_selector("h1:has-text('Bookings and payments API')", timeout=15000)
    page.screenshot(path=str(SHOTS / "docs-02-redoc.png"))
    context.close()
    assert outside == [], outside
    # ReDoc always tries its maker's logo from their CDN; the site's policy blocks it (so it
    # never leaves the machine) and ReDoc then hides it. Any other error fails.
    assert [e for e in errors if "cdn.redoc.ly/redoc/logo-mini.svg" not in e] == [], errors


def test_the_staff_dashboard(steps):
    from django.contrib.auth.models import Permission

    from tests.test_dashboard import seed

    seed()
    staff = UserFactory(username="staffer", is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(codename__in=["view_payment", "view_webhookevent"]))
    steps.page.goto(f"{steps.base}/admin/login/")
    steps.page.fill("#id_username", "staffer")
    steps.page.fill("#id_password", PASSWORD)
    steps.page.click("input[type=submit]")
    steps.page.goto(f"{steps.base}/admin/payments/payment/")
    steps.page.click("text=Dashboard")
    steps.page.wait_for_selector("svg.dashboard-chart")
    assert steps.page.locator("svg.dashboard-chart").count() == 4
    steps.shot("dashboard")
    steps.page.click("text=1 webhook event failed")
    steps.page.wait_for_url("**/webhookevent/?status__exact=failed")
    steps.shot("failed-events")
