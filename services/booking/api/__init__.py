"""The booking service's JSON API. Each module registers its endpoints on `API`; `install_api`
imports them all, adds the routes and serves the OpenAPI document generated from them."""

from __future__ import annotations

from services.booking.api.errors import api_error
from services.booking.api.framework import Api

API = Api(api_error)
