"""uvicorn's HTTP protocol, refusing requests it cannot parse in our JSON shape.

Some requests never reach the app: httptools keeps URL offsets as 16-bit
numbers, so a URL longer than 65,535 bytes fails inside the parser, and
uvicorn answers with a plain-text 400 ("Invalid HTTP request received.").
A browser's `EventSource` with a long question gets exactly that (issue 10).
This subclass writes the same refusal as the app would: a JSON error, 414 with
a pointer to POST for a long URL, 400 for anything else the parser rejects.
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from qa_service import errors

# httptools.parse_url stores offsets and lengths as uint16_t.
MAX_URL_BYTES = 65_535


class JsonErrorHttpToolsProtocol(HttpToolsProtocol):
    """`uvicorn.Config(http=...)`: httptools, with parser refusals as JSON errors."""

    def send_400_response(self, msg: str) -> None:
        public = (
            errors.URL_TOO_LONG
            if len(getattr(self, "url", b"")) > MAX_URL_BYTES
            else errors.UNPARSEABLE_REQUEST
        )
        body = json.dumps({"error": public.as_dict()}).encode()
        head = [STATUS_LINE[public.status]]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"x-content-type-options: nosniff\r\n",
                b"connection: close\r\n",
                b"\r\n",
            ]
        )
        self.transport.write(b"".join(head) + body)
        self.transport.close()
