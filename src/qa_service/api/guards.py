"""The checks that run before a route that may start a paid answer, in list order.

FastAPI runs a route's `dependencies` one after another, in order, before the
route itself. The key check comes after the cross-site check and sets
`request.state.client_key_id` (api/auth.py). Per-client limits run after
all of them, inside the route (api/opening.py open_answer), once the request
is known to be valid and new.
"""

from __future__ import annotations

from fastapi import Depends

from qa_service.api.auth import require_key, require_key_or_ticket
from qa_service.api.deps import refuse_pages_of_other_sites

# GET, HEAD and POST /ai_write.
STARTS_ANSWERS = [Depends(refuse_pages_of_other_sites), Depends(require_key_or_ticket)]
# POST /stream-tickets: a ticket is an answer paid for in advance.
ISSUES_TICKETS = [Depends(refuse_pages_of_other_sites), Depends(require_key)]
# The other dialects' answer routes (/v1/chat/completions, /api/chat): a key,
# always. They take no ticket, and a Last-Event-ID means nothing to them.
STARTS_DIALECT_ANSWERS = ISSUES_TICKETS
