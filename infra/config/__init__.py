"""The stack's configuration: one typed object, read once from `pulumi.Config`.

Every setting is a `deepcloud:<camelCaseKey>` entry in `Pulumi.<stack>.yaml` (see Pulumi.dev.yaml.example),
except the region, which is the AWS provider's own `aws:region`. Values arrive as strings; they are parsed and
checked here, and every error names the config key and what it accepts, so a typo stops `pulumi preview` with one
line instead of failing half-way through `pulumi up`.

    keys.py          the namespace, field name -> config key, ConfigError
    limits.py        the values AWS accepts and our own limits
    settings.py      Settings: the fields, their defaults and docs, and the values derived from them
    checks.py        what the settings must satisfy, in a fixed order
    stack_config.py  StackConfig: Settings that passed the checks
    parsing.py       KEYS, parse (strings -> StackConfig) and load (from the Pulumi engine)
"""

from infra.config.keys import NAMESPACE, ConfigError, config_key
from infra.config.limits import (
    ENDPOINT_MODES,
    GPU_AMI_PARAMETER,
    GREEN_FLEET_ALLOWANCE_S,
    MODEL_CACHE_SETTINGS,
    NAME_LENGTH,
    NETWORK_PROFILES,
    PROVIDER_ENDPOINT_WAIT_S,
    RETENTION_DAYS,
    ROLLOUTS,
    SERVERLESS_MAX_CONCURRENCY,
    SERVERLESS_MEMORY_MB,
    SPOT_ALLOCATION_STRATEGIES,
    VOLUME_TYPES,
)
from infra.config.parsing import KEYS, load, parse, parse_value
from infra.config.settings import Settings
from infra.config.stack_config import StackConfig

__all__ = [
    "ENDPOINT_MODES",
    "GPU_AMI_PARAMETER",
    "GREEN_FLEET_ALLOWANCE_S",
    "KEYS",
    "MODEL_CACHE_SETTINGS",
    "NAMESPACE",
    "NAME_LENGTH",
    "NETWORK_PROFILES",
    "PROVIDER_ENDPOINT_WAIT_S",
    "RETENTION_DAYS",
    "ROLLOUTS",
    "SERVERLESS_MAX_CONCURRENCY",
    "SERVERLESS_MEMORY_MB",
    "SPOT_ALLOCATION_STRATEGIES",
    "VOLUME_TYPES",
    "ConfigError",
    "Settings",
    "StackConfig",
    "config_key",
    "load",
    "parse",
    "parse_value",
]
