"""EHR database connectors: read-only, incremental readers of an EHR's own database.

:mod:`.profile` loads the TOML profiles (built-in ``openemr`` and ``opendental``),
:mod:`.source` connects and reads changes, :mod:`.build` turns rows into canonical encounters.
The engine side (cursor + rows committed together, voids, scheduling) is ``agent.dbpoll``.
"""

from connectors.ehr.db.profile import Profile, builtin_names, load_profile
from connectors.ehr.db.source import CheckResult, DbError, DbSource, Fetched, safe_url

__all__ = ["CheckResult", "DbError", "DbSource", "Fetched", "Profile", "builtin_names", "load_profile",
           "safe_url"]
