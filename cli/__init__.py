"""xfer, the command-line client (a later issue)."""
