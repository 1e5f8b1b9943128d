#!/usr/bin/env python3
"""Drives tuspy, a real tus 1.0 client, for tests/tus.rs. Prints one JSON object on stdout.

  upload  ENDPOINT FILE CHUNK [--cut BYTES] [--type T]
      Create an upload at the signed ENDPOINT and send FILE in CHUNK-byte PATCHes. With --cut,
      the client talks through a loopback proxy that drops the connection (both directions)
      once BYTES have gone up it, once; tuspy's own retry then asks the server for its offset
      and resumes. Reports the upload URL, the cuts, and the offset the resume started from.
  partial ENDPOINT FILE CHUNK STOP_AT
      Create an upload and send FILE up to STOP_AT, then stop. Reports the upload URL.
  resume  URL FILE CHUNK
      Resume the upload at URL from the offset the server reports, to the end.
"""

import json
import socket
import sys
import threading
from urllib.parse import urlsplit, urlunsplit

from tusclient import client
from tusclient.uploader import Uploader


class CuttingProxy:
    """Forwards loopback TCP to the server; drops the first connection that carries more
    than `cut` bytes upstream once it reached that point."""

    def __init__(self, upstream, cut):
        self.upstream = upstream
        self.cut = cut
        self.cuts = 0
        self.sent = 0
        self.lock = threading.Lock()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            down, _ = self.listener.accept()
            up = socket.create_connection(self.upstream)
            threading.Thread(target=self.pump, args=(down, up, True), daemon=True).start()
            threading.Thread(target=self.pump, args=(up, down, False), daemon=True).start()

    def pump(self, src, dst, upstream):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if upstream:
                    with self.lock:
                        if self.cuts == 0 and self.sent + len(data) >= self.cut:
                            # Deliver exactly up to the cut, then the network "switches".
                            dst.sendall(data[: self.cut - self.sent])
                            self.sent = self.cut
                            self.cuts += 1
                            for s in (src, dst):
                                try:
                                    s.shutdown(socket.SHUT_RDWR)
                                except OSError:
                                    pass
                                s.close()
                            return
                        self.sent += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_WR if s is dst else socket.SHUT_RD)
                except OSError:
                    pass


class Recorder(Uploader):
    """tuspy's Uploader, noting the offsets it resumes from."""

    resumed_from = []

    def get_offset(self):
        offset = super().get_offset()
        Recorder.resumed_from.append(offset)
        return offset


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    ctype = None
    if "--type" in args:
        i = args.index("--type")
        ctype = args[i + 1]
        del args[i : i + 2]
    cut = None
    if "--cut" in args:
        i = args.index("--cut")
        cut = int(args[i + 1])
        del args[i : i + 2]
    metadata = {"filename": args[1].rsplit("/", 1)[-1]}
    if ctype:
        metadata["filetype"] = ctype
    out = {}
    if mode in ("upload", "partial"):
        endpoint, path, chunk = args[0], args[1], int(args[2])
        proxy = None
        if cut is not None:
            parts = urlsplit(endpoint)
            proxy = CuttingProxy((parts.hostname, parts.port), cut)
            endpoint = urlunsplit(parts._replace(netloc=f"127.0.0.1:{proxy.port}"))
        c = client.TusClient(endpoint)
        up = Recorder(path, client=c, chunk_size=chunk, metadata=metadata, retries=5, retry_delay=1)
        if mode == "partial":
            up.upload(stop_at=int(args[3]))
        else:
            up.upload()
        out = {"url": up.url, "offset": up.offset, "resumed_from": Recorder.resumed_from}
        if proxy:
            out["cuts"] = proxy.cuts
    elif mode == "resume":
        url, path, chunk = args[0], args[1], int(args[2])
        base = urlunsplit(urlsplit(url)._replace(path="/", query=""))
        c = client.TusClient(base)
        # After a server crash the killed PATCH's lock may still hold (up to its 30 s lease in a
        # shared store): retry long enough to outlast it, as a phone app would.
        up = Recorder(path, client=c, url=url, chunk_size=chunk, metadata=metadata, retries=15, retry_delay=3)
        started = up.offset
        up.upload()
        out = {"url": up.url, "started_at": started, "offset": up.offset}
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
