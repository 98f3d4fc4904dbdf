"""The shared kernel: what every layer may import and what imports none of them.

The canonical model (:mod:`core.model`), states and kinds as enums (:mod:`core.states`), the
home's paths (:mod:`core.paths`), user-facing errors with a title and a fix
(:mod:`core.errors`), secret names and the keyring (:mod:`core.secrets`), the local API's
request/response schemas (:mod:`core.schemas`) and its HTTP client (:mod:`core.client`).
Nothing here imports ``agent``, ``connectors`` or ``ui``; the import contracts in
``pyproject.toml`` say so and CI checks them.
"""

__version__ = "0.1.0"
