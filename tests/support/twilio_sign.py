"""Signs test webhooks with the official Twilio helper library (pip install twilio).

Reads one JSON object a line: {"token": ..., "url": ..., "params": {name: value}};
writes the X-Twilio-Signature for it, one a line.
"""
import json
import sys

from twilio.request_validator import RequestValidator

for line in sys.stdin:
    request = json.loads(line)
    validator = RequestValidator(request["token"])
    print(validator.compute_signature(request["url"], request["params"]), flush=True)
