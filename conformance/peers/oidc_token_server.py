"""A local OAuth 2.0 token endpoint (client-credentials grant) for the vtp-kafka tests.

Usage: oidc_token_server.py CLIENT_ID CLIENT_SECRET [EXPIRES_IN]

Listens on 127.0.0.1, on a port the system picks, and prints "port N" once it listens.
POST /oauth2/token with HTTP Basic CLIENT_ID:CLIENT_SECRET and the form body
grant_type=client_credentials answers {"access_token": "token-K", "token_type": "Bearer",
"expires_in": EXPIRES_IN} (K counts the tokens issued, from 1) and prints "issued token-K";
wrong credentials get 401 {"error": "invalid_client"}, another grant 400
{"error": "unsupported_grant_type"}.
"""
import base64
import json
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer

CLIENT_ID, CLIENT_SECRET = sys.argv[1], sys.argv[2]
EXPIRES_IN = int(sys.argv[3]) if len(sys.argv) > 3 else 3600
issued = 0


class Handler(BaseHTTPRequestHandler):
    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        global issued
        if self.path != "/oauth2/token":
            return self.answer(404, {"error": "not_found"})
        length = int(self.headers.get("Content-Length", "0"))
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        auth = self.headers.get("Authorization", "")
        want = "Basic " + base64.b64encode(
            f"{urllib.parse.quote_plus(CLIENT_ID)}:{urllib.parse.quote_plus(CLIENT_SECRET)}"
            .encode()).decode()
        if auth != want:
            print("refused: bad client credentials", flush=True)
            return self.answer(401, {"error": "invalid_client"})
        if form.get("grant_type") != ["client_credentials"]:
            return self.answer(400, {"error": "unsupported_grant_type"})
        issued += 1
        token = f"token-{issued}"
        print(f"issued {token} scope={form.get('scope', [''])[0]}", flush=True)
        self.answer(200, {"access_token": token, "token_type": "Bearer",
                          "expires_in": EXPIRES_IN})

    def log_message(self, *args):
        pass


def main():
    server = HTTPServer(("127.0.0.1", 0), Handler)
    print(f"port {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
