"""A chaos run: the whole stack on loopback under injected faults, then invariants (python -m chaos)."""
