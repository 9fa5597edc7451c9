"""The cohort dashboard at ``/ui``: static ES-module pages, served by a site and by the hub.

A library like ``sr_writer``: it knows neither the gateway nor the hub. The pages speak only the
public HTTP APIs (``/federated/v1``, ``/jobs``) with the caller's own token, so what the
dashboard can show is exactly what the API would answer that person (docs/dashboard.md).
"""

from dashboard.oidc import OidcLogin
from dashboard.routes import (
    VENDOR_DIR,
    VENDOR_FILES,
    DashboardKind,
    dashboard_routes,
    missing_vendor_files,
)

__all__ = [
    "VENDOR_DIR",
    "VENDOR_FILES",
    "DashboardKind",
    "OidcLogin",
    "dashboard_routes",
    "missing_vendor_files",
]
