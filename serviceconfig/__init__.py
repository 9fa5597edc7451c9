"""What the services' settings have in common: a YAML file under the environment, errors that
name the key, and the credentials a service presents to a peer over HTTP.

A library like ``tlsconfig``: it imports none of the services, so the gateway, the inference
service and the hub (which may not import one another) read their settings the same way and
say what is wrong with them in the same words.
"""

from serviceconfig.credentials import BasicAuth, BearerAuth, PeerAuth
from serviceconfig.files import (
    ConfigError,
    EnvironmentFirst,
    describe_validation_error,
    read_settings_file,
)

__all__ = [
    "BasicAuth",
    "BearerAuth",
    "ConfigError",
    "EnvironmentFirst",
    "PeerAuth",
    "describe_validation_error",
    "read_settings_file",
]
