"""Load for `bench/callgrind/run.sh`: a fake Graph API, signed payment
webhooks and invite clicks, all sequential enough to be repeatable.

  drive.py paid PORT GRAPH_PORT N RUN [CALLGRIND_PID]
      N paid orders through POST /webhooks/payment (4 client threads) until
      the fake has both messages of each; instrumentation on only for them.
  drive.py clicks PORT TOKENS_FILE WARM N [CALLGRIND_PID]
      WARM clicks (tokens read into memory), then N measured clicks.
  drive.py ceiling PORT N [CALLGRIND_PID]
      N GET /r on the constant-302 server.
"""
import base64, hashlib, hmac, http.client, http.server, json, socketserver
import subprocess, sys, threading, time, uuid

SECRET = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")  # bench/src/events.rs
UA = "Mozilla/5.0 (Linux; Android 14) Chrome/120 Mobile Safari/537.36"


def wait_up(port, path):
    deadline = time.time() + 300
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port)
            c.request("GET", path)
            c.getresponse().read()
            return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


def instrument(pid, on):
    if pid:
        subprocess.run(["callgrind_control", "-i", "on" if on else "off", pid], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        if not on:
            subprocess.run(["callgrind_control", "-d", pid], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)


def fake_graph(port, count, lock):
    class Graph(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            sent = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            body = json.dumps({"messaging_product": "whatsapp",
                               "contacts": [{"input": sent.get("to"), "wa_id": sent.get("to")}],
                               "messages": [{"id": "wamid." + uuid.uuid4().hex}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            with lock:
                count[0] += 1

        def log_message(self, *args):
            pass

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True

    server = Server(("127.0.0.1", port), Graph)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def pay(conn, run, i):
    event, msg, ts = f"evt_{run}_{i:06}", f"msg_{run}_{i:06}", str(int(time.time()))
    body = json.dumps({"id": event, "type": "payment_succeeded", "created_at": "2026-11-26T10:00:00Z",
                       "data": {"order_id": f"ORD-{run}-{i:06}", "payment_id": "pay_" + event,
                                "user_id": "user_77", "amount": 49900, "currency": "INR",
                                "customer_phone": "+91 98765 43210", "note": "Arrives by Friday"}})
    sig = base64.b64encode(hmac.new(SECRET, f"{msg}.{ts}.{body}".encode(), hashlib.sha256).digest()).decode()
    conn.request("POST", "/webhooks/payment", body=body, headers={
        "Content-Type": "application/json", "webhook-id": msg, "webhook-timestamp": ts,
        "webhook-signature": "v1," + sig})
    answer = conn.getresponse()
    text = answer.read()
    if answer.status != 200:
        sys.exit(f"webhook {i}: HTTP {answer.status} {text[:200]!r}")
    return json.loads(text)


def paid(port, graph_port, n, run, pid=None):
    count, lock = [0], threading.Lock()
    fake_graph(graph_port, count, lock)
    wait_up(port, "/healthz")
    warm = 20
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for i in range(warm):
        pay(conn, run, i)
    while count[0] < 2 * warm:
        time.sleep(0.02)
    instrument(pid, True)

    def client(k):
        c = http.client.HTTPConnection("127.0.0.1", port)
        for i in range(warm + k, warm + n, 4):
            pay(c, run, i)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    while count[0] < 2 * (warm + n):
        time.sleep(0.02)
    instrument(pid, False)


def clicks(port, tokens_file, warm, n, pid=None):
    tokens = [line.strip() for line in open(tokens_file) if line.strip()]
    wait_up(port, "/healthz")
    conn = http.client.HTTPConnection("127.0.0.1", port)

    def click(i):
        conn.request("GET", "/w/invite/" + tokens[i % len(tokens)], headers={"User-Agent": UA})
        answer = conn.getresponse()
        answer.read()
        if answer.status != 302:
            sys.exit(f"click {i}: HTTP {answer.status}")

    for i in range(warm):
        click(i)
    instrument(pid, True)
    for i in range(n):
        click(i)
    instrument(pid, False)


def ceiling(port, n, pid=None):
    wait_up(port, "/hello")
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for _ in range(200):
        conn.request("GET", "/r")
        conn.getresponse().read()
    instrument(pid, True)
    for _ in range(n):
        conn.request("GET", "/r")
        conn.getresponse().read()
    instrument(pid, False)


if __name__ == "__main__":
    what, args = sys.argv[1], sys.argv[2:]
    if what == "paid":
        paid(int(args[0]), int(args[1]), int(args[2]), args[3], *args[4:5])
    elif what == "clicks":
        clicks(int(args[0]), args[1], int(args[2]), int(args[3]), *args[4:5])
    elif what == "ceiling":
        ceiling(int(args[0]), int(args[1]), *args[2:3])
    else:
        sys.exit(__doc__)
