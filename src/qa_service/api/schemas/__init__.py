"""What each surface's routes declare to /openapi.json: the schema models, response
objects and parameters they name in `responses=` and `openapi_extra=`. One module
per surface (native, openai, ai_sdk), and models.py for what they share."""
