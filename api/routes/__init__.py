"""The API's routers, one module per resource."""

from api.problems import problem_responses

#: For operations that take a JSON body: FastAPI answers 400 ("There was an error parsing the
#: body") when the body cannot even be decoded (not UTF-8), before any validation, and a body
#: over ``MODELREG_MAX_JSON_BODY_BYTES`` gets 413 (api/limits.py).
BAD_BODY = problem_responses(400, 413)
