"""The fault tier shares the production stack's fixtures (a module-scoped stack over a module's projects)."""

from tests.integration.production.conftest import (  # noqa: F401  fixtures, found by pytest under their names
    platform_s3,
    production,
    production_client,
    production_env,
    production_projects,
)
