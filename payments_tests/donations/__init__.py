"""A donation: a payable that is not a booking (the payments app's test payable)."""
