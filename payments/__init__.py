"""A reusable Django app that takes Stripe payments for any payable model."""
