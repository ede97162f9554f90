"""A reusable Django app that takes Stripe payments for any payable model."""

__version__ = "0.5.0"
