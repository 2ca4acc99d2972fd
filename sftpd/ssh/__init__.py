"""Everything that speaks SSH: the connection (admission, limits, idle timer), its
channels (SFTP, SCP, exec), the SFTP adapter, the algorithms offered, and the one
module that touches asyncssh internals (``compat``).

Nothing here holds policy: requests become calls on a ``core.session.Session``.
"""
