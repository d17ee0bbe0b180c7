"""Load-balancer smoke test driver (run by tests/support/lb_smoke.sh).

Places whole calls through nginx as Twilio would: every webhook signed by the official
Twilio library (pip install twilio), the TwiML followed (Gather -> its action with Digits,
Redirect -> its URL) until a Dial, Enqueue, Record or Hangup. Halfway through it kills one
`ivr serve` instance with SIGKILL while calls are under way: nginx must carry the rest to
the other instance. Then it checks the records in PostgreSQL with psql.

The instance answers in milliseconds, so a bare SIGKILL seldom finds a request in flight
and only tests that nginx avoids a dead instance. It is first frozen (SIGSTOP) until
requests sent to it are waiting, then killed: those requests were sent and may have been
recorded, so only `proxy_next_upstream ... non_idempotent` and the server's replay of
recorded webhooks let them succeed on the other instance.
"""
import argparse
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor

from twilio.request_validator import RequestValidator

GUEST_CARE = "+18007373233"
# Guest Care: 1 orders, 4 a concern already raised, 2 escalate it -> transfer to OOM
# (tests/guest_care_line.rs, option_1_is_the_shared_not_delivered_menu).
SCRIPT = ["1", "4", "2"]
END_VERBS = ("Dial", "Enqueue", "Record", "Hangup", "Reject")
MAX_WEBHOOKS_PER_CALL = 12
HTTP_TIMEOUT = 15  # Twilio gives up after 15 s.


