"""A plain-netns "task" for the data-plane tests: run inside the task's namespace as
`python3 taskserver.py NAME PORT`. HTTP/1.1 (keep-alive) on PORT: GET answers NAME,
GET /bytes/N answers N bytes, POST /echo answers its body; UDP on PORT echoes datagrams. Prints "ready" once bound."""
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME, PORT = sys.argv[1], int(sys.argv[2])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go as two writes; no 40 ms delayed-ACK stall

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.startswith("/bytes/"):
            size = int(self.path.rsplit("/", 1)[1])
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            chunk = bytes(65536)
            while size > 0:
                self.wfile.write(chunk[:size])
                size -= len(chunk)
            return
        self._send(NAME.encode())

    def do_POST(self):
        self._send(self.rfile.read(int(self.headers.get("Content-Length", 0))))

    def log_message(self, *args):
        pass


def udp_echo() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", PORT))
    while True:
        data, peer = sock.recvfrom(65535)
        sock.sendto(data, peer)


ThreadingHTTPServer.daemon_threads = True
server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
threading.Thread(target=udp_echo, daemon=True).start()
print("ready", flush=True)
server.serve_forever()
