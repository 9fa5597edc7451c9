"""fedgate: the command line that starts the gateway, the inference service and their tools.

This package is the only place that knows both services (DESIGN.md, "Who may import whom");
the services themselves never import it.
"""

__version__ = "0.1.0"
