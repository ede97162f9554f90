"""The booking site: events, bookings, and their payments through the payments app."""
