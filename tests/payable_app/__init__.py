"""A test-only app with a second payable model, proving payments knows nothing of bookings."""
