"""A Stripe emulator for development and tests: localstripe behind an adapting, recording proxy."""
