"""`lumen serve`: the library over HTTP, for phones, scripts and other apps.

Every endpoint calls the same `Library` facade the window and the CLI use (no second
search or catalog path). Safe by default:

- binds to loopback; any other address needs a bearer token (`lumen serve --new-token`
  shows it once and stores only its SHA-256 in the data dir), compared in constant time;
- on loopback the Host header must name loopback too (a web page cannot reach the API
  through DNS rebinding);
- no CORS unless origins are given; errors are JSON `{"detail": ...}`, never a traceback;
- every request is bounded: query length, k, body and upload size, image pixels, time.

Sync endpoints run in the server's thread pool, so searches run in parallel with each
other and with indexing (the Library gives each thread its own read connection and sends
every write to its one writer thread). A read-only server (`--read-only`, or another Lumen
holds the writer lock) answers writes with 403 / 409.
"""

from desktop.server.app import WEB, IndexRunner, ServeOptions, ServerConfig, create_app, serve
from desktop.server.security import is_loopback, new_token, stored_token_hash, token_matches, token_path

__all__ = [
    "WEB", "IndexRunner", "ServeOptions", "ServerConfig", "create_app", "is_loopback", "new_token", "serve",
    "stored_token_hash", "token_matches", "token_path",
]
