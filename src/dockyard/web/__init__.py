"""The dashboard: server-rendered pages (Jinja2, htmx, a little plain JavaScript) on the API's own origin.

Pages call the same services as the API routes, with the logged-in user's Actor from the session cookie;
every front-end asset is vendored under `static/vendor` so nothing is fetched from a CDN.
"""
