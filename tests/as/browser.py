"""Plays the user on mcpgate's login and consent pages, headless, with the standard library.

    python3 browser.py AUTHORIZATION_URL USER PASSWORD [approve|deny]

GETs the authorization URL, signs in on the login form, approves (or denies) on the consent form,
and prints the URL the server finally redirects to (the client's redirect URI with code or error).
The redirect itself is not followed. Exit 1 (with the page on stderr) when the server shows anything
else. Cookies are kept by hand: the session cookie is `__Host-`/Secure and this is plain http.
"""

import re
import sys
import urllib.error
import urllib.parse
import urllib.request


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


opener = urllib.request.build_opener(NoRedirect)
cookies: dict[str, str] = {}


def hop(url: str, form: dict | None = None):
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    request = urllib.request.Request(url, data=data)
    if cookies:
        request.add_header("Cookie", "; ".join(f"{k}={v}" for k, v in cookies.items()))
    try:
        response = opener.open(request, timeout=15)
    except urllib.error.HTTPError as e:  # 3xx (not followed) and 4xx/5xx
        response = e
    for c in response.headers.get_all("Set-Cookie") or []:
        k, _, v = c.split(";")[0].partition("=")
        cookies[k.strip()] = v
    return response.status, response.headers, response.read().decode(errors="replace")


def main() -> int:
    url, user, password = sys.argv[1:4]
    decision = sys.argv[4] if len(sys.argv) > 4 else "approve"
    status, headers, html = hop(url)
    for _ in range(4):
        if status in (302, 303):
            print(headers["Location"])
            return 0
        if status != 200:
            print(f"browser.py: HTTP {status}: {html[:500]}", file=sys.stderr)
            return 1
        action = re.search(r'<form method="post" action="([^"]+)"', html)
        fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', html))
        if action is None:
            print(f"browser.py: no form: {html[:500]}", file=sys.stderr)
            return 1
        if action.group(1) == "/authorize/login":
            fields |= {"username": user, "password": password}
        elif action.group(1) == "/authorize/consent":
            fields["decision"] = decision
        print(f"browser.py: {action.group(1)}", file=sys.stderr)
        status, headers, html = hop(urllib.parse.urljoin(url, action.group(1)), fields)
    print("browser.py: no redirect", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
