"""Protocol-neutral rules: confinement (jail), the user's file operations (session), errors.

Nothing here imports asyncssh. The package imports none of its modules itself: xfer needs
two of them (limits, certs) and should not pay for the session, the jail and the ledger
at every start.
"""
