"""The credits API: packages, purchases (paid like bookings), the wallet and spending."""
