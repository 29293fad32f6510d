#!/usr/bin/python3
"""tools/smtp_sink.py — the local stack's SMTP sink (SPEC §9, `make run`).

Listens on 127.0.0.1 on a free port picked by the kernel (or --port), and
writes every message it receives, as received, to DIR/<time>-<n>.eml (a
newcomer finds the verification and reset links there). The port goes to
--port-file once listening. Accepts any sender and recipient; no AUTH, no TLS
(loopback only). Stops on SIGTERM/SIGINT.

    /usr/bin/python3 tools/smtp_sink.py --dir var/mail --port-file var/run/smtp.port
"""
import argparse
import asyncio
import itertools
import os
import signal
import time

from aiosmtpd.smtp import SMTP


class Sink:
    def __init__(self, directory):
        self.dir = directory
        self.seq = itertools.count(1)

    async def handle_DATA(self, server, session, envelope):
        name = "%s-%06d.eml" % (time.strftime("%Y%m%dT%H%M%S"), next(self.seq))
        tmp = os.path.join(self.dir, "." + name)
        with open(tmp, "wb") as f:
            f.write(b"X-Envelope-From: %s\r\n" % envelope.mail_from.encode())
            f.write(b"X-Envelope-To: %s\r\n" % ", ".join(envelope.rcpt_tos).encode())
            data = envelope.original_content or envelope.content
            f.write(data if isinstance(data, bytes) else data.encode())
        os.rename(tmp, os.path.join(self.dir, name))  # readers never see half a file
        return "250 OK"


async def main(args):
    os.makedirs(args.dir, exist_ok=True)
    handler = Sink(args.dir)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="localhost", data_size_limit=1 << 20),
        host="127.0.0.1", port=args.port)
    port = server.sockets[0].getsockname()[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.rename(tmp, args.port_file)
    print("smtp sink on 127.0.0.1:%d writing to %s" % (port, args.dir), flush=True)
    stop = loop.create_future()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, lambda: stop.done() or stop.set_result(None))
    await stop
    server.close()
    await server.wait_closed()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    asyncio.run(main(ap.parse_args()))
