#!/usr/bin/env python3
"""A small HTTPS server for the TCP and HTTP probes' end-to-end tests: answers every GET with
200 and "ok".

    https_server.py ADDRESS PORT CERT.pem KEY.pem
"""
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, ctx):
        super().__init__(address, Handler)
        self.ctx = ctx

    # The handshake in the connection's own thread: the TCP probe's plain connects close
    # without one, and must not hold up the others.
    def finish_request(self, request, client_address):
        try:
            request = self.ctx.wrap_socket(request, server_side=True)
        except OSError:
            return
        super().finish_request(request, client_address)


def main(argv):
    address, port, cert, key = argv
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    Server((address, int(port)), ctx).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
