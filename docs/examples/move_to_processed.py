#!/usr/bin/env python3
"""An sftpd upload hook: move a file uploaded to /incoming into /processed beside it.

sftpd runs it with the event as JSON on stdin (and as SFTPD_EVENT_* variables) after the
client's CLOSE, so the file is complete. The move stays inside the same home or folder, so
the user's usage does not change.
"""

import json
import os
import sys

event = json.load(sys.stdin)
source = event["local_path"]  # the server path of /incoming/NAME
incoming = os.path.dirname(source)
processed = os.path.join(os.path.dirname(incoming), "processed")
os.makedirs(processed, exist_ok=True)
os.replace(source, os.path.join(processed, os.path.basename(source)))
print(f"moved {event['path']} ({event['size']} bytes from {event['user']}) to /processed")
