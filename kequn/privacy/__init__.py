"""Privacy and compliance (PIPL, GDPR): field classes, consent, erasure, access requests.

* :mod:`~kequn.privacy.classes` — public / personal / sensitive fields, per workspace;
* :mod:`~kequn.privacy.consent` — opt-in / opt-out per customer and channel;
* :mod:`~kequn.privacy.forget` — the right to be forgotten, with tombstones for imports;
* :mod:`~kequn.privacy.person` — a person's data as one JSON document (access requests).

See docs/privacy.md.
"""

from __future__ import annotations

from kequn.privacy.classes import (
    CLASSES,
    check_rule_grants,
    default_class,
    field_classes,
    infer_class,
)
from kequn.privacy.consent import (
    allowed_customers,
    consents_of,
    import_consents,
    record_consents,
)
from kequn.privacy.forget import Erasure, forget
from kequn.privacy.person import export_person, person_data

__all__ = [
    "CLASSES",
    "Erasure",
    "allowed_customers",
    "check_rule_grants",
    "consents_of",
    "default_class",
    "export_person",
    "field_classes",
    "forget",
    "import_consents",
    "infer_class",
    "person_data",
    "record_consents",
]
