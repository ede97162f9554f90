"""Credit packages bought through the payments app, and a wallet of credits kept as a ledger."""
