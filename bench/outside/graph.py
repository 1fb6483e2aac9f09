"""A fake Graph API for bench/outside/run.sh, written apart from the Rust
bench's (bench/src/fake_graph.rs) so that the two benches share no code on
the path they measure.

  graph.py PORT COUNT_FILE

Answers every POST .../messages at once (0 ms) as Meta does, with a new
wamid, on keep-alive connections. Every 0.2 s it writes to COUNT_FILE the
messages accepted and how many of them repeated an earlier one (same
recipient, type and biz_opaque_callback_data), as "accepted duplicates".
asyncio, not http.server: the senders must never wait on the fake.
"""
import asyncio, json, os, sys

accepted = 0
duplicates = 0
seen = set()


class Graph(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""

    def data_received(self, data):
        global accepted, duplicates
        self.buf += data
        while True:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buf[:head_end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if len(self.buf) < head_end + 4 + length:
                return
            body = self.buf[head_end + 4:head_end + 4 + length]
            self.buf = self.buf[head_end + 4 + length:]
            sent = json.loads(body)
            key = (sent.get("to"), sent.get("type"), sent.get("biz_opaque_callback_data"))
            if key in seen:
                duplicates += 1
            seen.add(key)
            accepted += 1
            answer = json.dumps({"messaging_product": "whatsapp",
                                 "contacts": [{"input": sent.get("to"), "wa_id": sent.get("to")}],
                                 "messages": [{"id": f"wamid.outside{accepted}"}]}).encode()
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer))


async def main(port, count_file):
    loop = asyncio.get_running_loop()
    await loop.create_server(Graph, "127.0.0.1", port)
    while True:
        with open(count_file + ".tmp", "w") as f:
            f.write(f"{accepted} {duplicates}\n")
        os.replace(count_file + ".tmp", count_file)
        await asyncio.sleep(0.2)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
