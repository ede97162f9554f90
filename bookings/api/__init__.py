"""The booking API: events, bookings, and the payment endpoints nested under a booking."""
