"""``fedgate inference --models DIR [--config FILE]``: serve a model repository.

Serves the Open Inference Protocol v2 (``/v2``) and the study-level analysis API
(``/v1/analyses``) on ``listen.host``/``listen.port`` of the settings (see
:mod:`inference_service.settings`). Exits 2 with a message naming the model and field when the
repository or the configuration is broken.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import uvicorn

from inference_service.app import create_app
from inference_service.backends.local import ProviderUnavailableError
from inference_service.repository import ModelRepository, RepositoryError
from inference_service.settings import ConfigError, load_settings
from observability import configure_logging
from tlsconfig import uvicorn_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", type=Path, help="model repository folder (default: models)")
    parser.add_argument("--config", type=Path, help="YAML settings file")
    parser.add_argument(
        "--skip-bad-models",
        action="store_true",
        default=None,
        help="serve the good models when some are broken (default: refuse to start)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(
            args.config, models_dir=args.models, skip_bad_models=args.skip_bad_models
        )
        configure_logging(settings.log.level, settings.log.json_output)
        repository = ModelRepository.load(settings)
    except (ConfigError, RepositoryError, ProviderUnavailableError) as error:
        print(f"fedgate inference: {error}", file=sys.stderr)
        return 2
    app = create_app(settings, repository)
    uvicorn.run(
        app,
        host=settings.listen.host,
        port=settings.listen.port,
        log_level=settings.log.level,
        access_log=False,
        **uvicorn_options(settings.listen.tls),
    )
    return 0
