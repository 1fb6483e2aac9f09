"""Signed payment webhooks for bench/outside/run.sh, one per line for wrk's
Lua (webhook-id, webhook-timestamp, webhook-signature and body, tab apart).
Signed here with Python's hmac, apart from the product's and the Rust
bench's signing code.

  events.py RUN N > FILE

The body is SPEC §4's example with the order, event and payment ids made
unique per RUN and line; the secret is the one run.sh gives the server.
"""
import base64, hashlib, hmac, json, sys, time

SECRET = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")  # run.sh's PAYMENT_WEBHOOK_SECRET


def main(run, n):
    ts = str(int(time.time()))
    out = sys.stdout
    for i in range(n):
        event, msg = f"evt_{run}_{i:06}", f"msg_{run}_{i:06}"
        body = json.dumps({"id": event, "type": "payment_succeeded", "created_at": "2026-11-26T10:00:00Z",
                           "data": {"order_id": f"ORD-{run}-{i:06}", "payment_id": "pay_" + event,
                                    "user_id": "user_77", "amount": 49900, "currency": "INR",
                                    "customer_phone": "+91 98765 43210", "note": "Arrives by Friday"}},
                          separators=(",", ":"))
        sig = base64.b64encode(hmac.new(SECRET, f"{msg}.{ts}.{body}".encode(), hashlib.sha256).digest()).decode()
        out.write(f"{msg}\t{ts}\tv1,{sig}\t{body}\n")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
