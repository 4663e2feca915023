"""A minimal SMTP server that keeps what it receives: the outbound relay host in the tests."""

from __future__ import annotations

import socketserver
import threading
import time


class SmtpSink:
    """A minimal SMTP server that keeps what it receives: the outbound relay host in tests.

    `data_reply` is what it answers to the end of DATA (a test sets it to a refusal to check
    that mailfront passes the relay's verdict through). Thread-based; one per test session.
    """

    def __init__(self):
        self.messages: list[dict] = []
        self.data_reply = b"250 2.0.0 queued\r\n"
        self.peers: list[str] = []
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                sink.peers.append(self.client_address[0])
                w = self.wfile.write
                w(b"220 sink.lab ESMTP\r\n")
                mail_from, rcpts = None, []
                while True:
                    line = self.rfile.readline(4096)
                    if not line:
                        return
                    verb = line[:4].upper()
                    if verb in (b"EHLO", b"HELO"):
                        w(b"250-sink.lab\r\n250-8BITMIME\r\n250 SIZE 100000000\r\n")
                    elif verb == b"MAIL":
                        # The path only; parameters (SIZE=, BODY=) are not kept.
                        path = line.split(b":", 1)[1].strip().decode()
                        mail_from, rcpts = path.split(">", 1)[0] + ">", []
                        w(b"250 2.1.0 ok\r\n")
                    elif verb == b"RCPT":
                        rcpts.append(line.split(b":", 1)[1].strip().decode())
                        w(b"250 2.1.5 ok\r\n")
                    elif verb == b"DATA":
                        w(b"354 go\r\n")
                        data = b""
                        while True:
                            chunk = self.rfile.readline(1 << 20)
                            if not chunk or chunk == b".\r\n":
                                break
                            data += chunk
                        reply = sink.data_reply
                        if reply.startswith(b"2"):
                            sink.messages.append({"from": mail_from, "to": rcpts, "data": data})
                        w(reply)
                    elif verb == b"QUIT":
                        w(b"221 bye\r\n")
                        return
                    else:
                        w(b"250 ok\r\n")

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, predicate, timeout: float = 15.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in list(self.messages):
                if predicate(message):
                    return message
            time.sleep(0.05)
        raise AssertionError(f"the relay never received the message; it has {len(self.messages)}")

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
