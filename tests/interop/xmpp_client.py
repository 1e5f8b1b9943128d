#!/usr/bin/env python3
"""A real XMPP client (slixmpp) for the interop tests in tests/xmpp_interop.rs.

It talks to a Prosody or ejabberd instance that the Rust test started on loopback, registers its
accounts in-band (XEP-0077), finds the upload service (XEP-0030 + XEP-0363) and prints one JSON
document on stdout for the Rust side to check. Two modes:

  exchange  alice uploads each file of the spec with slixmpp's own XEP-0363 upload (slot request,
            then HTTP PUT), sends the GET URL to bob in a message with an XEP-0066 OOB element, and
            bob downloads what he received.
  slots     alice only requests slots (for the negative cases the Rust test sends itself): their
            PUT and GET URLs and the headers the PUT must carry (a Bearer token, for
            Prosody's mod_http_file_share).

The spec is a JSON list on stdin: [{"name": ..., "type": ..., "path": local file or null,
"size": n}]. Everything is bounded by --timeout, so a hung server fails the test instead of
hanging it.
"""

import argparse
import asyncio
import hashlib
import json
import sys

import aiohttp
import slixmpp
from slixmpp.exceptions import IqError


class Account(slixmpp.ClientXMPP):
    """A plain-TCP client that registers itself first (the servers here have no certificates)."""

    def __init__(self, jid, password):
        super().__init__(jid, password)
        self.enable_starttls = False
        self.enable_direct_tls = False
        self.enable_plaintext = True
        # No TLS on loopback: allow SCRAM over the plain stream.
        self.plugin["feature_mechanisms"].unencrypted_scram = True
        for plugin in ("xep_0030", "xep_0066", "xep_0077", "xep_0363"):
            self.register_plugin(plugin)
        self.plugin["xep_0077"].force_registration = True
        self.ready = asyncio.get_event_loop().create_future()
        self.inbox = asyncio.Queue()
        self.add_event_handler("register", self.on_register)
        self.add_event_handler("session_start", self.on_session_start)
        self.add_event_handler("failed_auth", self.on_failed_auth)
        self.add_event_handler("no_auth", self.on_failed_auth)
        self.add_event_handler("message", self.on_message)

    async def on_register(self, _form):
        iq = self.make_iq_set()
        iq["register"]["username"] = self.boundjid.user
        iq["register"]["password"] = self.password
        try:
            await iq.send(timeout=10)
        except IqError as e:
            # A second run against the same data directory finds the account already there.
            if e.iq["error"]["condition"] != "conflict":
                self.fail(f"registration of {self.boundjid.bare} refused: {e.iq['error']['condition']}")

    async def on_session_start(self, _event):
        self.send_presence()
        await self.get_roster()
        if not self.ready.done():
            self.ready.set_result(True)

    def on_failed_auth(self, _event):
        self.fail(f"authentication of {self.boundjid.bare} failed")

    def on_message(self, msg):
        if msg["type"] in ("chat", "normal"):
            self.inbox.put_nowait(msg)

    def fail(self, why):
        if not self.ready.done():
            self.ready.set_exception(RuntimeError(why))


async def login(args, user):
    account = Account(f"{user}@{args.domain}", args.password)
    account.connect(args.host, args.port)
    await asyncio.wait_for(account.ready, args.timeout)
    return account


async def download(url):
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as r:
            body = await r.read()
            return {
                "status": r.status,
                "sha256": hashlib.sha256(body).hexdigest(),
                "size": len(body),
                "content_type": r.headers.get("Content-Type"),
                "disposition": r.headers.get("Content-Disposition"),
            }


async def exchange(args, spec):
    alice = await login(args, "alice")
    bob = await login(args, "bob")
    results = []
    for item in spec:
        with open(item["path"], "rb") as f:
            get_url = await alice.plugin["xep_0363"].upload_file(
                item["name"], size=item["size"], content_type=item["type"], input_file=f, timeout=args.timeout
            )
        msg = alice.make_message(mto=bob.boundjid.bare, mbody=get_url, mtype="chat")
        msg["oob"]["url"] = get_url
        msg.send()
        received = await asyncio.wait_for(bob.inbox.get(), args.timeout)
        url = received["oob"]["url"] or received["body"]
        got = await download(url)
        got.update(name=item["name"], get_url=get_url, received_url=url)
        results.append(got)
    for a in (alice, bob):
        a.disconnect()
    return {"service": str(alice.plugin["xep_0363"].upload_service), "results": results}


async def slots(args, spec):
    alice = await login(args, "alice")
    service = await alice.plugin["xep_0363"].find_upload_service(timeout=args.timeout)
    if service is None:
        raise RuntimeError("no upload service found")
    out = []
    for item in spec:
        iq = await alice.plugin["xep_0363"].request_slot(
            service["from"], item["name"], item["size"], item["type"], timeout=args.timeout
        )
        slot = iq["http_upload_slot"]
        headers = {h["name"]: h["value"] for h in slot["put"]["headers"]}
        out.append({"name": item["name"], "put": slot["put"]["url"], "get": slot["get"]["url"], "headers": headers})
    alice.disconnect()
    return {"service": str(service["from"]), "slots": out}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["exchange", "slots"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--domain", default="localhost")
    p.add_argument("--password", default="interop-pass")
    p.add_argument("--timeout", type=float, default=30)
    args = p.parse_args()
    spec = json.load(sys.stdin)
    run = exchange if args.mode == "exchange" else slots
    result = asyncio.run(asyncio.wait_for(run(args, spec), args.timeout * 4))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
