#!/usr/bin/env python3
"""The floor peer for bench/run.sh: Python's http.server with a streaming PUT handler (no fsync)."""
import http.server
import os
import sys


class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_PUT(self):
        rel = self.path.split("?", 1)[0].lstrip("/")
        if ".." in rel.split("/"):
            self.send_error(400)
            return
        target = os.path.join(self.directory, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        left = int(self.headers.get("Content-Length", "0"))
        tmp = target + ".part"
        with open(tmp, "wb") as f:
            while left > 0:
                chunk = self.rfile.read(min(left, 1 << 20))
                if not chunk:
                    break
                f.write(chunk)
                left -= len(chunk)
        os.rename(tmp, target)
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()


if __name__ == "__main__":
    port, root = int(sys.argv[1]), sys.argv[2]
    handler = lambda *a, **kw: Handler(*a, directory=root, **kw)
    http.server.ThreadingHTTPServer.daemon_threads = True
    http.server.ThreadingHTTPServer(("127.0.0.1", port), handler).serve_forever()
