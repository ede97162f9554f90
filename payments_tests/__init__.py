"""The payments app's own tests: a minimal project (settings, urls, a donation to pay for) that
needs nothing of the booking site. ./scripts/test-payments runs them against the built wheel,
alone in a fresh virtualenv."""
