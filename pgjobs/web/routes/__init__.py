"""Route tables: the JSON API (api.py) and its OpenAPI document (openapi.py)."""
