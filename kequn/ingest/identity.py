"""Identity merge: one customer per person across sources.

A source record (``source``, ``source_id``) joins an existing customer when
1. it was seen before (the identities table),
2. its id equals an existing ``customer_id``,
3. it shares a normalised e-mail or phone with an existing customer, or with another new
   record of the same import (records linked through any chain of shared e-mails and
   phones are one person: connected components of the record–key graph).
Otherwise it becomes a new customer whose id is the source id.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def resolve(engine, source: str) -> None:
    """Fill temp table ``_resolved(source_id, customer_id, matched_on, is_new)``.

    Reads temp table ``_incoming(source_id, email_norm, phone_norm)`` (one row per
    source id) and the store's ``identities`` and ``customers`` tables.
    """
    src = source.replace("'", "''")
    engine.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _resolved AS
        SELECT i.source_id, coalesce(d.customer_id, c.customer_id) AS customer_id,
               CASE WHEN d.customer_id IS NOT NULL THEN 'id' ELSE 'customer_id' END
                   AS matched_on,
               false AS is_new
        FROM _incoming i
        LEFT JOIN identities d ON d.source = '{src}' AND d.source_id = i.source_id
        LEFT JOIN customers c ON c.customer_id = i.source_id
        WHERE d.customer_id IS NOT NULL OR c.customer_id IS NOT NULL
        """
    )
    unknown = engine.execute(
        """
        SELECT source_id, email_norm, phone_norm FROM _incoming
        WHERE source_id NOT IN (SELECT source_id FROM _resolved)
        """
    ).df()
    if unknown.empty:
        return
    has_keys = unknown["email_norm"].notna() | unknown["phone_norm"].notna()
    linked = pd.DataFrame(columns=["customer_id", "email_norm", "phone_norm"])
    if has_keys.any():
        engine.register("_unknown_keys", unknown[has_keys])
        linked = engine.execute(
            """
            SELECT DISTINCT customer_id, email_norm, phone_norm FROM identities
            WHERE email_norm IN (SELECT email_norm FROM _unknown_keys)
               OR phone_norm IN (SELECT phone_norm FROM _unknown_keys)
            """
        ).df()
        engine.unregister("_unknown_keys")
    result = _components(unknown, linked)
    engine.register("_new_links", result)
    engine.execute("INSERT INTO _resolved SELECT * FROM _new_links")
    engine.unregister("_new_links")


def _components(unknown: pd.DataFrame, linked: pd.DataFrame) -> pd.DataFrame:
    """Group records and known customers that share keys; name each group's customer."""
    n_rec, n_old = len(unknown), len(linked)
    emails = pd.concat([unknown["email_norm"], linked["email_norm"]], ignore_index=True)
    phones = pd.concat([unknown["phone_norm"], linked["phone_norm"]], ignore_index=True)
    email_code, _ = pd.factorize(emails)
    phone_code, _ = pd.factorize(phones)
    n_nodes = n_rec + n_old
    n_email = int(email_code.max(initial=-1)) + 1
    n_phone = int(phone_code.max(initial=-1)) + 1
    node = np.arange(n_nodes)
    has_e, has_p = email_code >= 0, phone_code >= 0
    rows = np.concatenate([node[has_e], node[has_p]])
    cols = np.concatenate([n_nodes + email_code[has_e], n_nodes + n_email + phone_code[has_p]])
    size = n_nodes + n_email + n_phone
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(size, size))
    _, label = connected_components(graph, directed=False)
    rec_label, old_label = label[:n_rec], label[n_rec:n_nodes]

    # A group with a known customer joins it (the smallest id if the group bridges
    # several); otherwise its smallest source id becomes the new customer id.
    old = pd.DataFrame({"label": old_label, "customer_id": linked["customer_id"].to_numpy()})
    known = old.groupby("label")["customer_id"].min()
    rec = pd.DataFrame({"label": rec_label, "source_id": unknown["source_id"].to_numpy()})
    fresh = rec.groupby("label")["source_id"].min()
    customer = rec["label"].map(known).to_numpy(dtype=object)
    is_new = pd.isna(customer)
    customer[is_new] = rec["label"].map(fresh).to_numpy(dtype=object)[is_new]

    old_emails = set(linked["email_norm"].dropna())
    matched = np.where(
        ~is_new,
        np.where(unknown["email_norm"].isin(old_emails).to_numpy(), "email", "phone"),
        "new",
    )
    # Within a new group, a record joined by e-mail when another record shares its e-mail.
    group_size = rec.groupby("label")["source_id"].transform("size").to_numpy()
    email_shared = (
        pd.DataFrame({"label": rec_label, "email": unknown["email_norm"].to_numpy()})
        .groupby(["label", "email"], dropna=False)["label"]
        .transform("size")
        .to_numpy()
        > 1
    ) & unknown["email_norm"].notna().to_numpy()
    within = is_new & (group_size > 1) & (rec["source_id"].to_numpy() != customer)
    matched = np.where(within, np.where(email_shared, "email", "phone"), matched)
    return pd.DataFrame(
        {
            "source_id": unknown["source_id"].to_numpy(),
            "customer_id": customer.astype(str),
            "matched_on": matched,
            "is_new": is_new & (rec["source_id"].to_numpy() == customer),
        }
    )
