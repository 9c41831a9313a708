#!/usr/bin/env python3
"""A real SMTP server for the tests: aiosmtpd, the maintained asyncio SMTP server.

    smtp_server.py --port PORT --out DIR [--tls-dir DIR] [--reject]

Each accepted message is written to DIR/<n>.eml (raw RFC 5322 bytes) with its
envelope in DIR/<n>.json. With --tls-dir, a test CA is created there (ca.pem)
with trustme and STARTTLS is required before MAIL. With --reject, every
recipient is refused with a 550. Prints "READY" once listening.
"""
import argparse
import email
import email.policy
import json
import os
import ssl
import sys
import time

from aiosmtpd.controller import Controller


class Handler:
    def __init__(self, out, reject):
        self.out = out
        self.reject = reject
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.reject:
            return "550 5.1.1 <%s>: Recipient address rejected: User unknown in virtual mailbox table" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        base = os.path.join(self.out, "%d" % self.count)
        # Parsed with Python's email package, so the test checks what a mail
        # client would show, not our own idea of MIME.
        msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        plain = msg.get_body(preferencelist=("plain",))
        html = msg.get_body(preferencelist=("html",))
        with open(base + ".json.tmp", "w") as f:
            json.dump({
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
                "tls": session.ssl is not None,
                "from": str(msg["From"]),
                "to": str(msg["To"]),
                "subject": str(msg["Subject"]),
                "message_id": str(msg["Message-ID"] or ""),
                "content_type": msg.get_content_type(),
                "text": plain.get_content() if plain is not None else None,
                "html": html.get_content() if html is not None else None,
            }, f)
        with open(base + ".eml", "wb") as f:
            f.write(envelope.original_content)
        # The .json appears last: a test that sees it sees the whole message.
        os.rename(base + ".json.tmp", base + ".json")
        return "250 2.0.0 Ok: queued"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--tls-dir")
    p.add_argument("--reject", action="store_true")
    p.add_argument("--auth", help="USER:PASSWORD required by AUTH")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)

    kwargs = {}
    if args.tls_dir:
        import trustme
        ca = trustme.CA()
        ca.cert_pem.write_to_path(os.path.join(args.tls_dir, "ca.pem"))
        cert = ca.issue_cert("localhost", "127.0.0.1")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        kwargs = {"tls_context": ctx, "require_starttls": True}

    if args.auth:
        from aiosmtpd.smtp import AuthResult
        user, password = args.auth.split(":", 1)

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = auth_data.login.decode() == user and auth_data.password.decode() == password
            return AuthResult(success=ok)

        kwargs.update(authenticator=authenticator, auth_require_tls=False, auth_required=True)

    controller = Controller(Handler(args.out, args.reject), hostname="127.0.0.1",
                            port=args.port, **kwargs)
    controller.start()
    print("READY", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    sys.exit(main())
