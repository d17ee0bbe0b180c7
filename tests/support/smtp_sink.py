"""A real SMTP server for the tests (aiosmtpd): every message it accepts is written to
DIR as NNNNN.json (envelope, headers, decoded text body), so that a test can read what
arrived, headers included.

    python3 smtp_sink.py PORT DIR [--refuse-file PATH] [--slow-data SECONDS]

--refuse-file: while PATH exists, every recipient is refused with a temporary error
(451), as a server that is overloaded or greylisting does.
--slow-data: after a message is written, wait before answering 250 (to kill the sender
between the server's acceptance and its own record of it).

Prints "ready PORT" once listening; runs until stdin is closed.
"""

import asyncio
import email
import email.policy
import json
import os
import sys

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, directory, refuse_file, slow_data):
        self.directory = directory
        self.refuse_file = refuse_file
        self.slow_data = slow_data
        self.count = len([n for n in os.listdir(directory) if n.endswith(".json")])

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.refuse_file and os.path.exists(self.refuse_file):
            return "451 4.3.0 Not now, please try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        part = msg.get_body(preferencelist=("plain",)) if msg.is_multipart() else msg
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "headers": {k: str(v) for k, v in msg.items()},
            "body": part.get_content(),
        }
        self.count += 1
        path = os.path.join(self.directory, "%05d.json" % self.count)
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.rename(path + ".tmp", path)
        if self.slow_data:
            await asyncio.sleep(self.slow_data)
        return "250 Message accepted for delivery"


def main():
    args = sys.argv[1:]
    port, directory = int(args[0]), args[1]
    refuse_file = None
    slow_data = 0.0
    rest = args[2:]
    while rest:
        flag = rest.pop(0)
        if flag == "--refuse-file":
            refuse_file = rest.pop(0)
        elif flag == "--slow-data":
            slow_data = float(rest.pop(0))
        else:
            raise SystemExit("unknown option " + flag)
    os.makedirs(directory, exist_ok=True)
    controller = Controller(
        Sink(directory, refuse_file, slow_data), hostname="127.0.0.1", port=port
    )
    controller.start()
    print("ready", port, flush=True)
    try:
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
