"""Fires one refresh token at several token endpoints at the same moment.

    python3 race.py CLIENT_ID REFRESH_TOKEN TOKEN_URL:COUNT [TOKEN_URL:COUNT ...]

Starts COUNT threads per token endpoint, holds them all on one barrier, then lets every thread
POST `grant_type=refresh_token` at once (a fresh connection each). Prints one JSON object per
request, in completion order: {"instance": TOKEN_URL, "status": ..., "elapsed_ms": ...,
"error": ..., "access_token": ..., "refresh_token": ...}. Exit 0 whatever the server answered;
the caller judges.
"""

import json
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request


def main() -> int:
    client_id, refresh_token = sys.argv[1:3]
    targets = []
    for spec in sys.argv[3:]:
        url, _, count = spec.rpartition(":")
        targets += [url] * int(count)
    body = urllib.parse.urlencode(
        {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id}
    ).encode()
    barrier = threading.Barrier(len(targets))
    lock = threading.Lock()
    results = []

    def fire(url: str) -> None:
        request = urllib.request.Request(url, data=body, method="POST")
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
        barrier.wait()
        start = time.monotonic()
        try:
            response = urllib.request.urlopen(request, timeout=30)
        except urllib.error.HTTPError as e:
            response = e
        except Exception as e:  # connection reset, timeout: recorded as status 0
            with lock:
                results.append({"instance": url, "status": 0, "error": repr(e)})
            return
        text = response.read().decode(errors="replace")
        elapsed = round((time.monotonic() - start) * 1000)
        try:
            payload = json.loads(text)
        except ValueError:
            payload = {"error": "non-JSON body", "body": text[:300]}
        with lock:
            results.append(
                {
                    "instance": url,
                    "status": response.status,
                    "elapsed_ms": elapsed,
                    "error": payload.get("error"),
                    "error_description": payload.get("error_description"),
                    "access_token": payload.get("access_token"),
                    "refresh_token": payload.get("refresh_token"),
                }
            )

    threads = [threading.Thread(target=fire, args=(url,)) for url in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
