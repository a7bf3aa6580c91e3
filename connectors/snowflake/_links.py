"""The Snowflake console's query-history page of a query, for the log link on every GetTask.

flytekit's plugin builds ``app.snowflake.com/<region>/<account>`` from ``org-account`` and so
swaps the organisation for a region: every link it makes for an org-account identifier is wrong.
Snowsight's URLs are ``/<org>/<account name>/`` for ``orgname-accountname`` identifiers and
``/<region>/<locator>/`` for legacy locators (``xy12345.us-east-2.aws``; a bare locator is in
AWS us-west-2).
"""

from __future__ import annotations

import urllib.parse

from connectors.snowflake.settings import normalize_account

__all__ = ["query_url"]

_DEFAULT_REGION = "us-west-2"


def query_url(console_url: str, account: str, query_id: str) -> str:
    """The query's detail page, or "" when the operator turned links off (no console URL)."""
    if not console_url or not query_id:
        return ""
    ident = normalize_account(account)
    if "." in ident:  # locator.region[.cloud]
        locator, region = ident.split(".", 1)
        first, second = region, locator
    elif "-" in ident:  # orgname-accountname (organisation names have no '-')
        first, second = ident.split("-", 1)
    else:
        first, second = _DEFAULT_REGION, ident
    quote = urllib.parse.quote
    base = console_url.rstrip("/")
    return f"{base}/{quote(first)}/{quote(second)}/#/compute/history/queries/{quote(query_id)}/detail"