def parse_twiml(body):
    """The <Response> element of a TwiML answer; raises ValueError if it is not one."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as e:
        raise ValueError(f"malformed XML ({e}): {body[:200]!r}") from None
    if root.tag != "Response":
        raise ValueError(f"root is <{root.tag}>, not <Response>: {body[:200]!r}")
    return root


def next_move(root, script):
    """What the caller does next: ("post", url, extra params) or ("end", verb).

    Verbs run in document order; the first Gather, Redirect or ending verb decides.
    `script` is consumed one digit per menu; past it, the first option the menu says.
    """
    for verb in root:
        if verb.tag == "Gather":
            if script:
                digits = script.pop(0)
            else:
                said = " ".join(s.text or "" for s in verb.iter("Say"))
                found = re.search(r"press (\d)", said)
                digits = found.group(1) if found else "1"
            return ("post", verb.get("action", ""), {"Digits": digits})
        if verb.tag == "Redirect":
            return ("post", (verb.text or "").strip(), {})
        if verb.tag in END_VERBS:
            return ("end", verb.tag)
    return ("end", "none")


class Driver:
    def __init__(self, args):
        self.base = args.base.rstrip("/")
        self.validator = RequestValidator(args.token)
        self.lock = threading.Lock()
        self.errors = []
        self.answered = 0  # webhooks answered 200 with valid TwiML
        self.ends = {}  # verb a call ended at -> number of calls
        self.inflight = {}  # request number -> when it was sent
        self.sent = 0

    def error(self, what):
        with self.lock:
            self.errors.append(what)
        print(f"lb-smoke: ERROR {what}", file=sys.stderr, flush=True)

    def post(self, url, params):
        """POSTs a signed webhook; (status, content type, body), status 0 on no answer."""
        signature = self.validator.compute_signature(url, params)
        req = urllib.request.Request(
            url,
            data=urllib.parse.urlencode(params).encode(),
            headers={
                "X-Twilio-Signature": signature,
                "Content-Type": "application/x-www-form-urlencoded",
            },
            method="POST",
        )
        with self.lock:
            self.sent += 1
            n = self.sent
            self.inflight[n] = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as res:
                return res.status, res.headers.get("Content-Type", ""), res.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Content-Type", ""), e.read().decode(errors="replace")
        except OSError as e:
            return 0, "", str(e)
        finally:
            with self.lock:
                del self.inflight[n]

    def held(self, longer_than):
        """Requests waiting for longer than `longer_than` seconds."""
        now = time.monotonic()
        with self.lock:
            return sum(1 for t in self.inflight.values() if now - t > longer_than)


class Call:
    def __init__(self, driver, n, think):
        self.driver = driver
        self.sid = "CA" + "%032x" % random.getrandbits(128)
        self.caller = "+1204555%04d" % n
        self.think = think
        self.answers = 0
        self.done = False

    def params(self, status, extra):
        p = {
            "CallSid": self.sid,
            "AccountSid": "AC" + "0" * 32,
            "From": self.caller,
            "To": GUEST_CARE,
            "Caller": self.caller,
            "Called": GUEST_CARE,
            "CallStatus": status,
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
        }
        p.update(extra)
        return p

    def run(self):
        d = self.driver
        script = list(SCRIPT)
        url, extra, status = d.base + "/voice/incoming", {}, "ringing"
        try:
            for _ in range(MAX_WEBHOOKS_PER_CALL):
                url = urllib.parse.urljoin(d.base + "/", url)
                code, ctype, body = d.post(url, self.params(status, extra))
                path = urllib.parse.urlsplit(url).path
                if code != 200:
                    d.error(f"{self.sid} {path}: HTTP {code or 'no answer'}: {body[:200]}")
                    return
                if not ctype.startswith("text/xml"):
                    d.error(f"{self.sid} {path}: content type {ctype!r}")
                    return
                try:
                    root = parse_twiml(body)
                except ValueError as e:
                    d.error(f"{self.sid} {path}: {e}")
                    return
                with d.lock:
                    d.answered += 1
                self.answers += 1
                move = next_move(root, script)
                if move[0] == "end":
                    with d.lock:
                        d.ends[move[1]] = d.ends.get(move[1], 0) + 1
                    return
                _, url, extra = move
                if not url:
                    d.error(f"{self.sid} {path}: a Gather or Redirect without a URL")
                    return
                status = "in-progress"
                time.sleep(self.think)  # the caller listens and presses a key
            d.error(f"{self.sid}: no end after {MAX_WEBHOOKS_PER_CALL} webhooks")
        finally:
            self.done = True


def alive(pid):
    """Whether the process runs (a zombie, killed but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as res:
            return res.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def wait_ready(instances, timeout):
    """Waits for every instance's /readyz (they migrate the empty database first)."""
    deadline = time.monotonic() + timeout
    for name, pid, url in instances:
        while get(url + "/readyz") != 200:
            if not alive(pid):
                sys.exit(f"lb-smoke: instance {name} exited during start-up (see its log)")
            if time.monotonic() > deadline:
                sys.exit(f"lb-smoke: instance {name} not ready after {timeout} s")
            time.sleep(0.2)


def psql(database_url, sql):
    out = subprocess.run(
        ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", database_url, "-c", sql],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def check_records(args, driver, calls):
    """The database holds each call once, each step once, and every answered webhook."""
    problems = []
    db = args.database_url
    n_calls = int(psql(db, "SELECT count(*) FROM calls"))
    if n_calls != args.calls:
        problems.append(f"{n_calls} calls recorded, {args.calls} placed")
    dup = psql(
        db,
        "SELECT call_id, request_key, idx, count(*) FROM steps "
        "GROUP BY call_id, request_key, idx HAVING count(*) > 1",
    )
    if dup:
        problems.append(f"duplicate steps:\n{dup}")
    n_webhooks = int(psql(db, "SELECT count(*) FROM webhooks"))
    if n_webhooks != driver.answered:
        problems.append(f"{n_webhooks} webhooks recorded, {driver.answered} answered")
    empty = int(
        psql(db, "SELECT count(*) FROM calls c WHERE NOT EXISTS "
                 "(SELECT 1 FROM steps s WHERE s.call_id = c.id)")
    )
    if empty:
        problems.append(f"{empty} calls without a step")
    transferring = int(psql(db, "SELECT count(*) FROM calls WHERE outcome LIKE 'transferring:%'"))
    if transferring != driver.ends.get("Dial", 0):
        problems.append(
            f"{transferring} calls recorded as transferring, {driver.ends.get('Dial', 0)} ended at a Dial"
        )
    sids = {c.sid for c in calls}
    recorded = set(psql(db, "SELECT call_sid FROM calls").split())
    if sids != recorded:
        problems.append(f"calls missing: {sorted(sids - recorded)}; unknown: {sorted(recorded - sids)}")
    steps = int(psql(db, "SELECT count(*) FROM steps"))
    return steps, problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="nginx's URL, also IVR_PUBLIC_URL")
    ap.add_argument("--token", required=True, help="TWILIO_AUTH_TOKEN of the instances")
    ap.add_argument("--database-url", required=True)
    ap.add_argument("--instance", action="append", required=True, metavar="NAME=PID=URL",
                    help="an instance; the first one is killed")
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--stagger", type=float, default=0.1, help="seconds between call starts")
    ap.add_argument("--think", type=float, default=0.15, help="seconds between a caller's keys")
    ap.add_argument("--expect-end", default="Dial", help="the verb every call must end at")
    ap.add_argument("--ready-timeout", type=float, default=60)
    ap.add_argument("--nginx-log", help="nginx's access log, to count the retried requests")
    args = ap.parse_args()
    if args.calls < 2:
        sys.exit("lb-smoke: --calls must be at least 2")
    instances = []
    for spec in args.instance:
        name, pid, url = spec.split("=", 2)
        instances.append((name, int(pid), url.rstrip("/")))
    victim, survivors = instances[0], instances[1:]

    wait_ready(instances, args.ready_timeout)
    if get(args.base + "/voice/") == 0:
        sys.exit("lb-smoke: nginx does not answer at " + args.base)

    driver = Driver(args)
    calls = []
    killed_at = None
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        for i in range(args.calls):
            if i == args.calls // 2:
                # Kill while calls are mid-way: started, answered at least once, not done.
                deadline = time.monotonic() + 10
                while not any(c.answers and not c.done for c in calls):
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.01)
                mid = sum(1 for c in calls if c.answers and not c.done)
                # Frozen, it takes connections and requests but answers none; a request
                # waiting 0.3 s is one nginx sent to it.
                os.kill(victim[1], signal.SIGSTOP)
                deadline = time.monotonic() + 5
                while driver.held(0.3) == 0 and time.monotonic() < deadline:
                    time.sleep(0.02)
                held = driver.held(0.3)
                os.kill(victim[1], signal.SIGKILL)
                killed_at = i
                print(f"lb-smoke: SIGKILL to instance {victim[0]} after {i} calls started, "
                      f"{mid} mid-call, {held} unanswered request(s) sent to it", flush=True)
            call = Call(driver, i, args.think)
            calls.append(call)
            pool.submit(call.run)
            time.sleep(args.stagger)

    for _ in range(50):
        if not alive(victim[1]):
            break
        time.sleep(0.1)
    else:
        driver.error(f"instance {victim[0]} still alive after SIGKILL")
    for name, pid, url in survivors:
        if not alive(pid) or get(url + "/readyz") != 200:
            driver.error(f"instance {name} is not alive and ready at the end")
    wrong = {verb: n for verb, n in driver.ends.items() if verb != args.expect_end}
    if wrong:
        driver.error(f"calls ended elsewhere than at <{args.expect_end}>: {wrong}")

    if args.nginx_log:
        with open(args.nginx_log) as f:
            retried = sum(1 for line in f if "/voice/" in line and "upstream=" in line
                          and "," in line.split("upstream=", 1)[1])
        print(f"lb-smoke: {driver.answered} webhooks answered, {retried} of them retried "
              f"by nginx on another instance", flush=True)
    steps, problems = check_records(args, driver, calls)
    for p in problems:
        driver.error("records: " + p)
    print(f"lb-smoke: {args.calls} calls, {steps} steps, {len(driver.errors)} errors, "
          f"instance killed at call {killed_at}", flush=True)
    sys.exit(1 if driver.errors else 0)


if __name__ == "__main__":
    main()
